"""The paper's analyses on any run folder written by `cmpl.train`.

    python -m cmpl.analysis pseudo-labels RUN [RUN ...] [--out PNG]
        Fig. 2: ratio of correct pseudo-labels (correct_pl_f, and correct_pl_a for CMPL) over training.
    python -m cmpl.analysis per-class A B [--network-a aux] [--network-b primary] [--bin-by C] [--out PNG]
        Fig. 1 / Fig. 7: per-class accuracy gap of A over B. A, B (and C) are run folders (their
        eval.json / eval_aux.json) or eval JSON files; --evaluate runs cmpl.evaluate for missing ones.
    python -m cmpl.analysis temporal RUN [--out PNG] [--json JSON] [--strides 1 2 4 8]
        Fig. 5: top-1 of F and A when each test clip is resampled with stride s (frame i -> floor(i/s)*s).

Every subcommand prints its numbers; a path that is not a run folder gives one error line and exit 2.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from cmpl.atomic import write_json

from .curves import plot_curves, pseudo_label_curves, tail_mean
from .per_class import binned_gain, class_gaps, fit_line, plot_per_class
from .runs import AnalysisError, EvalResult, eval_path, load_eval, require_run
from .temporal import STRIDES, drop_ratios


def _pseudo_labels(args: argparse.Namespace) -> None:
    curves = pseudo_label_curves(args.runs)
    out = Path(args.out or Path(args.runs[0]) / "pseudo_labels.png")
    plot_curves(curves, out, title="Correct pseudo-labels / unlabeled clips (paper Fig. 2)",
                ylabel="correct pseudo-labels [%]", percent=True, window=args.window)
    print(f"{'curve':<40} {'points':>6} {'last step':>9} {'final 10%':>9} {'max':>7}")
    for c in curves:
        print(f"{c.label:<40} {len(c.steps):>6} {int(c.steps[-1]):>9} {100 * tail_mean(c):>8.1f}% "
              f"{100 * float(c.mean.max()):>6.1f}%")
    print(f"wrote {out}")


def _evaluate(run: Path, network: str, out: Path) -> None:
    checkpoint = run / "checkpoints" / "last.pt"
    if not checkpoint.is_file():
        raise AnalysisError(f"{checkpoint}: missing, cannot evaluate {run}")
    cmd = [sys.executable, "-m", "cmpl.evaluate", "--checkpoint", str(checkpoint), "--network", network,
           "--out", str(out)]
    print("running:", " ".join(cmd), flush=True)
    if subprocess.run(cmd, check=False).returncode != 0:
        raise AnalysisError(f"{run}: cmpl.evaluate failed (command above)")


def _load(target: str, network: str, evaluate: bool) -> EvalResult:
    path = eval_path(target, network)
    if not path.is_file() and evaluate and Path(target).is_dir():
        _evaluate(require_run(target), network, path)
    return load_eval(path)


def _per_class(args: argparse.Namespace) -> None:
    a = _load(args.a, args.network_a, args.evaluate)
    b = _load(args.b, args.network_b, args.evaluate)
    ref = _load(args.bin_by, args.network_ref, args.evaluate) if args.bin_by else b
    gaps = class_gaps(a, b)
    order = {name: i for i, name in enumerate(ref.classes)}
    if set(order) != {g.name for g in gaps}:
        raise AnalysisError(f"{ref.path}: its classes differ from {a.path}")
    bins = binned_gain(gaps, [ref.per_class[order[g.name]] for g in gaps], args.bin_width)
    label_a, label_b = f"A={Path(args.a).name}:{args.network_a}", f"B={Path(args.b).name}:{args.network_b}"
    label_ref = f"{Path(args.bin_by).name}:{args.network_ref}" if args.bin_by else "B"
    out = Path(args.out or Path("per_class.png"))
    plot_per_class(gaps, bins, out, label_a=label_a, label_b=label_b, label_ref=label_ref)
    print(f"{label_a}: top-1 {a.top1:.2f}%   {label_b}: top-1 {b.top1:.2f}%")
    better = sum(g.gap > 0 for g in gaps)
    print(f"classes where A is better: {better}/{len(gaps)}; worse: {sum(g.gap < 0 for g in gaps)}")
    print(f"{'class':<28} {'acc A':>7} {'acc B':>7} {'A-B':>7}")
    for g in gaps:
        print(f"{g.name:<28} {g.acc_a:>7.1f} {g.acc_b:>7.1f} {g.gap:>+7.1f}")
    print(f"bins of Acc({label_ref}) [%]   classes   mean gain A-B")
    for b_ in bins:
        print(f"[{b_.low:5.1f}, {b_.high:5.1f})          {b_.count:>5}   {b_.mean_gain:>+9.2f}")
    line = fit_line(bins)
    if line is not None:
        print(f"least-squares slope of gain vs bin: {line[0]:+.3f} points per point")
    if args.json:
        write_json(args.json, {"a": str(a.path), "b": str(b.path), "reference": str(ref.path),
                               "classes": [{"name": g.name, "acc_a": g.acc_a, "acc_b": g.acc_b, "gap": g.gap}
                                           for g in gaps],
                               "bins": [vars(x) for x in bins], "fit": line})
    print(f"wrote {out}")


def _temporal(args: argparse.Namespace) -> None:
    from .temporal_run import plot_temporal, probe_run  # imports torch models and the loaders

    run = require_run(args.run)
    results = probe_run(run, networks=args.networks, strides=args.strides, checkpoint=args.checkpoint,
                        batch_size=args.batch_size, clips=args.clips, crops=args.crops,
                        data_root=args.data_root)
    print(f"{'network':<8} " + " ".join(f"{'s=' + str(s):>14}" for s in args.strides))
    table = {}
    for net, res in results.items():
        drops = drop_ratios(res)
        print(f"{net:<8} " + " ".join(f"{r.top1:6.1f}% ({drops[r.stride]:+.2f})" for r in res))
        table[net] = [{"stride": r.stride, "top1": r.top1, "correct": r.correct, "total": r.total,
                       "drop_ratio": drops[r.stride]} for r in res]
    print("(top-1, and in brackets the drop ratio (acc_1 - acc_s) / acc_1)")
    out = Path(args.out or run / "temporal.png")
    plot_temporal(results, out)
    json_out = Path(args.json or out.with_suffix(".json"))
    write_json(json_out, {"run": str(run), "checkpoint": args.checkpoint, "clips": args.clips,
                          "crops": args.crops, "strides": args.strides, "networks": table})
    print(f"wrote {out} and {json_out}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m cmpl.analysis", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pseudo-labels", help="Fig. 2: correct pseudo-label ratio over training")
    p.add_argument("runs", nargs="+", help="run folders (metrics.jsonl)")
    p.add_argument("--out", help="PNG path (default: FIRST_RUN/pseudo_labels.png)")
    p.add_argument("--window", type=int, default=None, help="moving-average points (default: 1/25 of the curve)")
    p.set_defaults(func=_pseudo_labels)

    p = sub.add_parser("per-class", help="Fig. 1 / Fig. 7: per-class accuracy gap of A over B")
    p.add_argument("a", help="run folder or eval JSON")
    p.add_argument("b", help="run folder or eval JSON")
    for flag, default in (("--network-a", "primary"), ("--network-b", "primary"), ("--network-ref", "primary")):
        p.add_argument(flag, choices=("primary", "aux"), default=default,
                       help=f"which eval of a run folder (primary: eval.json, aux: eval_aux.json); default {default}")
    p.add_argument("--bin-by", help="bin classes by this run's/JSON's accuracy instead of B's (paper Fig. 7: "
                                    "the auxiliary network's)")
    p.add_argument("--bin-width", type=float, default=10.0, help="bin width in accuracy points (paper: 5)")
    p.add_argument("--evaluate", action="store_true", help="run cmpl.evaluate on last.pt for missing eval JSONs")
    p.add_argument("--out", help="PNG path (default: per_class.png)")
    p.add_argument("--json", help="also write the numbers here")
    p.set_defaults(func=_per_class)

    p = sub.add_parser("temporal", help="Fig. 5: accuracy under temporal resampling, F and A")
    p.add_argument("run", help="run folder (checkpoints/, config.toml)")
    p.add_argument("--networks", nargs="+", choices=("primary", "aux"), default=None,
                   help="default: every network the checkpoint holds")
    p.add_argument("--strides", nargs="+", type=int, default=list(STRIDES))
    p.add_argument("--checkpoint", default="last", help="last | best | a .pt path (default: last)")
    p.add_argument("--batch-size", type=int, default=None, help="videos per batch (default: data.eval_batch)")
    p.add_argument("--clips", type=int, default=None, help="clips per video (default: the run's data.eval_clips)")
    p.add_argument("--crops", type=int, default=None, help="crops per clip (default: the run's data.eval_crops)")
    p.add_argument("--data-root", default=None, help="dataset folder (default: the run config's data.root)")
    p.add_argument("--out", help="PNG path (default: RUN/temporal.png)")
    p.add_argument("--json", help="JSON path (default: the PNG path with .json)")
    p.set_defaults(func=_temporal)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "strides", None) and (1 not in args.strides or min(args.strides) < 1):
        print("error: --strides must be positive and include 1 (the reference for the drop ratio)",
              file=sys.stderr)
        return 2
    try:
        args.func(args)
    except AnalysisError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    from preprocess.entry import run_main

    run_main(main)
