"""`make demo`: CMPL vs FixMatch vs supervised on the synthetic dataset, 3 split seeds, with the paper's plots.

    python -m cmpl.demo                          # full demo -> results/demo/ (runs in runs/demo/)
    python -m cmpl.demo --seeds 0                # one split only
    python -m cmpl.demo --smoke --out /tmp/x     # CI: one seed, a few steps, tiny eval, everything under /tmp/x

For each split seed S and method M it runs, as separate processes:
    python -m preprocess.synthetic --out DATA                                 (once, if DATA is absent)
    python -m cmpl.train --preset demo --data.root DATA --run.dir RUNS/M_1pct_seedS --method.name=M
                         --data.split=1pct_seedS --runtime.seed=S
    python -m cmpl.evaluate --checkpoint RUNS/M_1pct_seedS/checkpoints/last.pt --network primary|aux --out ...
then writes OUT/README.md (table of mean ± std over seeds, wall time, machine, command) and OUT/*.png.

Rerunning resumes: a finished training (recorded in RUN/study.json, as cmpl.study does) is skipped, an interrupted one is resumed
by the trainer from last.pt, and an evaluation whose JSON exists is not redone. The final weights (last.pt)
are evaluated, not best.pt: best.pt is chosen on the same val set the table reports, which would flatter it.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

from cmpl.analysis.report import (METHODS, RunRecord, existing_notes, make_plots, render_readme, summarize,
                                  table_text)
from cmpl.analysis.runs import AnalysisError, load_eval
from cmpl.atomic import write_text
from cmpl.datasets import ensure_synthetic
from cmpl.study import Job, StudyError, Variant, children_cpu, fmt_seconds, run_job, run_logged

PRESET = "demo"
SMOKE_STEPS = 4
# The smoke dataset: few classes and videos so CI generates, trains and evaluates it in about a minute.
SMOKE_DATA_ARGS = ("--classes", "4", "--per-class", "3", "--val-per-class", "2")
SMOKE_EVAL_OVERRIDES = ("--data.eval_clips=1", "--data.eval_crops=1")
FULL_EVAL_OVERRIDES = ("--data.eval_clips=10", "--data.eval_crops=3")


DemoError = StudyError  # a step of the demo failed; the message says which and where its log is


def job(method: str, seed: int, runs: Path) -> Job:
    """The demo's job for (method, split seed): cmpl.study's table1 row on split 1pct_seed<seed>, in the same
    run folder (RUNS/<method>_1pct_seed<seed>), so `cmpl.study --runs runs/demo` reuses the demo's runs."""
    return Job(Variant(method, method), "1pct", seed, runs / f"{method}_1pct_seed{seed}")


def ensure_dataset(data: Path, smoke: bool, quiet: bool, log: Path) -> None:
    """Generate the synthetic dataset at `data` unless it is already there."""
    seconds: list[float] = []
    if ensure_synthetic(data, SMOKE_DATA_ARGS if smoke else (), run=lambda cmd: seconds.append(
            run_logged(cmd, log, quiet))):
        print(f"dataset ready ({seconds[0]:.0f} s)", flush=True)


class Progress:
    """Which job of how many, and an ETA from the jobs measured so far (per method, as CMPL costs more)."""

    def __init__(self, jobs: list[Job]) -> None:
        self.jobs, self.done, self.measured = jobs, 0, {}
        self.start = time.monotonic()

    def eta(self) -> str:
        left = self.jobs[self.done:]
        if not left or not self.measured:
            return "ETA unknown" if left else "ETA 0s"
        mean = sum(sum(v) / len(v) for v in self.measured.values()) / len(self.measured)
        guess = sum(sum(self.measured[j.method]) / len(self.measured[j.method]) if j.method in self.measured
                    else mean for j in left)
        return f"ETA {fmt_seconds(guess)}"

    def begin(self, job: Job) -> None:
        print(f"\n=== [{self.done + 1}/{len(self.jobs)}] {job.method} split seed {job.seed} "
              f"(elapsed {fmt_seconds(time.monotonic() - self.start)}, {self.eta()}) ===", flush=True)

    def end(self, job: Job, seconds: float | None) -> None:
        if seconds is not None:
            self.measured.setdefault(job.method, []).append(seconds)
        self.done += 1


def run_demo_job(j: Job, *, data: Path, max_steps: int | None, smoke: bool, quiet: bool) -> tuple[RunRecord, bool]:
    """Train (or resume, or skip) and evaluate one job with cmpl.study's runner; its record for the report."""
    res = run_job(j, data=data, preset=PRESET, views=SMOKE_EVAL_OVERRIDES if smoke else FULL_EVAL_OVERRIDES,
                  quiet=quiet, max_steps=max_steps)
    record = RunRecord(j.method, j.seed, j.run_dir, load_eval(j.eval_json("primary")),
                       load_eval(j.eval_json("aux")) if "aux" in j.networks else None, res.train_s, res.eval_s)
    print(f"{j.method} seed {j.seed}: top-1 F {record.eval_f.top1:.1f}%"
          + (f", A {record.eval_a.top1:.1f}%" if record.eval_a else ""), flush=True)
    return record, res.worked


def machine() -> str:
    """CPU model, cores usable by this process, memory, and GPU if any."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    text = f"{model}, {cores} cores usable ({os.cpu_count()} online), {platform.system()} {platform.release()}"
    try:
        import psutil

        text += f", {psutil.virtual_memory().total / 2**30:.0f} GiB RAM"
    except ImportError:
        pass
    import torch

    text += f", torch {torch.__version__}"
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    else:
        text += ", no GPU"
    return text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cmpl.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="split seeds (default 0 1 2)")
    parser.add_argument("--smoke", action="store_true",
                        help=f"one seed, {SMOKE_STEPS} steps, 1x1 eval, tiny dataset; for CI")
    parser.add_argument("--out", type=Path, default=None,
                        help="results folder (default results/demo; --smoke: a new temp folder)")
    parser.add_argument("--runs", type=Path, default=None, help="run folders (default runs/demo; --smoke: OUT/runs)")
    parser.add_argument("--data", type=Path, default=None,
                        help="dataset folder (default data/synthetic; --smoke: OUT/data); generated if absent")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--quiet", action="store_true", help="send the trainer's output to RUN/study.log only")
    args = parser.parse_args(argv)
    if args.smoke:
        args.seeds = args.seeds[:1]
        args.out = args.out or Path(tempfile.mkdtemp(prefix="cmpl-demo-smoke-"))
        args.runs = args.runs or args.out / "runs"
        args.data = args.data or args.out / "data"
    else:
        args.out = args.out or Path("results/demo")
        args.runs = args.runs or Path("runs/demo")
        args.data = args.data or Path("data/synthetic")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # CPU time of the subprocesses as well as wall time: on a shared machine wall time alone misleads.
    start, cpu_start = time.monotonic(), children_cpu()
    command = shlex.join(["python", "-m", "cmpl.demo", *(sys.argv[1:] if argv is None else argv)])
    jobs = [job(m, s, args.runs) for s in args.seeds for m in args.methods]
    progress = Progress(jobs)
    records = []
    try:
        ensure_dataset(args.data, args.smoke, args.quiet, args.runs / "dataset.log")
        for j in jobs:
            progress.begin(j)
            job_start = time.monotonic()
            record, worked = run_demo_job(j, data=args.data, max_steps=SMOKE_STEPS if args.smoke else None,
                                          smoke=args.smoke, quiet=args.quiet)
            progress.end(j, time.monotonic() - job_start if worked else None)
            records.append(record)
    except (DemoError, AnalysisError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    summary = summarize(records)
    plots = make_plots(records, args.out)
    readme = args.out / "README.md"
    compute = sum(r.train_s + r.eval_s for r in records)
    context = {"command": "make demo" if command == "python -m cmpl.demo" else command,
               "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
               "machine": machine(), "wall_time": fmt_seconds(time.monotonic() - start),
               "compute_time": fmt_seconds(compute), "cpu_time": fmt_seconds(children_cpu() - cpu_start),
               "preset": PRESET + (f" (max_steps={SMOKE_STEPS})" if args.smoke else ""),
               "runs_dir": str(args.runs), "data": str(args.data)}
    write_text(readme, render_readme(summary, records, plots=plots, context=context,
                                     notes=existing_notes(readme), smoke=args.smoke))
    print("\n" + table_text(summary))
    print(f"\nwall time {context['wall_time']}; wrote {readme} and {', '.join(p.name for p in plots.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
