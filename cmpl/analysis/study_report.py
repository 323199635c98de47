"""What `cmpl.study` writes: OUT/results.json (one row per run and network) and OUT/README.md, whose every
number is read from the eval JSONs and every sentence computed from those numbers.

Pairing: within a split name (1pct, 10pct, ...) each seed is its own labeled split, so two rows are compared
split by split (difference of F's top-1 on the same labeled videos), and the 95% interval of the mean
difference is Student's t across those splits.
"""
from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cmpl.atomic import write_json, write_text

from .plots import plt, save_figure

# Student's t, two-sided 95%, by degrees of freedom; larger dof use the Cornish-Fisher expansion.
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def t975(dof: int) -> float:
    if dof in _T975:
        return _T975[dof]
    z = 1.959964
    return z + (z**3 + z) / (4 * dof) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * dof**2)


def mean_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high) of the 95% t-interval; low = high = mean for a single value."""
    m = statistics.fmean(values)
    if len(values) < 2:
        return m, m, m
    half = t975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return m, m - half, m + half


def rows(results: Sequence[Any]) -> list[dict[str, Any]]:
    """results.json rows: one per (run, network), top-1/top-5 as fractions of the multi-view test."""
    out = []
    for r in results:
        for network, ev in r.evals.items():
            out.append({"method": r.job.method, "variant": r.job.variant.name, "split": r.job.split,
                        "seed": r.job.seed, "network": network, "top1": ev["top1"], "top5": ev["top5"],
                        "per_class": ev.get("per_class", {}), "run_dir": str(r.job.run_dir)})
    return out


def per_class_lines(rs: Sequence[dict], variants: Sequence[Any], splits: Sequence[str]) -> list[str]:
    """A table of F's top-1 per class (%), mean over the splits of each (row, split): where a gain lands."""
    classes = next((list(r["per_class"]) for r in rs if r["per_class"]), [])
    if not classes:
        return []
    lines = ["| row | split | " + " | ".join(classes) + " |", "|---|---|" + "---:|" * len(classes)]
    for split in splits:
        for v in variants:
            runs = [r["per_class"] for r in rs if r["network"] == "primary" and r["variant"] == v.name
                    and r["split"] == split and r["per_class"]]
            if runs:
                cells = [f"{100 * statistics.fmean(pc.get(c, math.nan) for pc in runs):.1f}" for c in classes]
                lines.append(f"| {v.title or v.name} | {split} | " + " | ".join(cells) + " |")
    return lines


def _by(rs: Sequence[dict], network: str = "primary") -> dict[tuple[str, str], dict[int, float]]:
    table: dict[tuple[str, str], dict[int, float]] = {}
    for r in rs:
        if r["network"] == network:
            table.setdefault((r["variant"], r["split"]), {})[r["seed"]] = 100 * r["top1"]
    return table


def _pm(values: Sequence[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.1f} ± {sd:.1f}"


def comparisons(variants: Sequence[Any]) -> list[tuple[str, str]]:
    """(row, baseline) pairs: every row against the first row and against the row before it."""
    names = [v.name for v in variants]
    pairs = []
    for i, name in enumerate(names[1:], start=1):
        for base in (names[0], names[i - 1]):
            if (name, base) not in pairs:
                pairs.append((name, base))
    return pairs


def paired(table: dict, a: str, b: str, split: str) -> dict[str, Any] | None:
    """Per-split differences a - b (top-1 points) on the seeds both have, their mean and 95% interval."""
    sa, sb = table.get((a, split), {}), table.get((b, split), {})
    seeds = sorted(set(sa) & set(sb))
    if not seeds:
        return None
    diffs = [sa[s] - sb[s] for s in seeds]
    m, lo, hi = mean_interval(diffs)
    return {"seeds": seeds, "diffs": diffs, "mean": m, "low": lo, "high": hi,
            "wins": sum(d > 0 for d in diffs), "losses": sum(d < 0 for d in diffs)}


def sentence(a: str, b: str, split: str, p: dict[str, Any]) -> str:
    n = len(p["diffs"])
    if n < 2:  # one split has no spread: nothing can be separated
        return (f"On `{split}`, {a} − {b} = {p['mean']:+.1f} points on a single split: no interval, so {a} is not "
                "separable from it (run more seeds).")
    verdict = ("ahead" if p["low"] > 0 else "behind" if p["high"] < 0 else
               "not separable from it (the interval contains 0)")
    return (f"On `{split}`, {a} − {b} = {p['mean']:+.1f} points (95% interval [{p['low']:+.1f}, {p['high']:+.1f}] "
            f"over {n} split{'s' if n > 1 else ''}); {a} wins on {p['wins']} of {n}, loses on {p['losses']}: "
            f"{a} is {verdict}.")


def chance_note(table: dict, *, classes: int, test_videos: int) -> str:
    """Where the rows stand against chance (100 / classes): a row whose mean is within two binomial standard
    errors of chance on `test_videos` videos is indistinguishable from a network that learned nothing."""
    chance = 100.0 / classes
    bar = chance + 200.0 * math.sqrt(chance / 100 * (1 - chance / 100) / test_videos)
    means = {key: statistics.fmean(v.values()) for key, v in table.items() if v}
    at_chance = sorted(f"{name} on `{split}`" for (name, split), m in means.items() if m < bar)
    text = (f"Chance is {chance:.1f}% ({classes} classes); with {test_videos} test videos a network that learned "
            f"nothing scores below {bar:.1f}% in about 98% of tests (chance + 2 binomial standard errors).")
    if not at_chance:
        return text + " Every row is above that."
    if len(at_chance) == len(means):
        return (text + " **Every row is below it, so no row has learned this dataset under this recipe, and the "
                "differences above compare networks at chance: they say nothing about the methods.**")
    return text + " Rows below it (not learned): " + ", ".join(at_chance) + "."


def plot_rows(table: dict, variants: Sequence[Any], splits: Sequence[str], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(variants) * len(splits)), 4))
    width = 0.8 / max(1, len(variants))
    for i, v in enumerate(variants):
        xs, ms, sds = [], [], []
        for j, split in enumerate(splits):
            vals = list(table.get((v.name, split), {}).values())
            if vals:
                xs.append(j + i * width)
                ms.append(statistics.fmean(vals))
                sds.append(statistics.stdev(vals) if len(vals) > 1 else 0.0)
        ax.bar(xs, ms, width, yerr=sds, capsize=3, label=v.title or v.name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(splits))], splits)
    ax.set_ylabel("top-1 of F [%] (mean ± std over splits)")
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def paired_lines(table: dict, variants: Sequence[Any], splits: Sequence[str]) -> list[str]:
    """One bullet per (row, baseline) pair and split: the sentence and the per-split differences."""
    lines = []
    for split in splits:
        for a, b in comparisons(variants):
            p = paired(table, a, b, split)
            if p is not None:
                lines.append(f"- {sentence(a, b, split, p)} Per split: "
                             + ", ".join(f"{d:+.1f}" for d in p["diffs"]) + ".")
    return lines


PL_CURVES = (("mask_f", "mask rate of F"), ("pl_acc_f", "pseudo-label accuracy for F"),
             ("mask_a", "mask rate of A"), ("pl_acc_a", "pseudo-label accuracy for A"))


def pl_curves(results: Sequence[Any]) -> dict[tuple[str, str], dict[str, tuple[list[int], list[float]]]]:
    """(variant, split) -> statistic -> (steps, mean over seeds) of the mask rates and pseudo-label accuracies
    logged in each run's metrics.jsonl (runs without unlabeled data have none)."""
    per: dict[tuple[str, str], dict[str, dict[int, list[float]]]] = {}
    for r in results:
        path = Path(r.job.run_dir) / "metrics.jsonl"
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if rec.get("kind") != "train":
                continue
            for key, _ in PL_CURVES:
                if key in rec:
                    per.setdefault((r.job.variant.name, r.job.split), {}).setdefault(key, {}) \
                        .setdefault(rec["step"], []).append(rec[key])
    return {k: {s: (sorted(v), [statistics.fmean(v[t]) for t in sorted(v)]) for s, v in stats.items()}
            for k, stats in per.items()}


def second_half(curve: tuple[list[int], list[float]]) -> float:
    """Mean of a logged curve over the second half of training."""
    steps, values = curve
    half = [v for t, v in zip(steps, values) if t > steps[-1] / 2] or values
    return statistics.fmean(half)


def plot_pl_curves(curves: dict, path: Path) -> Path:
    """One panel per (variant, split): mask rate and pseudo-label accuracy of each network over training."""
    keys = sorted(curves)
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for stat, label in PL_CURVES:
            if stat in curves[key]:
                ax.plot(*curves[key][stat], label=label, linestyle="-" if stat.startswith("mask") else "--")
        ax.set_title(f"{key[0]}, {key[1]}", fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    return save_figure(fig, path)


def write_report(results: Sequence[Any], *, out: Path, variants: Sequence[Any], context: dict[str, str]) -> Path:
    """Write OUT/results.json, OUT/top1.png and OUT/README.md; returns the README's path."""
    rs = rows(results)
    write_json(out / "results.json", {"runs": rs})
    table, table_a, table_ema = _by(rs), _by(rs, "aux"), _by(rs, "primary_ema")
    splits = list(dict.fromkeys(r["split"] for r in rs))
    present = [v for v in variants if any((v.name, s) in table for s in splits)]
    plot = plot_rows(table, present, splits, out / "top1.png")
    lines = ["# Study results", "",
             f"Generated by `{context['command']}` on preset `{context['preset']}`, dataset `{context['data']}`; "
             f"wall time of this invocation {context['wall_time']} (CPU time of its subprocesses "
             f"{context['cpu_time']}), train + eval wall time recorded for the runs, summed over the invocations "
             f"that did them: {sum(r.train_s + r.eval_s for r in results) / 60:.1f} min. Top-1 (%) of the "
             f"primary network F, final weights (last.pt), {context.get('views', '10 clips x 3 crops')}; each seed "
             "is its own labeled split." + (" EMA: F's exponential moving average of the weights (the same "
                                           "checkpoint)." if table_ema else ""),
             "", "| row | split | top-1 F (mean ± std) | per split | top-1 F EMA | per split (EMA) | top-1 A |",
             "|---|---|---|---|---|---|---|"]
    for split in splits:
        for v in present:
            vals = table.get((v.name, split))
            if not vals:
                continue
            per = ", ".join(f"{vals[s]:.1f}" for s in sorted(vals))
            a = table_a.get((v.name, split))
            label = v.title or v.name
            if split == "all":
                label += " — ceiling: every training video labeled"
            e = table_ema.get((v.name, split))
            per_e = ", ".join(f"{e[s]:.1f}" for s in sorted(e)) if e else ""
            lines.append(f"| {label} | {split} | {_pm(list(vals.values()))} | {per} | "
                         f"{_pm(list(e.values())) if e else ''} | {per_e} | {_pm(list(a.values())) if a else ''} |")
    lines += ["", "## Paired differences (top-1 points of F, split by split)", "",
              *paired_lines(table, present, splits)]
    if table_ema:
        lines += ["", "## Paired differences of the EMA weights (top-1 points of F's EMA, split by split)", "",
                  *paired_lines(table_ema, present, splits)]
    per_class = per_class_lines(rs, present, splits)
    if per_class:
        lines += ["", "## Per class (top-1 % of F, mean over the splits)", "", *per_class]
    curves = pl_curves(results)
    if curves:
        lines += ["", "## Pseudo-labels over training", "",
                  "Mean over splits of the logged mask rate (share of unlabeled clips whose pseudo-label passed "
                  "the threshold) and pseudo-label accuracy (of those, the share equal to the hidden label), in "
                  "the second half of training:", "", "| row | split | " + " | ".join(
                      label for _, label in PL_CURVES) + " |", "|---|---|" + "---|" * len(PL_CURVES)]
        for (name, split), stats in sorted(curves.items()):
            cells = [f"{100 * second_half(stats[k]):.1f}%" if k in stats else "" for k, _ in PL_CURVES]
            lines.append(f"| {name} | {split} | " + " | ".join(cells) + " |")
        lines += ["", f"![mask rate and pseudo-label accuracy]({plot_pl_curves(curves, out / 'pseudo_labels.png').name})"]
    if context.get("classes") and context.get("test_videos"):
        lines += ["", "## Against chance", "",
                  chance_note(table, classes=int(context["classes"]), test_videos=int(context["test_videos"]))]
    lines += ["", f"![top-1 per row]({plot.name})", ""]
    readme = out / "README.md"
    write_text(readme, "\n".join(lines))
    return readme
