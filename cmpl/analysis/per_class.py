"""Per-class accuracy of two evaluated networks: the paper's Fig. 1 (sorted gap) and Fig. 7 (binned gain).

Fig. 1 sorts classes by Acc_A - Acc_B. Fig. 7 bins classes by a reference accuracy (the paper: the auxiliary
network's; here B's unless another eval is given) and plots the mean gain of A over B per bin, with a
least-squares line through the bin means.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .plots import plt, save_figure
from .runs import AnalysisError, EvalResult


@dataclass(frozen=True)
class ClassGap:
    name: str
    acc_a: float
    acc_b: float

    @property
    def gap(self) -> float:
        return self.acc_a - self.acc_b


def _check_same_classes(results: Sequence[EvalResult]) -> None:
    first = results[0]
    for other in results[1:]:
        if other.classes != first.classes:
            raise AnalysisError(f"{other.path}: its classes differ from {first.path} "
                                f"({len(other.classes)} vs {len(first.classes)} classes, or other names)")


def _mean_finite(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def mean_per_class(results: Sequence[EvalResult]) -> EvalResult:
    """Average several evals of the same classes (e.g. one per split seed) into one per-class result."""
    if not results:
        raise AnalysisError("no eval results to average")
    _check_same_classes(results)
    per_class = tuple(_mean_finite(col) for col in zip(*(r.per_class for r in results)))
    return EvalResult(results[0].path, float(np.mean([r.top1 for r in results])),
                      float(np.mean([r.top5 for r in results])), results[0].classes, per_class, None)


def class_gaps(a: EvalResult, b: EvalResult) -> list[ClassGap]:
    """Per-class (Acc_A, Acc_B), sorted by Acc_A - Acc_B ascending (ties by name), as Fig. 1.
    Classes without val videos (NaN accuracy) are left out."""
    _check_same_classes([a, b])
    gaps = [ClassGap(n, x, y) for n, x, y in zip(a.classes, a.per_class, b.per_class)
            if math.isfinite(x) and math.isfinite(y)]
    return sorted(gaps, key=lambda g: (g.gap, g.name))


@dataclass(frozen=True)
class Bin:
    low: float
    high: float
    count: int
    mean_gain: float


def binned_gain(gaps: Sequence[ClassGap], reference: Sequence[float], width: float) -> list[Bin]:
    """Mean gain (Acc_A - Acc_B) of the classes whose `reference` accuracy (percent, same order as `gaps`)
    falls in each bin [k*width, (k+1)*width); 100 falls in the last bin. Empty bins and classes with a
    NaN reference are omitted."""
    if width <= 0 or width > 100:
        raise AnalysisError(f"bin width must be in (0, 100] percent, got {width}")
    if len(reference) != len(gaps):
        raise AnalysisError("reference accuracies and class gaps differ in length")
    nbins = math.ceil(100.0 / width)
    members: dict[int, list[float]] = {}
    for gap, ref in zip(gaps, reference):
        if not math.isfinite(ref):
            continue
        k = min(int(ref // width), nbins - 1)
        members.setdefault(k, []).append(gap.gap)
    return [Bin(k * width, min((k + 1) * width, 100.0), len(v), float(np.mean(v)))
            for k, v in sorted(members.items())]


def fit_line(bins: Sequence[Bin]) -> tuple[float, float] | None:
    """Least-squares (slope, intercept) of mean gain against bin centre; None with fewer than 2 bins."""
    if len(bins) < 2:
        return None
    x = np.array([(b.low + b.high) / 2 for b in bins])
    y = np.array([b.mean_gain for b in bins])
    slope, intercept = np.polyfit(x, y, 1)
    return float(slope), float(intercept)


def plot_per_class(gaps: Sequence[ClassGap], bins: Sequence[Bin], out: str | os.PathLike, *,
                   label_a: str, label_b: str, label_ref: str) -> Path:
    """Two panels: sorted per-class gap bars (Fig. 1) and the binned mean gain with its LS line (Fig. 7)."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [2, 1]})
    values = [g.gap for g in gaps]
    ax1.bar(range(len(gaps)), values, color=["tab:orange" if v > 0 else "tab:blue" for v in values])
    if len(gaps) <= 40:
        ax1.set_xticks(range(len(gaps)), [g.name for g in gaps], rotation=75, fontsize=7)
    else:
        ax1.set_xlabel("classes, sorted by gap")
    ax1.axhline(0, color="black", linewidth=0.6)
    ax1.set_ylabel(f"Acc({label_a}) - Acc({label_b})  [points]")
    ax1.set_title(f"Per-class accuracy gap: {label_a} vs {label_b}")
    centres = [(b.low + b.high) / 2 for b in bins]
    ax2.scatter(centres, [b.mean_gain for b in bins], color="tab:red", zorder=3)
    line = fit_line(bins)
    if line is not None:
        xs = np.array([bins[0].low, bins[-1].high])
        ax2.plot(xs, line[0] * xs + line[1], color="tab:blue", label=f"LS fit, slope {line[0]:.2f}")
        ax2.legend(fontsize=8)
    ax2.axhline(0, color="black", linewidth=0.6)
    ax2.set_xlabel(f"Acc({label_ref}) bin [%]")
    ax2.set_ylabel(f"mean gain of {label_a} over {label_b} [points]")
    ax2.set_title("Binned gain (Fig. 7 style)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3, axis="y")
    return save_figure(fig, out)
