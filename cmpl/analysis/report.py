"""The demo's results: a Table-1-like summary over split seeds, its plots, and results/demo/README.md.

Every number comes from the run folders (eval JSONs, metrics.jsonl) and every comparison sentence is
computed from those numbers, so the README can never claim more than the runs show.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cmpl.registry import METHODS as REGISTRY

from .curves import aggregate, plot_curves, tail_mean
from .per_class import binned_gain, class_gaps, mean_per_class, plot_per_class
from .runs import EvalResult, read_metrics, series

METHODS = tuple(REGISTRY)  # table order: the baselines first
TITLES = {name: spec.title for name, spec in REGISTRY.items()}
NOTES_BEGIN, NOTES_END = "<!-- notes:begin -->", "<!-- notes:end -->"
NOTES_PLACEHOLDER = ("_Not investigated yet._ Whoever investigates the result writes the diagnosis here "
                     "(bug found, training too short, or too little temporal signal in the data), with "
                     "evidence. The demo keeps this section when it rewrites this file.")


@dataclass
class RunRecord:
    """One (method, split seed) run: where it is, its evals (F and, for CMPL, A) and its wall times."""

    method: str
    seed: int
    run_dir: Path
    eval_f: EvalResult | None = None
    eval_a: EvalResult | None = None
    train_s: float = 0.0
    eval_s: float = 0.0


@dataclass(frozen=True)
class Stat:
    """Mean and sample std (ddof=1; None for one value) of one metric over split seeds."""

    mean: float
    std: float | None
    values: tuple[float, ...]

    def __str__(self) -> str:
        return f"{self.mean:.1f} ± {self.std:.1f}" if self.std is not None else f"{self.mean:.1f}"


def stat(values: Sequence[float]) -> Stat:
    """Mean ± sample standard deviation of `values` (at least one)."""
    arr = np.asarray(values, dtype=float)
    std = float(arr.std(ddof=1)) if len(arr) > 1 else None
    return Stat(float(arr.mean()), std, tuple(float(v) for v in arr))


@dataclass
class MethodSummary:
    method: str
    top1: Stat
    top5: Stat
    seeds: tuple[int, ...]
    train_s: float
    aux_top1: Stat | None = None


def summarize(records: Sequence[RunRecord]) -> dict[str, MethodSummary]:
    """Per method with at least one evaluated run: top-1/top-5 of F over seeds (and A's top-1 for CMPL)."""
    out = {}
    for method in METHODS:
        done = [r for r in records if r.method == method and r.eval_f is not None]
        if not done:
            continue
        aux = [r.eval_a.top1 for r in done if r.eval_a is not None]
        out[method] = MethodSummary(
            method, stat([r.eval_f.top1 for r in done]), stat([r.eval_f.top5 for r in done]),
            tuple(r.seed for r in done), float(np.mean([r.train_s for r in done])),
            stat(aux) if aux else None)
    return out


def compare(a: MethodSummary, b: MethodSummary) -> tuple[str, str]:
    """(verdict, sentence) for top-1 of `a` against `b`. verdict: "higher" | "lower" | "tie" | "single".

    A difference counts only when it exceeds the combined split-to-split spread
    sqrt(std_a^2 + std_b^2); with one split there is no spread and the verdict is "single".
    """
    name_a, name_b = TITLES[a.method], TITLES[b.method]
    diff = a.top1.mean - b.top1.mean
    n = min(len(a.top1.values), len(b.top1.values))
    if a.top1.std is None or b.top1.std is None:
        relation = (f"{abs(diff):.1f} points higher than" if diff > 0 else
                    f"{abs(diff):.1f} points lower than" if diff < 0 else "equal to")
        return "single", (f"{name_a}'s top-1 is {relation} {name_b}'s on a single split "
                          f"({a.top1.mean:.1f} vs {b.top1.mean:.1f}); one split gives no spread, so this is "
                          f"not evidence either way.")
    spread = math.hypot(a.top1.std, b.top1.std)
    head = (f"{name_a} {a.top1} vs {name_b} {b.top1} top-1 (mean ± std over {n} splits): "
            f"difference {diff:+.1f} points, combined split-to-split spread {spread:.1f}.")
    if diff > spread:
        return "higher", f"{head} {name_a} is better than {name_b} here, by more than the spread."
    if diff < -spread:
        return "lower", f"{head} {name_a} is worse than {name_b} here, by more than the spread."
    return "tie", f"{head} The difference is within the spread: no clear difference between them here."


def _top1_curve(records: Sequence[RunRecord], method: str):
    parts = [series(read_metrics(r.run_dir), "val", "top1_f") for r in records if r.method == method]
    return aggregate(f"{TITLES[method]} F", parts)


def make_plots(records: Sequence[RunRecord], out_dir: Path) -> dict[str, Path]:
    """Write the demo's PNGs into `out_dir`; returns {name: path} of those that had data."""
    written: dict[str, Path] = {}
    curves = [c for c in (_top1_curve(records, m) for m in METHODS) if c is not None]
    if curves:
        written["top1"] = plot_curves(curves, out_dir / "top1_f.png", percent=True, window=1,
                                      title="Validation top-1 of F during training", ylabel="top-1 [%]")
    pl = []
    for method, keys in (("fixmatch", ("correct_pl_f",)), ("cmpl", ("correct_pl_f", "correct_pl_a"))):
        for key in keys:
            parts = [series(read_metrics(r.run_dir), "train", key) for r in records if r.method == method]
            who = "F" if key.endswith("_f") else "A"
            curve = aggregate(f"{TITLES[method]} {who}", parts)
            if curve is not None:
                pl.append(curve)
    if pl:
        written["pseudo_labels"] = plot_curves(
            pl, out_dir / "pseudo_labels.png", percent=True,
            title="Correct pseudo-labels / unlabeled clips (paper Fig. 2)", ylabel="correct pseudo-labels [%]")
    pairs = [(r.eval_a, r.eval_f) for r in records if r.method == "cmpl" and r.eval_a and r.eval_f]
    if pairs:
        a = mean_per_class([p[0] for p in pairs])
        f = mean_per_class([p[1] for p in pairs])
        gaps = class_gaps(a, f)
        order = {n: i for i, n in enumerate(f.classes)}
        bins = binned_gain(gaps, [f.per_class[order[g.name]] for g in gaps], 10.0)
        written["per_class"] = plot_per_class(gaps, bins, out_dir / "per_class_f_vs_a.png",
                                              label_a="A (CMPL aux)", label_b="F (CMPL primary)",
                                              label_ref="F")
    return written


def pseudo_label_summary(records: Sequence[RunRecord]) -> list[tuple[str, float]]:
    """(curve label, mean correct-pseudo-label ratio over the last 10% of logged steps, percent)."""
    out = []
    for method, key, who in (("fixmatch", "correct_pl_f", "F"), ("cmpl", "correct_pl_f", "F"),
                             ("cmpl", "correct_pl_a", "A")):
        parts = [series(read_metrics(r.run_dir), "train", key) for r in records if r.method == method]
        curve = aggregate(f"{TITLES[method]} {who}", parts)
        if curve is not None:
            out.append((curve.label, 100 * tail_mean(curve)))
    return out


def table_markdown(summary: dict[str, MethodSummary]) -> str:
    """The Table-1-like markdown table (F's top-1/top-5 mean ± std over splits, per-split top-1, time)."""
    lines = ["| Method | Top-1 (%) | Top-5 (%) | Top-1 per split | Splits | Train time / run |",
             "|---|---|---|---|---|---|"]
    for m in METHODS:
        if m not in summary:
            continue
        s = summary[m]
        per = ", ".join(f"{v:.1f}" for v in s.top1.values)
        lines.append(f"| {TITLES[m]} (F) | {s.top1} | {s.top5} | {per} | {len(s.seeds)} | {s.train_s / 60:.1f} min |")
    if "cmpl" in summary and summary["cmpl"].aux_top1 is not None:
        a = summary["cmpl"].aux_top1
        lines.append(f"| CMPL auxiliary A (not the reported model) | {a} | | "
                     f"{', '.join(f'{v:.1f}' for v in a.values)} | {len(a.values)} | |")
    return "\n".join(lines)


def table_text(summary: dict[str, MethodSummary]) -> str:
    """The same table for the terminal."""
    rows = [f"{'method':<12} {'top-1 %':>14} {'top-5 %':>14}  per split"]
    for m in METHODS:
        if m in summary:
            s = summary[m]
            rows.append(f"{TITLES[m]:<12} {str(s.top1):>14} {str(s.top5):>14}  "
                        + ", ".join(f"{v:.1f}" for v in s.top1.values))
    return "\n".join(rows)


def existing_notes(readme: Path) -> str | None:
    """The text between the notes markers of an existing README (the lead's diagnosis), if any."""
    if not readme.is_file():
        return None
    match = re.search(re.escape(NOTES_BEGIN) + r"\n?(.*?)\n?" + re.escape(NOTES_END), readme.read_text(), re.S)
    return match.group(1).strip() if match else None


def render_readme(summary: dict[str, MethodSummary], records: Sequence[RunRecord], *, plots: dict[str, Path],
                  context: dict[str, str], notes: str | None, smoke: bool) -> str:
    """The README text. `context` holds command, date, machine, wall_time, cpu_time, compute_time, preset,
    runs_dir, data."""
    evals = [e for r in records for e in (r.eval_f, r.eval_a) if e is not None]
    views = sorted({f"{e.views[0]}-clip x {e.views[1]}-crop" for e in evals if e.views})
    steps = sorted({e.step for e in evals if e.step is not None})
    videos = sorted({e.num_videos for e in evals if e.num_videos is not None})
    parts = ["# CMPL demo results" + (" (SMOKE RUN: a handful of steps, numbers mean nothing)" if smoke else ""),
             "",
             "Generated by `cmpl.demo` from the run folders; every number below is measured, and the comparison "
             "sentences are computed from them. The model reported for each method is its primary network F "
             f"(final weights, last.pt), trained on the {context.get('split_text', 'labeled split')} of "
             f"each split seed and tested with the {' / '.join(views) or 'unrecorded'} protocol on "
             f"{' / '.join(map(str, videos)) or 'an unrecorded number of'} val videos, after "
             f"{' / '.join(map(str, steps)) or 'an unrecorded number of'} training steps.",
             "",
             f"- Command: `{context['command']}`",
             f"- Date: {context['date']}",
             f"- Machine: {context['machine']}",
             f"- Wall time of this invocation: {context['wall_time']} (CPU time of its subprocesses: "
             f"{context['cpu_time']}); train + eval wall time recorded for all runs, summed over resumed "
             f"invocations: {context['compute_time']}",
             f"- Preset: `{context['preset']}`; run folders: `{context['runs_dir']}`; dataset: `{context['data']}`",
             "",
             "## Table (as the paper's Table 1: mean ± sample std over splits)",
             "",
             table_markdown(summary),
             ""]
    verdict = None
    parts.append("## Comparison")
    parts.append("")
    for a, b in (("cmpl", "fixmatch"), ("cmpl", "supervised"), ("fixmatch", "supervised")):
        if a in summary and b in summary:
            v, sentence = compare(summary[a], summary[b])
            if (a, b) == ("cmpl", "fixmatch"):
                verdict = v
            parts.append(f"- {sentence}")
    pl = pseudo_label_summary(records)
    if pl:
        parts.append("- Correct pseudo-labels per unlabeled clip over the last 10% of training (Fig. 2 ratio): "
                     + "; ".join(f"{label} {value:.1f}%" for label, value in pl) + ".")
    parts.append("")
    if plots:
        parts.append("## Plots")
        parts.append("")
        captions = {"top1": "Validation top-1 of F during training (the trainer's periodic val, cheaper views "
                            "than the final test; mean over splits, band = min/max)",
                    "pseudo_labels": "Correct pseudo-labels / unlabeled clips over training, FixMatch vs CMPL "
                                     "(paper Fig. 2; for CMPL, F's labels come from A and A's from F)",
                    "per_class": "Per-class top-1 of CMPL's auxiliary A minus primary F, averaged over splits "
                                 "(paper Fig. 1 style), and the mean gap per bin of F's accuracy"}
        for key, path in plots.items():
            parts.append(f"![{captions[key]}]({path.name})")
            parts.append(f"*{captions[key]}.*")
            parts.append("")
    heading = ("## Notes" if verdict == "higher"
               else "## Why CMPL does not clearly beat FixMatch here (diagnosis)")
    parts += [heading, "", NOTES_BEGIN, notes or NOTES_PLACEHOLDER, NOTES_END, ""]
    return "\n".join(parts)
