"""`make demo`: CMPL vs FixMatch vs supervised on the synthetic dataset, 3 split seeds, with the paper's plots.

    python -m cmpl.demo                          # full demo -> results/demo/ (runs in runs/demo/)
    python -m cmpl.demo --seeds 0                # one split only
    python -m cmpl.demo --smoke --out /tmp/x     # CI: one seed, a few steps, tiny eval, everything under /tmp/x

For each split seed S and method M it runs, as separate processes:
    python -m preprocess.synthetic --out DATA                                 (once, if DATA is absent)
    python -m cmpl.train --preset demo --data.root DATA --run.dir RUNS/M_seedS --method.name=M
                         --data.split=1pct_seedS --runtime.seed=S
    python -m cmpl.evaluate --checkpoint RUNS/M_seedS/checkpoints/last.pt --network primary|aux --out ...
then writes OUT/README.md (table of mean ± std over seeds, wall time, machine, command) and OUT/*.png.

Rerunning resumes: a finished training (recorded in RUN/demo.json) is skipped, an interrupted one is resumed
by the trainer from last.pt, and an evaluation whose JSON exists is not redone. The final weights (last.pt)
are evaluated, not best.pt: best.pt is chosen on the same val set the table reports, which would flatter it.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cmpl.analysis.report import (METHODS, RunRecord, existing_notes, make_plots, render_readme, summarize,
                                  table_text)
from cmpl.analysis.runs import AnalysisError, load_eval
from cmpl import registry
from cmpl.atomic import write_json, write_text
from cmpl.datasets import ensure_synthetic

PRESET = "demo"
SMOKE_STEPS = 4
# The smoke dataset: few classes and videos so CI generates, trains and evaluates it in about a minute.
SMOKE_DATA_ARGS = ("--classes", "4", "--per-class", "3", "--val-per-class", "2")
SMOKE_EVAL_OVERRIDES = ("--data.eval_clips=1", "--data.eval_crops=1")


class DemoError(Exception):
    """A step of the demo failed; the message says which and where its log is."""


@dataclass(frozen=True)
class Job:
    method: str
    seed: int
    run_dir: Path

    @property
    def name(self) -> str:
        return f"{self.method}_seed{self.seed}"

    @property
    def networks(self) -> tuple[str, ...]:
        return registry.method(self.method).roles

    def eval_json(self, network: str) -> Path:
        return self.run_dir / registry.role(network).eval_file


def _python(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def train_command(job: Job, data: Path, max_steps: int | None) -> list[str]:
    """The trainer command of one job (argument list, no shell)."""
    cmd = _python("cmpl.train", "--preset", PRESET, "--data.root", str(data), "--run.dir", str(job.run_dir),
                  f"--method.name={job.method}", f"--data.split=1pct_seed{job.seed}", f"--runtime.seed={job.seed}")
    if max_steps is not None:
        cmd.append(f"--schedule.max_steps={max_steps}")
    return cmd


def eval_command(job: Job, network: str, smoke: bool) -> list[str]:
    """The 10-clip x 3-crop evaluation of one network of a finished job (1 x 1 in smoke mode)."""
    cmd = _python("cmpl.evaluate", "--checkpoint", str(job.run_dir / "checkpoints" / "last.pt"),
                  "--network", network, "--out", str(job.eval_json(network)))
    return cmd + list(SMOKE_EVAL_OVERRIDES if smoke else ("--data.eval_clips=10", "--data.eval_crops=3"))


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_logged(cmd: list[str], log: Path, quiet: bool) -> float:
    """Run `cmd`; its output goes to the terminal (or only to `log` when quiet). Returns wall seconds."""
    log.parent.mkdir(parents=True, exist_ok=True)
    # One torch thread per child: with 2 cores, a second OpenMP thread only spins against the DALI loader's
    # thread and the other process (measured: 0.014 vs 1.2 CPU-s per tiny forward+backward under load).
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    start = time.monotonic()
    with log.open("a") as fh:
        fh.write(f"$ {shlex.join(cmd)}\n")
        fh.flush()
        if quiet:
            rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False, env=env).returncode
        else:
            rc = subprocess.run(cmd, check=False, env=env).returncode
    if rc != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:]) if quiet else ""
        raise DemoError(f"command failed (exit {rc}): {shlex.join(cmd)}\n{tail}(log: {log})")
    return time.monotonic() - start


def _read_state(job: Job) -> dict:
    path = job.run_dir / "demo.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def ensure_dataset(data: Path, smoke: bool, quiet: bool, log: Path) -> None:
    """Generate the synthetic dataset at `data` unless it is already there."""
    seconds: list[float] = []
    if ensure_synthetic(data, SMOKE_DATA_ARGS if smoke else (), run=lambda cmd: seconds.append(
            run_logged(cmd, log, quiet))):
        print(f"dataset ready ({seconds[0]:.0f} s)", flush=True)


def _fmt(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


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
        return f"ETA {_fmt(guess)}"

    def begin(self, job: Job) -> None:
        print(f"\n=== [{self.done + 1}/{len(self.jobs)}] {job.method} split seed {job.seed} "
              f"(elapsed {_fmt(time.monotonic() - self.start)}, {self.eta()}) ===", flush=True)

    def end(self, job: Job, seconds: float | None) -> None:
        if seconds is not None:
            self.measured.setdefault(job.method, []).append(seconds)
        self.done += 1


def config_digest(cmd: list[str]) -> str:
    """SHA-256 of the resolved config a trainer command runs with (preset + overrides), as TOML."""
    from cmpl import cli
    from cmpl.config import dumps

    cfg, _ = cli.resolve(cmd[3:])  # cmd = [python, -m, cmpl.train, ...]
    return hashlib.sha256(dumps(cfg).encode()).hexdigest()


def run_job(job: Job, *, data: Path, max_steps: int | None, smoke: bool, quiet: bool) -> tuple[RunRecord, bool]:
    """Train (or resume, or skip) and evaluate one job. Returns its record and whether work was done."""
    state = _read_state(job)
    cmd = train_command(job, data, max_steps)
    log = job.run_dir / "demo.log"
    worked = False
    digest = config_digest(cmd)
    if state.get("config_sha256") not in (None, digest):
        raise DemoError(f"{job.run_dir} was trained with another config (the demo preset or the command changed "
                        f"since); delete it (rm -r {job.run_dir}) or give another --runs folder")
    if not state.get("trained"):
        print("train:", shlex.join(cmd), flush=True)
        # Recorded before training, so a rerun after a kill knows what the resumed run was started with.
        state.update(train_command=cmd[1:], config_sha256=digest)
        write_json(job.run_dir / "demo.json", state)
        state["train_s"] = state.get("train_s", 0.0) + run_logged(cmd, log, quiet)
        state["trained"] = True
        write_json(job.run_dir / "demo.json", state)
        worked = True
    else:
        print(f"train: done earlier ({_fmt(state['train_s'])}), skipped", flush=True)
    evals = state.setdefault("eval_s", {})
    for network in job.networks:
        if job.eval_json(network).is_file():
            print(f"eval {network}: {job.eval_json(network)} exists, skipped", flush=True)
            continue
        ecmd = eval_command(job, network, smoke)
        print(f"eval {network}:", shlex.join(ecmd), flush=True)
        evals[network] = run_logged(ecmd, log, quiet)
        write_json(job.run_dir / "demo.json", state)
        worked = True
    record = RunRecord(job.method, job.seed, job.run_dir, load_eval(job.eval_json("primary")),
                       load_eval(job.eval_json("aux")) if "aux" in job.networks else None,
                       float(state["train_s"]), float(sum(evals.values())))
    print(f"{job.method} seed {job.seed}: top-1 F {record.eval_f.top1:.1f}%"
          + (f", A {record.eval_a.top1:.1f}%" if record.eval_a else ""), flush=True)
    return record, worked


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
    parser.add_argument("--quiet", action="store_true", help="send the trainer's output to RUN/demo.log only")
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
    start, cpu_start = time.monotonic(), _children_cpu()
    command = shlex.join(["python", "-m", "cmpl.demo", *(sys.argv[1:] if argv is None else argv)])
    jobs = [Job(m, s, args.runs / f"{m}_seed{s}") for s in args.seeds for m in args.methods]
    progress = Progress(jobs)
    records = []
    try:
        ensure_dataset(args.data, args.smoke, args.quiet, args.runs / "dataset.log")
        for job in jobs:
            progress.begin(job)
            job_start = time.monotonic()
            record, worked = run_job(job, data=args.data, max_steps=SMOKE_STEPS if args.smoke else None,
                                     smoke=args.smoke, quiet=args.quiet)
            progress.end(job, time.monotonic() - job_start if worked else None)
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
               "machine": machine(), "wall_time": _fmt(time.monotonic() - start),
               "compute_time": _fmt(compute), "cpu_time": _fmt(_children_cpu() - cpu_start),
               "preset": PRESET + (f" (max_steps={SMOKE_STEPS})" if args.smoke else ""),
               "runs_dir": str(args.runs), "data": str(args.data)}
    write_text(readme, render_readme(summary, records, plots=plots, context=context,
                                     notes=existing_notes(readme), smoke=args.smoke))
    print("\n" + table_text(summary))
    print(f"\nwall time {context['wall_time']}; wrote {readme} and {', '.join(p.name for p in plots.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
