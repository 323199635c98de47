"""A grid of methods x splits x seeds on any dataset folder: train, evaluate (the preset's test views), report.

    python -m cmpl.study --data data/digits --splits 1pct 10pct all --seeds 0 1 2   # -> results/study_digits/
    python -m cmpl.study --data data/synthetic --out results/ladder --grid ladder --jobs 2
    python -m cmpl.study --data data/digits --grid ladder --variants fixmatch aux_rates cmpl   # some rows
    python -m cmpl.study --data DIR --out OUT --methods cmpl fixmatch --schedule.steps=300   # any override
    python -m cmpl.study --data data/synthetic --preset demo --splits 1pct     # the old synthetic sets' preset

The default preset is `digits`, the small-data recipe (cmpl/presets.py); class count, frames, fps and sizes
come from the dataset folder. With optim.ema_decay > 0 (the recipe) F's EMA weights are evaluated too.

Each (variant, split, seed) job runs, as separate processes (argument lists, no shell):
    python -m cmpl.train --preset PRESET --data.root DATA --run.dir RUNS/<variant>_<split>_seed<S>
                         --method.name=M --data.split=<split>_seed<S> --runtime.seed=S <variant and user overrides>
    python -m cmpl.evaluate --checkpoint RUN/checkpoints/last.pt --network primary|aux --out RUN/eval*.json
The final weights (last.pt) are evaluated, never best.pt: best.pt is picked on the val set reported here.

Grids (`--grid`): `table1` = supervised / FixMatch / CMPL (the paper's Table 1 rows); `ladder` = the paper's
Table 2 (FixMatch -> + the auxiliary network on the same clip -> + its own frame rate -> + time offset) with
Table 3's weight-shared "Primary" auxiliary (one network fed both clips, with and without the offset);
`table6` = CMPL without L_s^A and/or L_u^A; `recipe` = supervised, FixMatch, then FixMatch with one key of the
small-data recipe put back at a time. Split `all` labels every training video: the supervised ceiling row
(SSL methods need unlabeled videos and are not run on it). Class count, frames, fps and resolution come from the dataset folder.

Rerunning resumes: a finished training (RUN/study.json) is skipped, an interrupted one resumes from last.pt,
an existing eval JSON is kept. Output: OUT/results.json and OUT/README.md (tables, paired differences with
95% intervals across splits, sentences computed from those numbers, F's per-class top-1, the rows against
chance, plots).
Bad input (unknown split, method or grid, an empty split) -> one line on stderr, exit 2, nothing written.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from cmpl import registry
from cmpl.cli import DEFAULT_PRESET  # "digits", the small-data recipe: sizes and classes come from --data
from cmpl.atomic import write_json

STATE_FILE = "study.json"
EMA_SUFFIX = "_ema"  # an evaluation of a network's EMA weights: "primary_ema"
SPLIT_ALL = "all"  # pipelines.dataset.ALL_LABELED


class StudyError(Exception):
    """A step of a study failed, or its input is bad; the message is one line (plus a log tail)."""


@dataclass(frozen=True)
class Variant:
    """One row of a grid: a method plus the overrides that make the row (e.g. a shared auxiliary)."""

    name: str
    method: str
    overrides: tuple[str, ...] = ()
    title: str = ""


GRIDS: dict[str, tuple[Variant, ...]] = {
    "table1": tuple(Variant(m, m, (), spec.title) for m, spec in registry.METHODS.items()),
    # Paper Table 2, plus Table 3's "Primary" (weight-shared) auxiliary. "{offset}" is the preset's
    # data.time_offset (the rows without temporal-location augmentation set it to 0).
    "ladder": (
        Variant("fixmatch", "fixmatch", (), "FixMatch"),
        Variant("shared_rates", "cmpl", ("--model.aux_shared=true", "--data.time_offset=0"),
                "+ frame rates, weight-shared aux (Table 3 'Primary' 16f)"),
        Variant("shared_rates_offset", "cmpl", ("--model.aux_shared=true",),
                "+ frame rates + time offset, weight-shared aux"),
        Variant("aux_same_clip", "cmpl", ("--data.aux={primary}", "--data.time_offset=0"),
                "+ auxiliary network, same clip"),
        Variant("aux_rates", "cmpl", ("--data.time_offset=0",), "+ auxiliary network + frame rates"),
        # The full method: the same run as table1's "cmpl" row, so a shared --runs folder trains it once.
        Variant("cmpl", "cmpl", (), "+ auxiliary network + frame rates + time offset (CMPL)"),
    ),
    # Paper Table 6: which of A's losses CMPL keeps.
    "table6": (
        Variant("cmpl", "cmpl", (), "CMPL (L_s^A and L_u^A)"),
        Variant("no_aux_sup", "cmpl", ("--method.aux_supervised=false",), "without L_s^A"),
        Variant("no_aux_unsup", "cmpl", ("--method.aux_unsupervised=false",), "without L_u^A"),
        Variant("no_aux_losses", "cmpl", ("--method.aux_supervised=false", "--method.aux_unsupervised=false"),
                "without L_s^A and L_u^A (A a fixed-by-init teacher)"),
    ),
    # The small-data recipe of the `digits` preset, one change at a time: each row puts one key back to the
    # value the earlier presets used, on FixMatch (the first row, the recipe itself, is table1's run).
    "recipe": (
        Variant("supervised", "supervised", (), "supervised"),
        Variant("fixmatch", "fixmatch", (), "FixMatch, the recipe"),
        Variant("weak_dropout", "fixmatch", ("--method.weak_forward=train",), "weak forward with dropout"),
        Variant("mu1", "fixmatch", ("--data.unlabeled_batch={labeled_batch}",), "mu = 1 (B_u = B_l)"),
        Variant("plain_sgd", "fixmatch", ("--optim.nesterov=false", "--optim.decay_norm_and_bias=true"),
                "no Nesterov, weight decay on BN and biases"),
        Variant("far_strong", "fixmatch", ("--data.strong_jitter=1", "--data.ra_translate=0.4464"),
                "strong crop anywhere, RandAugment shift up to 0.45"),
        Variant("imagenet_stem", "fixmatch", ("--model.stem=imagenet",), "ImageNet stem (7x7 stride 2 + pool)"),
    ),
}


@dataclass(frozen=True)
class Job:
    variant: Variant
    split: str  # split name without the seed: 1pct, 10pct, all
    seed: int
    run_dir: Path
    extra: tuple[str, ...] = field(default=())  # user overrides, passed to every run
    ema: bool = False  # the runs keep an EMA of the weights (optim.ema_decay > 0): F's EMA is evaluated too

    @property
    def method(self) -> str:
        return self.variant.method

    @property
    def split_file(self) -> str:
        return SPLIT_ALL if self.split == SPLIT_ALL else f"{self.split}_seed{self.seed}"

    @property
    def networks(self) -> tuple[str, ...]:
        return registry.method(self.method).roles

    @property
    def evaluations(self) -> tuple[str, ...]:
        """What is evaluated: each network's raw weights, and "primary_ema" (F's EMA weights) with `ema`."""
        return self.networks + (("primary" + EMA_SUFFIX,) if self.ema else ())

    def eval_json(self, evaluation: str) -> Path:
        network = evaluation.removesuffix(EMA_SUFFIX)
        return self.run_dir / registry.role(network).eval_name(ema=evaluation != network)


def _python(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def train_command(job: Job, data: Path, preset: str, max_steps: int | None = None) -> list[str]:
    """The trainer command of one job (argument list, no shell)."""
    cmd = _python("cmpl.train", "--preset", preset, "--data.root", str(data), "--run.dir", str(job.run_dir),
                  f"--method.name={job.method}", f"--data.split={job.split_file}", f"--runtime.seed={job.seed}",
                  *job.variant.overrides, *job.extra)
    if max_steps is not None:
        cmd.append(f"--schedule.max_steps={max_steps}")
    return cmd


def eval_command(job: Job, evaluation: str, views: Sequence[str]) -> list[str]:
    """The multi-view evaluation of one network (or its EMA, "primary_ema") of a finished job; `views`:
    eval_clips/crops overrides."""
    network = evaluation.removesuffix(EMA_SUFFIX)
    weights = ("--weights", "ema") if evaluation != network else ()
    return _python("cmpl.evaluate", "--checkpoint", str(job.run_dir / "checkpoints" / "last.pt"),
                   "--network", network, *weights, "--out", str(job.eval_json(evaluation)), *views)


def children_cpu() -> float:
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
        out = fh if quiet else None
        rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT if quiet else None, check=False,
                            env=env).returncode
    if rc != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:]) if quiet else ""
        raise StudyError(f"command failed (exit {rc}): {shlex.join(cmd)}\n{tail}(log: {log})")
    return time.monotonic() - start


def fmt_seconds(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s"


def resolved_config(cmd: list[str]):
    """The config a trainer command runs with (preset + overrides)."""
    from cmpl import cli

    cfg, _ = cli.resolve(cmd[3:])  # cmd = [python, -m, cmpl.train, ...]
    return cfg


def config_digest(cmd: list[str]) -> str:
    """SHA-256 of the resolved config a trainer command runs with, as TOML."""
    from cmpl.config import dumps

    return hashlib.sha256(dumps(resolved_config(cmd)).encode()).hexdigest()


def trained_with(run_dir: Path, cmd: list[str]) -> bool:
    """Whether RUN/config.toml (what the trainer ran with; keys added to cmpl since then read as their
    defaults) is the config `cmd` resolves to: a new key at its default leaves earlier runs valid."""
    from cmpl import config

    saved = run_dir / "config.toml"
    if not saved.is_file():
        return False
    try:
        ran = config.load(saved)
    except config.ConfigError:
        return False
    want = resolved_config(cmd)
    if want.model.num_classes <= 0:  # the trainer saves the class count it read from the folder
        ran = config.apply_overrides(ran, [("model.num_classes", str(want.model.num_classes))])
    return ran == want


@dataclass
class JobResult:
    job: Job
    evals: dict[str, dict]  # network -> eval JSON
    train_s: float
    eval_s: float
    worked: bool  # whether anything ran (False: all of it was done earlier)


def run_job(job: Job, *, data: Path, preset: str, views: Sequence[str], quiet: bool,
            max_steps: int | None = None, state_file: str = STATE_FILE) -> JobResult:
    """Train (or resume, or skip) and evaluate one job."""
    path = job.run_dir / state_file
    state = json.loads(path.read_text()) if path.is_file() else {}
    cmd = train_command(job, data, preset, max_steps)
    log = job.run_dir / f"{Path(state_file).stem}.log"
    digest, worked = config_digest(cmd), False
    if state.get("config_sha256") not in (None, digest) and trained_with(job.run_dir, cmd):
        state["config_sha256"] = digest  # the same run; its digest differed only by keys added since
        write_json(path, state)
    if state.get("config_sha256") not in (None, digest):
        raise StudyError(f"{job.run_dir} was trained with another config (the preset or the command changed "
                         f"since); delete it (rm -r {job.run_dir}) or give another --runs folder")
    if not state.get("trained"):
        print("train:", shlex.join(cmd), flush=True)
        # Recorded before training, so a rerun after a kill knows what the resumed run was started with.
        state.update(train_command=cmd[1:], config_sha256=digest)
        write_json(path, state)
        state["train_s"] = state.get("train_s", 0.0) + run_logged(cmd, log, quiet)
        state["trained"], worked = True, True
        write_json(path, state)
    else:
        print(f"train: done earlier ({fmt_seconds(state['train_s'])}), skipped", flush=True)
    evals = state.setdefault("eval_s", {})
    for network in job.evaluations:
        if job.eval_json(network).is_file():
            print(f"eval {network}: {job.eval_json(network)} exists, skipped", flush=True)
            continue
        ecmd = eval_command(job, network, views)
        print(f"eval {network}:", shlex.join(ecmd), flush=True)
        evals[network] = run_logged(ecmd, log, quiet)
        write_json(path, state)
        worked = True
    results = {n: json.loads(job.eval_json(n).read_text()) for n in job.evaluations}
    return JobResult(job, results, float(state["train_s"]), float(sum(evals.values())), worked)


def plan_jobs(*, data: Path, runs: Path, variants: Sequence[Variant], splits: Sequence[str], seeds: Sequence[int],
              extra: Sequence[str] = (), ema: bool = False) -> list[Job]:
    """The grid's jobs in run order; checks every split file first (one-line StudyError otherwise)."""
    from pipelines.dataset import DatasetError, read_split

    jobs = []
    for split in splits:
        for seed in seeds:
            for v in variants:
                if split == SPLIT_ALL and registry.method(v.method).uses_unlabeled:
                    continue  # every video is labeled: nothing for pseudo-labels
                job = Job(v, split, seed, runs / f"{v.name}_{split}_seed{seed}", tuple(extra), ema)
                try:
                    labeled, _ = read_split(data, job.split_file)
                except DatasetError as e:
                    raise StudyError(str(e)) from None
                if not labeled:
                    raise StudyError(f"{data}/splits/{job.split_file}.txt: the split labels no videos")
                jobs.append(job)
    if not jobs:
        raise StudyError("the grid has no jobs (split 'all' runs only methods without unlabeled data)")
    return jobs


def default_jobs(device: str) -> int:
    """Runs at once without --jobs. On a CPU a run keeps about 1.5 cores busy (one torch thread, one DALI
    thread that waits part of the time), so one run per core fills the machine; more than 4 would only
    multiply the memory. On a GPU one run at a time owns the device."""
    from pipelines.device import resolve_device

    if resolve_device(device) == "cuda":
        return 1
    return max(1, min(4, len(os.sched_getaffinity(0))))


def run_jobs(jobs: Sequence[Job], *, workers: int, **kwargs) -> list[JobResult]:
    """Run the jobs, `workers` at a time, in grid order; the first failure stops the rest."""
    done = [0]
    start = time.monotonic()

    def one(job: Job) -> JobResult:
        print(f"\n=== {job.run_dir.name} (elapsed {fmt_seconds(time.monotonic() - start)}) ===", flush=True)
        res = run_job(job, **kwargs)
        done[0] += 1
        f1 = res.evals["primary"]["top1"] * 100
        print(f"[{done[0]}/{len(jobs)}] {job.run_dir.name}: top-1 F {f1:.1f}%", flush=True)
        return res

    return map_in_order(one, jobs, workers)


def map_in_order(fn, items: Sequence, workers: int) -> list:
    """`fn` over `items`, `workers` at a time, results in input order. The first failure (or Ctrl-C) cancels
    the items not started yet: a broken setup fails once, not once per job."""
    if workers <= 1:
        return [fn(i) for i in items]
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(fn, i) for i in items]
        try:
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise


def resolve_variants(grid: str, methods: Sequence[str] | None, preset: str,
                     names: Sequence[str] | None = None) -> list[Variant]:
    """The grid's rows (filtered by `methods` and row `names`), with `{primary}` filled from the preset's F
    clip."""
    from cmpl import presets
    from cmpl.config import ConfigError

    if grid not in GRIDS:
        raise StudyError(f"unknown grid {grid!r}; valid grids: {', '.join(GRIDS)}")
    for m in methods or ():
        if m not in registry.METHODS:
            raise StudyError(f"unknown method {m!r}; valid methods: {', '.join(registry.METHODS)}")
    rows = [v.name for v in GRIDS[grid]]
    for n in names or ():
        if n not in rows:
            raise StudyError(f"grid {grid!r} has no row {n!r}; its rows: {', '.join(rows)}")
    try:
        data = presets.get(preset).data
    except ConfigError as e:  # unknown preset
        raise StudyError(str(e)) from None
    fill = {"{primary}": f"{data.primary[0]},{data.primary[1]}", "{labeled_batch}": str(data.labeled_batch)}

    def filled(option: str) -> str:
        for key, value in fill.items():
            option = option.replace(key, value)
        return option

    return [Variant(v.name, v.method, tuple(filled(o) for o in v.overrides), v.title)
            for v in GRIDS[grid] if (not methods or v.method in methods) and (not names or v.name in names)]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, like every other bad input
        self.exit(2, f"error: {message} (see python -m cmpl.study --help)\n")


def parse_args(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    p = _Parser(prog="python -m cmpl.study", description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="dataset folder (docs/ARCHITECTURE.md section 1)")
    p.add_argument("--out", type=Path, default=None,
                   help="results folder (results.json, README.md, plots); default results/study_<DATA's name>")
    p.add_argument("--runs", type=Path, default=None, help="run folders (default OUT/runs)")
    p.add_argument("--grid", default="table1", help=f"one of {', '.join(GRIDS)} (default table1)")
    p.add_argument("--methods", nargs="+", default=None, help="only these methods' rows")
    p.add_argument("--variants", nargs="+", default=None, help="only these rows of the grid (by name)")
    p.add_argument("--splits", nargs="+", default=["1pct"], help="split names in DATA/splits (+ 'all')")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="split and training seeds")
    p.add_argument("--jobs", type=int, default=None,
                   help="runs in parallel (processes); default: one per core up to 4 on a CPU, 1 on a GPU")
    p.add_argument("--preset", default=DEFAULT_PRESET,
                   help=f"cmpl preset of every run (default {DEFAULT_PRESET}: the small-data recipe)")
    p.add_argument("--quiet", action="store_true", help="trainer output to RUN/study.log only")
    args, rest = p.parse_known_args(argv)
    if args.out is None:
        args.out = Path("results") / f"study_{args.data.resolve().name}"
    return args, rest


def main(argv: Sequence[str] | None = None) -> int:
    from cmpl.analysis.study_report import write_report

    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, overrides = parse_args(argv)
    except SystemExit as e:  # argparse: usage error (it printed why) or --help
        return int(e.code or 0)
    started, cpu0 = time.monotonic(), children_cpu()
    try:
        bad = [o for o in overrides if not (o.startswith("--") and "." in o.split("=")[0])]
        if bad:
            raise StudyError(f"unknown argument {bad[0]!r}; overrides look like --section.key=value")
        from cmpl import cli, config

        try:  # check the overrides against the config before anything runs
            cfg, _ = cli.resolve(["--preset", args.preset, *overrides])
        except config.ConfigError as e:
            raise StudyError(str(e)) from None
        if args.jobs is None:
            args.jobs = default_jobs(cfg.data.device)
        if args.jobs < 1:
            raise StudyError(f"--jobs must be >= 1, got {args.jobs}")
        if not (args.data / "train.csv").is_file():
            raise StudyError(f"{args.data}: not a dataset folder (no train.csv)")
        variants = resolve_variants(args.grid, args.methods, args.preset, args.variants)
        jobs = plan_jobs(data=args.data, runs=args.runs or args.out / "runs", variants=variants,
                         splits=args.splits, seeds=args.seeds, extra=overrides, ema=cfg.optim.ema_decay > 0)
    except StudyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        # The test views are the preset's (data.eval_clips x data.eval_crops), as in cmpl.evaluate.
        results = run_jobs(jobs, workers=args.jobs, data=args.data, preset=args.preset, quiet=args.quiet, views=())
    except StudyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    from pipelines.dataset import read_classes, read_subset

    command = shlex.join(["python", "-m", "cmpl.study", *argv])
    readme = write_report(results, out=args.out, variants=variants, context={
        "command": command, "wall_time": fmt_seconds(time.monotonic() - started),
        "cpu_time": fmt_seconds(children_cpu() - cpu0), "data": str(args.data), "preset": args.preset,
        "views": f"{cfg.data.eval_clips} clips x {cfg.data.eval_crops} crops",
        "classes": len(read_classes(args.data)), "test_videos": len(read_subset(args.data, "val"))})
    print(f"\nwrote {args.out / 'results.json'} and {readme}")
    return 0


if __name__ == "__main__":
    from preprocess.entry import run_main

    run_main(main)
