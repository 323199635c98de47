"""Read what `cmpl.train` and `cmpl.evaluate` leave in a run folder (docs/ARCHITECTURE.md section 5).

Only files are read here (metrics.jsonl, eval JSONs); nothing imports the trainer, so the analyses work on
any copied run folder, on a machine without the data.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cmpl.registry import ROLES


class AnalysisError(Exception):
    """A user-facing problem with an input (the message names the file); CLIs print it and exit 2."""


METRICS = "metrics.jsonl"
EVAL_FILES = {name: role.eval_file for name, role in ROLES.items()}


def require_run(path: str | os.PathLike) -> Path:
    """Return `path` as a Path if it is a run folder (has metrics.jsonl or config.toml), else raise."""
    run = Path(path)
    if not run.is_dir():
        raise AnalysisError(f"{run}: not a run folder (no such directory)")
    if not (run / METRICS).is_file() and not (run / "config.toml").is_file():
        raise AnalysisError(f"{run}: not a run folder (no {METRICS} or config.toml; expected cmpl.train output)")
    return run


def read_metrics(run: str | os.PathLike) -> list[dict]:
    """All rows of RUN/metrics.jsonl, in step order, one row per (kind, step).

    A resumed run re-logs the steps after its last checkpoint; the later row wins, since it belongs to
    the history that produced the final weights. A torn last line (run killed mid-write) is skipped;
    a bad line anywhere else is an error naming the file and line.
    """
    path = require_run(run) / METRICS
    if not path.is_file():
        raise AnalysisError(f"{path}: missing (the run has not logged anything yet)")
    lines = path.read_text().splitlines()
    rows: dict[tuple[str, int], dict] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            key = (str(row["kind"]), int(row["step"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            if number == len(lines):
                break
            raise AnalysisError(f"{path}:{number}: not a metrics row ({err})") from None
        rows.pop(key, None)
        rows[key] = row
    return sorted(rows.values(), key=lambda r: (int(r["step"]), str(r["kind"])))


@dataclass(frozen=True)
class Series:
    """One logged scalar over training: `steps[i]` -> `values[i]` (NaN-free)."""

    name: str
    steps: tuple[int, ...]
    values: tuple[float, ...]


def series(rows: Iterable[dict], kind: str, key: str) -> Series:
    """The finite values of `key` in rows of `kind` ("train" or "val"), by step; empty if never logged."""
    steps, values = [], []
    for row in rows:
        value = row.get(key)
        if row.get("kind") == kind and isinstance(value, (int, float)) and math.isfinite(value):
            steps.append(int(row["step"]))
            values.append(float(value))
    return Series(key, tuple(steps), tuple(values))


@dataclass(frozen=True)
class EvalResult:
    """An eval JSON: top-1/top-5 in percent and per-class top-1 in percent, in label order."""

    path: Path
    top1: float
    top5: float
    classes: tuple[str, ...]
    per_class: tuple[float, ...]
    num_videos: int | None
    views: tuple[int, int] | None = None  # (clips, crops) of the test protocol, when the JSON says
    step: int | None = None  # training step of the evaluated checkpoint, when the JSON says


def _class_value(item: object, path: Path, name: str) -> float:
    # per_class entries are a bare accuracy, None (no val video of that class: NaN, skipped by the
    # per-class analyses) or a small dict (top1 / accuracy plus counts).
    if item is None:
        return math.nan
    if isinstance(item, (int, float)):
        return float(item)
    if isinstance(item, dict):
        for key in ("top1", "accuracy", "acc"):
            if isinstance(item.get(key), (int, float)):
                return float(item[key])
    raise AnalysisError(f"{path}: per_class entry {name!r} has no accuracy")


def load_eval(path: str | os.PathLike) -> EvalResult:
    """Parse an eval JSON written by `cmpl.evaluate` into percent.

    `per_class` may be a mapping name -> accuracy (or -> {"top1": ...}; None for a class without val
    videos) or a list (index = label, names from `classes` if present). Accuracies are fractions, as
    cmpl.evaluate writes them, unless the JSON says `"units": "percent"`.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise AnalysisError(f"{path}: missing (run `python -m cmpl.evaluate` first)") from None
    except json.JSONDecodeError as err:
        raise AnalysisError(f"{path}: not JSON ({err})") from None
    if not isinstance(data, dict) or "top1" not in data or "per_class" not in data:
        raise AnalysisError(f"{path}: not an eval JSON (needs top1, top5, per_class)")
    raw = data["per_class"]
    if isinstance(raw, dict):
        names = tuple(str(k) for k in raw)
        values = [_class_value(v, path, k) for k, v in raw.items()]
    elif isinstance(raw, list):
        if raw and isinstance(raw[0], dict) and "name" in raw[0]:
            names = tuple(str(item["name"]) for item in raw)
        else:
            given = data.get("classes")
            names = tuple(str(n) for n in given) if isinstance(given, list) and len(given) == len(raw) \
                else tuple(f"class {i}" for i in range(len(raw)))
        values = [_class_value(v, path, n) for v, n in zip(raw, names)]
    else:
        raise AnalysisError(f"{path}: per_class must be a list or an object")
    units = data.get("units", "fraction")
    if units not in ("fraction", "percent"):
        raise AnalysisError(f"{path}: units must be fraction or percent, got {units!r}")
    scale = 100.0 if units == "fraction" else 1.0
    num, step = data.get("num_videos"), data.get("step")
    views = (int(data["clips"]), int(data["crops"])) if "clips" in data and "crops" in data else None
    return EvalResult(path, float(data["top1"]) * scale, float(data.get("top5", math.nan)) * scale, names,
                      tuple(v * scale for v in values), int(num) if num is not None else None, views,
                      int(step) if step is not None else None)


def eval_path(target: str | os.PathLike, network: str = "primary") -> Path:
    """Where the eval JSON of `target` lives: the file itself, or RUN/eval.json (F) / RUN/eval_aux.json (A)."""
    target = Path(target)
    if target.is_file() and target.suffix == ".json":
        return target
    if network not in EVAL_FILES:
        raise AnalysisError(f"--network must be one of {', '.join(EVAL_FILES)}, got {network!r}")
    return require_run(target) / EVAL_FILES[network]
