"""Training curves from metrics.jsonl: the correct-pseudo-label ratio (paper Fig. 2) and val top-1 of F.

`correct_pl_x` is (#pseudo-labels for network x that passed the threshold AND are right) / B_u, logged by
the Task (docs/ARCHITECTURE.md section 4). For FixMatch only F exists; for CMPL `correct_pl_f` is the ratio
of the labels F is trained toward (produced by A under the cross scheme) and `correct_pl_a` the other way.
"""
from __future__ import annotations

import os
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .plots import plt, save_figure
from .runs import AnalysisError, Series, read_metrics, series

NETWORK_KEYS = {"F": "correct_pl_f", "A": "correct_pl_a"}


def method_name(run: str | os.PathLike) -> str:
    """`method.name` from RUN/config.toml, or "run" when the config is absent or has none."""
    path = Path(run) / "config.toml"
    if not path.is_file():
        return "run"
    try:
        config = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise AnalysisError(f"{path}: not TOML ({err})") from None
    return str(config.get("method", {}).get("name", "run"))


@dataclass(frozen=True)
class Curve:
    """A labelled mean curve over one or more runs: `mean`, `low`, `high` per step (min/max over runs)."""

    label: str
    steps: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    runs: int


def aggregate(label: str, parts: Sequence[Series]) -> Curve | None:
    """Mean and min/max band of several runs' series on the steps they all logged (None if no common step)."""
    parts = [p for p in parts if p.steps]
    if not parts:
        return None
    common = sorted(set(parts[0].steps).intersection(*(p.steps for p in parts[1:])))
    if not common:
        return None
    table = np.array([[dict(zip(p.steps, p.values))[s] for s in common] for p in parts])
    return Curve(label, np.array(common), table.mean(0), table.min(0), table.max(0), len(parts))


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over `window` points (shorter at the start), same length as `values`."""
    if window <= 1 or len(values) == 0:
        return values
    cumsum = np.cumsum(np.insert(values.astype(float), 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    start = np.maximum(idx - window, 0)
    return (cumsum[idx] - cumsum[start]) / (idx - start)


def pseudo_label_curves(runs: Sequence[str | os.PathLike], labels: Sequence[str] | None = None) -> list[Curve]:
    """One curve per (run, network that logged correct_pl); each run is its own curve.

    Raises AnalysisError if a path is not a run folder or no run logged any pseudo-label statistic.
    """
    curves = []
    for i, run in enumerate(runs):
        rows = read_metrics(run)
        name = labels[i] if labels else f"{Path(run).name} ({method_name(run)})"
        for net, key in NETWORK_KEYS.items():
            curve = aggregate(f"{name} {net}", [series(rows, "train", key)])
            if curve is not None:
                curves.append(curve)
    if not curves:
        raise AnalysisError(f"{', '.join(map(str, runs))}: no correct_pl_f/correct_pl_a rows in metrics.jsonl "
                            "(supervised runs have no pseudo-labels)")
    return curves


def tail_mean(curve: Curve, fraction: float = 0.1) -> float:
    """Mean of the curve over its last `fraction` of logged points (at least one point)."""
    n = max(1, int(round(len(curve.mean) * fraction)))
    return float(curve.mean[-n:].mean())


def plot_curves(curves: Sequence[Curve], out: str | os.PathLike, *, title: str, ylabel: str,
                percent: bool = False, window: int | None = None) -> Path:
    """Line plot of `curves` (smoothed mean, min/max band when several runs) saved as PNG at `out`."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    scale = 100.0 if percent else 1.0
    for curve in curves:
        w = window if window is not None else max(1, len(curve.mean) // 25)
        line, = ax.plot(curve.steps, smooth(curve.mean, w) * scale, marker="o" if len(curve.steps) <= 30 else None,
                        markersize=3, label=f"{curve.label}" + (f" (mean of {curve.runs})" if curve.runs > 1 else ""))
        if curve.runs > 1:
            ax.fill_between(curve.steps, smooth(curve.low, w) * scale, smooth(curve.high, w) * scale,
                            color=line.get_color(), alpha=0.15, linewidth=0)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, out)
