"""`make demo`: CMPL vs FixMatch vs supervised on the moving-digits benchmark, 3 split seeds, the paper's plots.

    python -m cmpl.demo                          # full demo -> runs/demo/results/ (runs in runs/demo/)
    python -m cmpl.demo --seeds 0                # one split only
    python -m cmpl.demo --smoke --out /tmp/x     # CI: one seed, a few steps, tiny eval, everything under /tmp/x

For each split seed S and method M it runs, as separate processes:
    python -m preprocess.digits --out DATA --short-side 32           (once, if DATA is absent; 128 px on a GPU)
    python -m cmpl.train --preset digits --data.root DATA --run.dir RUNS/M_10pct_seedS --method.name=M
                         --data.split=10pct_seedS --runtime.seed=S --schedule.steps=600 --schedule.warmup_steps=25
    python -m cmpl.evaluate --checkpoint RUNS/M_10pct_seedS/checkpoints/last.pt --network primary|aux
                            --data.eval_clips=1 --out ...
then writes OUT/README.md (table of mean ± std over seeds, wall time, machine, command) and OUT/*.png, and
says whether its table reproduced the committed one (results/demo/README.md: the top-1 / top-5 cells, not the
times). OUT defaults to runs/demo/results/, an ignored folder, so the demo leaves the work tree as it was;
`--out results/demo` replaces the committed results (compared before they are overwritten).

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
import threading
import time
from pathlib import Path

from cmpl.analysis.report import (METHODS, RunRecord, existing_notes, make_plots, render_readme, summarize,
                                  table_markdown, table_text)
from cmpl.analysis.runs import AnalysisError, load_eval
from cmpl.atomic import write_text
from cmpl.datasets import FIRST_USE, ensure_synthetic
from cmpl.study import (Job, StudyError, Variant, children_cpu, default_jobs, fmt_seconds, map_in_order,
                        run_job, run_logged)

PRESET = "digits"  # the small-data recipe on the moving-digits benchmark
SPLIT = "10pct"  # 10 labeled videos per class of 100: where FixMatch beats supervised on this benchmark
SPLIT_TEXT = "10%-labeled split (`10pct_seed{S}`: 10 labeled videos per class)"
# The benchmark as cmpl.study measures it (100 training videos per class, 1,000 test videos), generated as
# `python -m cmpl.train` does on first use: at the training short side (32 px) where the CPU decodes, at NVDEC's
# minimum (128 px) where a GPU does.
GENERATOR, DATA_ARGS = FIRST_USE[PRESET]
# The demo's budget: the study's recipe (1,500 steps, 4 test clips) cut to 600 steps and a 1-clip test, so the
# 9 runs fit a 2-core machine in minutes; `cmpl.study --data data/digits --splits 10pct` runs the full recipe.
DEMO_OVERRIDES = ("--schedule.steps=600", "--schedule.warmup_steps=25")
EVAL_OVERRIDES = ("--data.eval_clips=1",)
SMOKE_STEPS = 4
# The smoke dataset: few videos so CI generates, trains and evaluates it in about a minute.
SMOKE_DATA_ARGS = ("--per-class", "3", "--val-per-class", "1", "--frames", "40", "--short-side", "32")
SMOKE_EVAL_OVERRIDES = ("--data.eval_clips=1", "--data.eval_crops=1")
FULL_SEEDS = (0, 1, 2)  # the committed table's split seeds
COMMITTED = Path(__file__).resolve().parents[1] / "results" / "demo" / "README.md"  # the committed results


DemoError = StudyError  # a step of the demo failed; the message says which and where its log is


def job(method: str, seed: int, runs: Path) -> Job:
    """The demo's job for (method, split seed): cmpl.study's table1 row on split <SPLIT>_seed<seed> at the demo's
    budget, in the study's run-folder layout (RUNS/<method>_<SPLIT>_seed<seed>)."""
    return Job(Variant(method, method, DEMO_OVERRIDES), SPLIT, seed, runs / f"{method}_{SPLIT}_seed{seed}")


def ensure_dataset(data: Path, smoke: bool, quiet: bool, log: Path) -> None:
    """Generate the digits benchmark at `data` unless it is already there."""
    import torch

    seconds: list[float] = []
    args = SMOKE_DATA_ARGS if smoke else DATA_ARGS["cuda" if torch.cuda.is_available() else "cpu"]
    if ensure_synthetic(data, args, run=lambda cmd: seconds.append(run_logged(cmd, log, quiet)), generator=GENERATOR):
        print(f"dataset ready ({seconds[0]:.0f} s)", flush=True)


class Progress:
    """Which job of how many, and an ETA from the jobs measured so far (per method, as CMPL costs more),
    with `workers` jobs running at once (called from the pool's threads)."""

    def __init__(self, jobs: list[Job], workers: int = 1) -> None:
        self.jobs, self.workers, self.started, self.measured = jobs, workers, 0, {}
        self.start = time.monotonic()
        self.lock = threading.Lock()

    def eta(self) -> str:
        left = self.jobs[self.started:]
        if not left or not self.measured:
            return "ETA unknown" if left else "ETA 0s"
        mean = sum(sum(v) / len(v) for v in self.measured.values()) / len(self.measured)
        guess = sum(sum(self.measured[j.method]) / len(self.measured[j.method]) if j.method in self.measured
                    else mean for j in left)
        return f"ETA {fmt_seconds(guess / self.workers)}"

    def begin(self, job: Job) -> None:
        with self.lock:
            self.started += 1
            print(f"\n=== [{self.started}/{len(self.jobs)}] {job.method} split seed {job.seed} "
                  f"(elapsed {fmt_seconds(time.monotonic() - self.start)}, {self.eta()}) ===", flush=True)

    def end(self, job: Job, seconds: float | None) -> None:
        if seconds is not None:
            with self.lock:
                self.measured.setdefault(job.method, []).append(seconds)


def run_demo_job(j: Job, *, data: Path, max_steps: int | None, smoke: bool, quiet: bool) -> tuple[RunRecord, bool]:
    """Train (or resume, or skip) and evaluate one job with cmpl.study's runner; its record for the report."""
    res = run_job(j, data=data, preset=PRESET, views=SMOKE_EVAL_OVERRIDES if smoke else EVAL_OVERRIDES,
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
                        help="results folder (default runs/demo/results; --smoke: a new temp folder)")
    parser.add_argument("--runs", type=Path, default=None, help="run folders (default runs/demo; --smoke: OUT/runs)")
    parser.add_argument("--data", type=Path, default=None,
                        help="dataset folder (default data/digits; --smoke: OUT/data); generated if absent")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--quiet", action="store_true", help="send the trainer's output to RUN/study.log only")
    parser.add_argument("--jobs", type=int, default=None,
                        help="runs at once (default as cmpl.study: one per core up to 4 on a CPU, 1 on a GPU)")
    args = parser.parse_args(argv)
    if args.jobs is not None and args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.smoke:
        args.seeds = args.seeds[:1]
        args.out = args.out or Path(tempfile.mkdtemp(prefix="cmpl-demo-smoke-"))
        args.runs = args.runs or args.out / "runs"
        args.data = args.data or args.out / "data"
    else:
        args.runs = args.runs or Path("runs/demo")
        args.out = args.out or args.runs / "results"
        args.data = args.data or Path("data/digits")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # CPU time of the subprocesses as well as wall time: on a shared machine wall time alone misleads.
    start, cpu_start = time.monotonic(), children_cpu()
    command = shlex.join(["python", "-m", "cmpl.demo", *(sys.argv[1:] if argv is None else argv)])
    jobs = [job(m, s, args.runs) for s in args.seeds for m in args.methods]
    workers = args.jobs or default_jobs("auto")
    progress = Progress(jobs, workers)
    try:
        ensure_dataset(args.data, args.smoke, args.quiet, args.runs / "dataset.log")

        def one(j: Job) -> RunRecord:
            progress.begin(j)
            job_start = time.monotonic()
            record, worked = run_demo_job(j, data=args.data, max_steps=SMOKE_STEPS if args.smoke else None,
                                          smoke=args.smoke, quiet=args.quiet)
            progress.end(j, time.monotonic() - job_start if worked else None)
            return record

        # cmpl.study's default: on a 2-core CPU two runs at once finish the demo sooner than one after another.
        records = map_in_order(one, jobs, workers)
    except (DemoError, AnalysisError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    summary = summarize(records)
    plots = make_plots(records, args.out)
    readme = args.out / "README.md"
    committed = COMMITTED.read_text() if COMMITTED.is_file() else None  # read before --out results/demo rewrites it
    compute = sum(r.train_s + r.eval_s for r in records)
    context = {"command": "make demo" if command == "python -m cmpl.demo" else command,
               "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
               "machine": machine(), "wall_time": fmt_seconds(time.monotonic() - start),
               "compute_time": fmt_seconds(compute), "cpu_time": fmt_seconds(children_cpu() - cpu_start),
               "preset": PRESET + " " + " ".join(DEMO_OVERRIDES) + (f" (max_steps={SMOKE_STEPS})" if args.smoke else ""),
               "runs_dir": str(args.runs), "data": str(args.data), "split_text": SPLIT_TEXT}
    # The diagnosis notes: this folder's own (kept across reruns), else the committed README's.
    notes = existing_notes(readme) or (None if args.smoke else existing_notes(COMMITTED))
    write_text(readme, render_readme(summary, records, plots=plots, context=context, notes=notes, smoke=args.smoke))
    print("\n" + table_text(summary))
    print(f"\nwall time {context['wall_time']}; wrote {readme} and {', '.join(p.name for p in plots.values())}")
    if not args.smoke:
        print(reproduction_line(table_markdown(summary), committed,
                                full=tuple(args.seeds) == FULL_SEEDS and list(args.methods) == list(METHODS)))
    return 0


def table_cells(markdown: str) -> dict[str, tuple[str, ...]]:
    """{row title: (top-1, top-5, top-1 per split, splits)} of a demo table: the measured cells, not the times."""
    rows = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and cells[0] not in ("Method", "") and not set(cells[0]) <= set("-: "):
            rows[cells[0]] = tuple(cells[1:5])
    return rows


def reproduction_line(table: str, committed: str | None, *, full: bool) -> str:
    """One line: did this table reproduce the committed results/demo/README.md's, cell for cell?"""
    where = "results/demo/README.md"
    if committed is None:
        return f"no committed table to compare with ({where} is missing)"
    if not full:
        return f"not compared with {where}: its table is of all methods on split seeds {' '.join(map(str, FULL_SEEDS))}"
    ours = table_cells(table)
    section = committed.split("## Table", 1)[1].split("\n## ", 1)[0] if "## Table" in committed else ""
    theirs = table_cells(section)
    differ = [f"{row}: {' | '.join(ours.get(row, ('not run',)))} vs {' | '.join(cells)}"
              for row, cells in theirs.items() if ours.get(row) != cells]
    if not theirs:
        return f"no table found in {where} to compare with"
    if differ:
        return f"did NOT reproduce the committed table ({where}), here vs committed: " + "; ".join(differ)
    return f"reproduced the committed table ({where}): every top-1 and top-5 cell is the same"


if __name__ == "__main__":
    from preprocess.entry import run_main

    run_main(main)
