"""DDP efficiency: training videos/s per rank at 2 ranks over 1 rank, through the public training CLI.

    python -m bench.ddp                                  # tiny preset, gloo on CPU, 3 interleaved repeats
    python -m bench.ddp --ranks 1 2 4 --steps 200 --log-every 20 --repeats 5 --data DIR --keep RUNS

Each measurement is one launch of
    torchrun --standalone --nproc_per_node=N -m cmpl.train --preset tiny --data.root DATA --run.dir RUN
             --schedule.steps=STEPS --schedule.max_steps=STEPS --run.log_every=LOG_EVERY
             --run.checkpoint_every=STEPS
with OMP_NUM_THREADS=1 per rank. Its throughput is the median `videos_per_s` of the "train" records of
RUN/metrics.jsonl after the first (warm-up: pipeline build, first compiled/allocated steps). The trainer
logs the GLOBAL rate (videos of all ranks per second), so per rank = rate / N. The ranks are interleaved
(1, 2, 1, 2, ...) so drifting load from other jobs hits both alike; the printed efficiency is
median(per-rank at N) / median(per-rank at the first N), 1.0 = perfect scaling. DATA defaults to a tiny
dataset written by `pipelines.testing.make_dataset` (4 classes x 16 train videos, 8 of them labeled, 48
frames, 48x64): enough that an epoch spans several steps per rank at 2 ranks. `schedule.steps` makes the
run STEPS long whatever the world size (the tiny preset's own schedule is 20 epochs of the labeled set).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class BenchError(Exception):
    """A bad argument or an unusable metrics file: printed as one line, exit 2."""


class RunFailed(BenchError):
    """A training run exited with an error (its log's tail is printed first): exit 1."""


def train_records(metrics: Path, *, skip: int = 1) -> list[dict]:
    """The "train" records of a metrics.jsonl by step, without the first `skip` (warm-up) windows."""
    if not metrics.is_file():
        raise BenchError(f"{metrics} not found: did the training run log anything?")
    records = []
    for i, line in enumerate(metrics.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            raise BenchError(f"{metrics}:{i}: not a JSON line") from None
        if rec.get("kind") == "train":
            if not isinstance(rec.get("videos_per_s"), (int, float)):
                raise BenchError(f"{metrics}:{i}: train record without a numeric videos_per_s")
            records.append(rec)
    records.sort(key=lambda r: r["step"])
    if len(records) <= skip:
        raise BenchError(f"{metrics}: {len(records)} train records, need more than the {skip} warm-up "
                         f"one(s): raise --steps or lower --log-every")
    return records[skip:]


@dataclass(frozen=True)
class Measurement:
    ranks: int
    per_rank: float  # videos/s of one rank: median global videos_per_s / ranks
    data_wait: float  # median fraction of the step time spent waiting for the loader (rank 0)


def measure(metrics: Path, ranks: int, *, skip: int = 1) -> Measurement:
    """Per-rank throughput of one run from its metrics.jsonl (see the module docstring)."""
    recs = train_records(metrics, skip=skip)
    rate = statistics.median(r["videos_per_s"] for r in recs)
    wait = statistics.median(float(r.get("data_wait", float("nan"))) for r in recs)
    return Measurement(ranks, rate / ranks, wait)


def efficiency(runs: list[Measurement], ranks: int, base: int) -> float:
    """median(per-rank videos/s at `ranks`) / median(at `base`)."""
    def med(n: int) -> float:
        values = [m.per_rank for m in runs if m.ranks == n]
        if not values:
            raise BenchError(f"no measurement at {n} ranks")
        return statistics.median(values)
    return med(ranks) / med(base)


def launch(data: Path, run_dir: Path, ranks: int, *, steps: int, log_every: int, preset: str) -> Path:
    """Train once under torchrun; returns RUN/metrics.jsonl. BenchError with the log's tail on failure."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}",
           "-m", "cmpl.train", "--preset", preset, "--data.root", str(data), "--run.dir", str(run_dir),
           f"--schedule.steps={steps}", f"--schedule.max_steps={steps}", f"--run.log_every={log_every}",
           f"--run.checkpoint_every={steps}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    (run_dir.parent / f"{run_dir.name}.log").write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
        print("\n".join(tail), file=sys.stderr)
        raise RunFailed(f"training at {ranks} ranks failed with exit code {done.returncode}: {' '.join(cmd)}")
    return run_dir / "metrics.jsonl"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.ddp", description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2], help="world sizes; the first is the base")
    p.add_argument("--steps", type=int, default=100, help="optimizer steps per run")
    p.add_argument("--log-every", type=int, default=20, help="steps per logged window (the first is skipped)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repetitions of every world size")
    p.add_argument("--preset", default="tiny")
    p.add_argument("--data", type=Path, help="dataset folder (default: a tiny generated one)")
    p.add_argument("--keep", type=Path, help="keep the run folders and logs here")
    args = p.parse_args(argv)
    try:
        if min(args.ranks) < 1 or args.repeats < 1 or args.log_every < 1:
            raise BenchError("--ranks, --repeats and --log-every must be at least 1")
        if args.steps < 2 * args.log_every:
            raise BenchError("--steps must be at least 2 x --log-every (the first window is warm-up)")
        if args.data is not None and not args.data.is_dir():
            raise BenchError(f"--data is not a folder: {args.data}")
        with tempfile.TemporaryDirectory(prefix="bench_ddp_") as tmp:
            work = args.keep or Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            data = args.data
            if data is None:
                from pipelines.testing import make_dataset

                data = make_dataset(work / "data", classes=("a", "b", "c", "d"), train_per_class=16,
                                    val_per_class=1, num_frames=48, labeled_per_class=8)
            runs = []
            for rep in range(args.repeats):
                for n in args.ranks:
                    metrics = launch(data, work / f"run_n{n}_r{rep}", n, steps=args.steps,
                                     log_every=args.log_every, preset=args.preset)
                    m = measure(metrics, n)
                    runs.append(m)
                    print(f"repeat {rep}: {n} ranks: {m.per_rank:.2f} videos/s per rank "
                          f"(data wait {m.data_wait:.0%})", flush=True)
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1 if isinstance(e, RunFailed) else 2
    base = args.ranks[0]
    print(f"\ncmpl.train --preset {args.preset}, {args.steps} steps, windows of {args.log_every} (first skipped), "
          f"{args.repeats} repeats, OMP_NUM_THREADS=1 per rank, {os.cpu_count()} CPUs")
    print("| ranks | videos/s per rank (median) | data wait (median) | per-rank efficiency vs "
          f"{base} rank{'s' if base > 1 else ''} |")
    print("|---:|---:|---:|---:|")
    for n in args.ranks:
        mine = [m for m in runs if m.ranks == n]
        print(f"| {n} | {statistics.median(m.per_rank for m in mine):.2f} | "
              f"{statistics.median(m.data_wait for m in mine):.0%} | {efficiency(runs, n, base):.2f} |")
    return 0


if __name__ == "__main__":
    from preprocess.entry import run_main

    run_main(main)
