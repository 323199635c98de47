"""Unlabeled-loader throughput: decode floor vs the DALI pipeline vs the PyAV/torchvision reference.

    python -m bench.loader [--data DIR] [--batches N] [--reps R] [--json OUT] [--rss-batches 1000]

Counts unlabeled samples/s (each sample = 4 clips: primary weak/strong, aux weak/strong) for
(a) the decode floor: the same DALI decoder on the same frames, nothing else;
(b) the full DALI pipeline (`pipelines.unlabeled_loader`, CPU backend here);
(c) the reference loader (PyAV + torchvision.transforms.v2, DataLoader with as many workers as DALI threads).
Without --data it writes a small synthetic dataset (preprocess.synthetic) into a temporary folder.
The loaders run interleaved (a b c a b c ...) so that load from other processes hits all of them alike; the
table gives medians, and CPU ms/sample (this process's threads, plus the reference's worker processes), which
is steadier than wall time on a shared machine.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil

from cmpl.atomic import write_json


def _tree(with_children: bool) -> list[psutil.Process]:
    proc = psutil.Process()
    return [proc] + (proc.children(recursive=True) if with_children else [])


def _rss_mib(with_children: bool = False) -> float:
    total = 0
    for p in _tree(with_children):
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def _cpu_s(with_children: bool) -> float:
    """User + system CPU seconds of this process (all threads) and, optionally, its live children."""
    total = 0.0
    for p in _tree(with_children):
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def _settle(timeout: float = 20.0) -> None:
    """Wait until this process tree is idle, so one loader's background prefetch is not billed to the next."""
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        c = _cpu_s(True)
        time.sleep(0.3)
        if _cpu_s(True) - c < 0.03:
            return


def _timed(it, n: int, warmup: int, with_children: bool = False) -> dict:
    """samples/s and CPU ms/sample over `n` batches after `warmup` (>= the prefetch depth) batches; peak RSS."""
    _settle()
    for _ in range(warmup):
        next(it)
    peak = _rss_mib(with_children)
    samples = 0
    c0, t0 = _cpu_s(with_children), time.perf_counter()
    for _ in range(n):
        b = next(it)
        samples += len(b["label"]) if isinstance(b, dict) else b
        peak = max(peak, _rss_mib(with_children))
    dt, cpu = time.perf_counter() - t0, _cpu_s(with_children) - c0
    return {"samples_per_s": samples / dt, "cpu_ms_per_sample": 1000 * cpu / samples, "seconds": dt,
            "batches": n, "peak_rss_mib": peak}


def _median(reps: list[dict]) -> dict:
    out = {k: float(np.median([r[k] for r in reps])) for k in ("samples_per_s", "cpu_ms_per_sample")}
    out["peak_rss_mib"] = max(r["peak_rss_mib"] for r in reps)
    out["reps"] = reps
    return out


def _decode_floor(plan, threads: int):
    """Yields batch sizes while the DALI decoder decodes exactly the frames the full pipeline would."""
    from pipelines import dali_pipelines as dp
    from pipelines import sampling

    state = {"epoch": 0, "pos": 0, "slots": plan.epoch_samples(0)}

    def source():
        if state["pos"] >= len(plan):
            state["epoch"] += 1
            state["pos"], state["slots"] = 0, plan.epoch_samples(state["epoch"])
        batch = plan.batch(state["epoch"], state["pos"], state["slots"])
        state["pos"] += 1
        unions = [sampling.union_positions(s.primary_indices, s.aux_indices)[0] for s in batch]
        return [np.fromfile(s.record.path, np.uint8) for s in batch], unions

    pipe = dp.decode_pipeline(source, device="cpu", batch_size=plan.batch_size, num_threads=threads, device_id=None,
                              exec_dynamic=True)
    pipe.build()
    while True:
        out = pipe.run()
        yield len(out[0])


def _dataset(data: str | None, tmp: str) -> Path:
    if data:
        return Path(data)
    out = Path(tmp) / "synthetic"
    cmd = [sys.executable, "-m", "preprocess.synthetic", "--out", str(out), "--classes", "10", "--per-class", "4",
           "--val-per-class", "1", "--frames", "96", "--width", "320", "--height", "256"]
    print("writing a synthetic dataset:", " ".join(cmd[1:]), file=sys.stderr)
    subprocess.run(cmd, check=True)
    return out


NAMES = {"a": "(a) decode floor", "b": "(b) DALI pipeline", "b0": "(b0) DALI, ra_ops=0",
         "c": "(c) reference (PyAV+tv2)"}
WARMUP = {"a": 3, "b": 3, "b0": 3, "c": 5}  # > prefetch depth: DALI queue 2; DataLoader 2 workers x 2


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="dataset folder (default: a generated synthetic one)")
    p.add_argument("--split", default="1pct_seed0")
    p.add_argument("--batches", type=int, default=20, help="timed batches per loader per repetition")
    p.add_argument("--reps", type=int, default=3, help="repetitions, interleaved a b c a b c ...; medians reported")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=2, help="DALI threads = reference DataLoader workers")
    p.add_argument("--crop-size", type=int, default=224)
    p.add_argument("--short-side", type=int, default=256)
    p.add_argument("--rss-batches", type=int, default=0, help="also run the DALI loader this long, sampling RSS")
    p.add_argument("--no-ra-variant", action="store_true", help="also time (b0): the DALI loader with ra_ops=0")
    p.add_argument("--skip", default="", help="comma list of a,b,c to skip")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)

    import pipelines
    from pipelines.reference import reference_loader

    with tempfile.TemporaryDirectory() as tmp:
        root = _dataset(args.data, tmp)
        kw = dict(split=args.split, batch_size=args.batch_size, crop_size=args.crop_size,
                  short_side=args.short_side)
        res: dict = {"config": {**kw, "threads": args.threads, "data": str(root), "cpus": os.cpu_count(),
                                "batches": args.batches, "reps": args.reps},
                     "loadavg_before": os.getloadavg()}
        skip = set(args.skip.split(","))
        iters: dict = {}
        t = time.perf_counter()
        dali = pipelines.unlabeled_loader(root, device="cpu", num_threads=args.threads, **kw)
        next(dali)
        res["dali_first_batch_s"] = time.perf_counter() - t  # includes building the graph
        if "a" not in skip:
            iters["a"] = _decode_floor(dali.plan, args.threads)
        if "b" not in skip:
            iters["b"] = dali
        if args.no_ra_variant:
            iters["b0"] = pipelines.unlabeled_loader(root, device="cpu", num_threads=args.threads, ra_ops=0, **kw)
        if "c" not in skip:
            iters["c"] = iter(reference_loader(root, labeled=False, num_workers=args.threads, **kw))
        reps: dict[str, list] = {k: [] for k in iters}
        for rep in range(args.reps):
            for k, it in iters.items():
                reps[k].append(_timed(it, args.batches, WARMUP[k], with_children=k == "c"))
                print(f"rep {rep}: {NAMES[k]:<26} {reps[k][-1]['samples_per_s']:8.2f} samples/s", file=sys.stderr)
        for k in reps:
            res[k] = _median(reps[k])
        iters.pop("c", None)  # stop the reference workers before the RSS run
        if args.rss_batches:
            rss = []
            for i in range(args.rss_batches):
                next(dali)
                if i % 50 == 0 or i == args.rss_batches - 1:
                    rss.append((i, _rss_mib()))
            after = [v for i, v in rss if i >= 100] or [rss[-1][1]]
            res["rss"] = {"batches": args.rss_batches, "samples": rss, "at_100_mib": after[0],
                          "max_after_100_mib": max(after), "growth_after_100_mib": rss[-1][1] - after[0]}
        res["loadavg_after"] = os.getloadavg()

    rate = {k: res[k]["samples_per_s"] for k in NAMES if k in res}
    if "b" in rate and "c" in rate:
        res["ratio_b_over_c"] = rate["b"] / rate["c"]
    if "b" in rate and "a" in rate:
        res["ratio_a_over_b"] = rate["a"] / rate["b"]
    print(f"{'loader':<28}{'samples/s':>12}{'CPU ms/sample':>15}{'peak RSS MiB':>14}")
    for k, name in NAMES.items():
        if k in res:
            r = res[k]
            print(f"{name:<28}{r['samples_per_s']:>12.2f}{r['cpu_ms_per_sample']:>15.1f}{r['peak_rss_mib']:>14.0f}")
    print(f"medians of {args.reps} interleaved repetitions x {args.batches} batches of {args.batch_size}; "
          f"load average {res['loadavg_before'][0]:.1f} -> {res['loadavg_after'][0]:.1f}")
    if "ratio_b_over_c" in res:
        print(f"(b)/(c) = {res['ratio_b_over_c']:.2f}  (target >= 2)")
    if "ratio_a_over_b" in res:
        print(f"(a)/(b) = {res['ratio_a_over_b']:.2f}  (target <= 1.3)")
    if "rss" in res:
        r = res["rss"]
        print(f"RSS over {r['batches']} DALI batches: {r['samples'][0][1]:.0f} MiB at batch 0, {r['at_100_mib']:.0f} "
              f"at 100, max {r['max_after_100_mib']:.0f} after, {r['samples'][-1][1]:.0f} at the end "
              f"(growth after batch 100: {r['growth_after_100_mib']:+.0f} MiB)")
    if args.json:
        write_json(args.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
