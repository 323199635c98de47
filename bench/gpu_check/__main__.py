"""`python -m bench.gpu_check`: the command line of the GPU check (commands in bench/gpu_check/__init__.py).

    python -m bench.gpu_check --out DIR [--steps 1,4] [--work /tmp/gpu_check_work]
    python -m bench.gpu_check --dry-run --out DIR
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

from cmpl.atomic import write_json

from . import __doc__ as package_doc
from .report import write_report
from .runner import REPO, Context, run_steps
from .steps import STEPS, TOTAL_BUDGET_S, start_background
from .workers import WORKERS


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=(package_doc or "").split("\n\n")[0])
    p.add_argument("--out", type=Path, default=None, help="folder for the JSON, table and log ($OUT, else bench/out)")
    p.add_argument("--dry-run", action="store_true",
                   help="CPU rehearsal: every code path that needs no GPU, tiny sizes, the same time boxes")
    p.add_argument("--steps", default=",".join(str(s.number) for s in STEPS),
                   help="comma-separated step numbers (default: all)")
    p.add_argument("--work", type=Path, default=None,
                   help="scratch folder, kept (default: a temporary one); a rerun with the same --work reuses "
                        "the encoded test videos")
    p.add_argument("--budget", type=float, default=TOTAL_BUDGET_S, help="seconds for all steps together")
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--shapes", help=argparse.SUPPRESS)  # a worker's own argument (a row's backend, codec, mode)
    args = p.parse_args(argv)
    try:
        args.step_set = {int(s) for s in args.steps.split(",") if s.strip()}
    except ValueError:
        p.error(f"--steps must be comma-separated numbers, got {args.steps!r}")
    if not args.step_set <= {s.number for s in STEPS}:
        p.error(f"--steps: valid steps are 0-{len(STEPS) - 1}")
    if args.worker and not (args.json and args.work):
        p.error("--worker needs --json and --work")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        write_json(args.json, WORKERS[args.worker](args))
        return 0
    out = args.out or Path(os.environ.get("OUT") or REPO / "bench" / "out")
    out.mkdir(parents=True, exist_ok=True)
    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="gpu_check_")
    work = Path(args.work or tmp.name)  # type: ignore[union-attr]
    work.mkdir(parents=True, exist_ok=True)
    log_path = out / "gpu_check.log"
    log_path.write_text("")
    (out / "rows.jsonl").write_text("")
    ctx = Context(work=work, out=out, dry_run=args.dry_run, python=sys.executable, log_path=log_path,
                  deadline=time.monotonic() + args.budget)
    t0 = time.monotonic()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    print(f"gpu_check{' --dry-run' if args.dry_run else ''}: steps {sorted(args.step_set)}, budget "
          f"{args.budget:.0f} s, rows -> {out / 'rows.jsonl'} as they finish", flush=True)
    try:
        start_background(ctx, args.step_set)
        done = run_steps(ctx, STEPS, args.step_set, args.budget)
    finally:
        ctx.stop_background()
    env = ctx.facts.get("env") or {}
    probe = ctx.facts.get("probe") or {}
    card = env.get("gpu") or probe.get("gpu") or ("CPU dry run" if args.dry_run else "unknown device")
    md = write_report(out, done, ctx.rows, started=started, total_s=time.monotonic() - t0, device=card,
                      dry_run=args.dry_run, budget=args.budget)
    if tmp is not None:
        tmp.cleanup()
    print("\n" + md, flush=True)
    return 1 if any(d.result.status in ("FAIL", "timeout") for d in done) else 0


if __name__ == "__main__":
    from preprocess.entry import run_main

    run_main(main)
