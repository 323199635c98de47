"""Unlabeled-loader throughput: decode floor vs the DALI pipeline vs the PyAV/torchvision reference.

    python -m bench.loader [--data DIR] [--batches N] [--json OUT] [--rss-batches 1000]

Counts unlabeled samples/s (each sample = 4 clips: primary weak/strong, aux weak/strong) for
(a) the decode floor: the same DALI decoder on the same frames, nothing else;
(b) the full DALI pipeline (`pipelines.unlabeled_loader`, CPU backend here);
(c) the reference loader (PyAV + torchvision.transforms.v2, DataLoader with as many workers as DALI threads).
Without --data it writes a small synthetic dataset (preprocess.synthetic) into a temporary folder.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil


def _rss_mib(with_children: bool = False) -> float:
    proc = psutil.Process()
    procs = [proc] + (proc.children(recursive=True) if with_children else [])
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def _timed(batches, n: int, warmup: int, with_children: bool = False) -> dict:
    """samples/s over `n` batches after `warmup` batches; peak RSS seen."""
    it = iter(batches)
    for _ in range(warmup):
        b = next(it)
    peak = _rss_mib(with_children)
    samples = 0
    t0 = time.perf_counter()
    for _ in range(n):
        b = next(it)
        samples += len(b["label"]) if isinstance(b, dict) else b
        peak = max(peak, _rss_mib(with_children))
    dt = time.perf_counter() - t0
    return {"samples_per_s": samples / dt, "seconds": dt, "batches": n, "peak_rss_mib": peak}


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

    pipe = dp.decode_pipeline(source, device="cpu", batch_size=plan.batch_size, num_threads=threads, device_id=None)
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="dataset folder (default: a generated synthetic one)")
    p.add_argument("--split", default="1pct_seed0")
    p.add_argument("--batches", type=int, default=20, help="timed batches per loader")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=2, help="DALI threads = reference DataLoader workers")
    p.add_argument("--crop-size", type=int, default=224)
    p.add_argument("--short-side", type=int, default=256)
    p.add_argument("--rss-batches", type=int, default=0, help="also run the DALI loader this long, sampling RSS")
    p.add_argument("--skip", default="", help="comma list of a,b,c to skip")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)

    import pipelines
    from pipelines.reference import reference_loader

    with tempfile.TemporaryDirectory() as tmp:
        root = _dataset(args.data, tmp)
        kw = dict(split=args.split, batch_size=args.batch_size, crop_size=args.crop_size,
                  short_side=args.short_side)
        res: dict = {"config": {**kw, "threads": args.threads, "data": str(root), "cpus": os.cpu_count()}}
        skip = set(args.skip.split(","))
        dali = None
        if "b" not in skip or args.rss_batches:
            t = time.perf_counter()
            dali = pipelines.unlabeled_loader(root, device="cpu", num_threads=args.threads, **kw)
            next(dali)
            res["dali_first_batch_s"] = time.perf_counter() - t  # includes building the graph
        if "a" not in skip:
            res["a_decode_floor"] = _timed(_decode_floor(dali.plan if dali else pipelines.unlabeled_loader(
                root, device="cpu", **kw).plan, args.threads), args.batches, args.warmup)
        if "b" not in skip:
            res["b_dali"] = _timed(dali, args.batches, args.warmup)
        if "c" not in skip:
            ref = reference_loader(root, labeled=False, num_workers=args.threads, **kw)
            res["c_reference"] = _timed(ref, args.batches, args.warmup, with_children=True)
        if args.rss_batches:
            rss = []
            for i in range(args.rss_batches):
                next(dali)
                if i % 50 == 0 or i == args.rss_batches - 1:
                    rss.append((i, _rss_mib()))
            res["rss"] = {"batches": args.rss_batches, "samples": rss,
                          "growth_mib": rss[-1][1] - rss[min(1, len(rss) - 1)][1]}

    rate = {k: res[k]["samples_per_s"] for k in ("a_decode_floor", "b_dali", "c_reference") if k in res}
    if "b_dali" in rate and "c_reference" in rate:
        res["ratio_b_over_c"] = rate["b_dali"] / rate["c_reference"]
    if "b_dali" in rate and "a_decode_floor" in rate:
        res["ratio_a_over_b"] = rate["a_decode_floor"] / rate["b_dali"]
    print(f"{'loader':<28}{'samples/s':>12}{'peak RSS MiB':>14}")
    for k, name in (("a_decode_floor", "(a) decode floor"), ("b_dali", "(b) DALI pipeline"),
                    ("c_reference", "(c) reference (PyAV+tv2)")):
        if k in res:
            print(f"{name:<28}{res[k]['samples_per_s']:>12.2f}{res[k]['peak_rss_mib']:>14.0f}")
    if "ratio_b_over_c" in res:
        print(f"(b)/(c) = {res['ratio_b_over_c']:.2f}  (target >= 2)")
    if "ratio_a_over_b" in res:
        print(f"(a)/(b) = {res['ratio_a_over_b']:.2f}  (target <= 1.3)")
    if "rss" in res:
        print(f"RSS over {args.rss_batches} DALI batches: {res['rss']['samples'][0][1]:.0f} -> "
              f"{res['rss']['samples'][-1][1]:.0f} MiB (growth after batch 50: {res['rss']['growth_mib']:+.0f} MiB)")
    if args.json:
        tmp_out = Path(args.json).with_suffix(".tmp")
        tmp_out.write_text(json.dumps(res, indent=2))
        os.replace(tmp_out, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
