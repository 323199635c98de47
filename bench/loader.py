"""Unlabeled-loader throughput: decode floor vs the DALI pipeline vs what a user would write instead.

    python -m bench.loader [--data DIR ...] [--batches N] [--reps R] [--json OUT] [--rss-batches 1000]
    python -m bench.loader --data DIR --short-side 256 --crop-size 224 --batches 8   # 320x256 frames, (a)-(d)
    python -m bench.loader --data DIR --skip a,b                                     # (c) vs (d) only, no DALI
    python -m bench.loader --frames 250 300 --time-offset 10 --whole-file-floor --position-reps 5   # issue 21

Counts unlabeled samples/s (each sample = 4 clips: primary weak/strong, aux weak/strong) for
(a) the decode floor: the same DALI decoder on the same input and frames, nothing else;
(b) the full DALI pipeline (`pipelines.unlabeled_loader`, CPU backend here);
(c) the reference loader: PyAV + torchvision.transforms.v2 in a DataLoader with as many workers as DALI threads;
(d) the same with torchcodec decoding (`VideoDecoder(path).get_frames_at(indices)`, CPU), PyTorch's own decoder:
    skipped, with one line saying what to install, where torchcodec or its FFmpeg libraries are absent;
and, on request, (a0) the decode floor fed whole files (as the loaders did before issue 21: DALI then decodes
every frame from the first one) and (b0) the DALI pipeline without RandAugment.
(c) and (d) share every transform (pipelines/reference.py) and read the same frames with the same crops,
flips and Cutout as (b); RandAugment is torchvision's in both.
Without --data it writes synthetic datasets (preprocess.synthetic, 320x256 VP9, GOP 16, at --short-side), one
per --frames length, into a temporary folder, and runs everything on each in turn.
The loaders run interleaved (a b c d a b c d ...) so that load from other processes hits all of them alike;
the table gives medians, and CPU ms/sample (this process's threads, plus the loader's own worker processes),
which is steadier than wall time on a shared machine. --position-reps adds the DALI decode cost of one clip at
the start against one at the end of the videos (`position_costs`).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import psutil

from cmpl.atomic import write_json
from pipelines.sampling import ClipSpec


def _tree(workers: Iterable[psutil.Process] | None) -> list[psutil.Process]:
    """This process and `workers`; None: and all its live descendants."""
    proc = psutil.Process()
    return [proc] + (proc.children(recursive=True) if workers is None else list(workers))


def _rss_mib(workers: Iterable[psutil.Process] | None = ()) -> float:
    total = 0
    for p in _tree(workers):
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def cpu_seconds(workers: Iterable[psutil.Process] | None = ()) -> float:
    """User + system CPU seconds of this process (all threads) and `workers` (None: all live children)."""
    total = 0.0
    for p in _tree(workers):
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
        c = cpu_seconds(None)
        time.sleep(0.3)
        if cpu_seconds(None) - c < 0.03:
            return


def start_workers(loader: Iterable) -> tuple[Iterator, list[psutil.Process]]:
    """Start a DataLoader-style iterable (one batch) and return its iterator and the worker processes it forked,
    so that its CPU time is billed to it alone when several such loaders are alive."""
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    it = iter(loader)
    next(it)
    return it, [p for p in psutil.Process().children(recursive=True) if p.pid not in before]


def timed(it: Iterator, n: int, warmup: int, workers: Iterable[psutil.Process] = ()) -> dict:
    """samples/s and CPU ms/sample over `n` batches after `warmup` (>= the prefetch depth) batches; peak RSS.

    `it` yields batch dicts (samples = len of "label") or batch sizes; `workers`: its worker processes.
    """
    workers = list(workers)
    _settle()
    for _ in range(warmup):
        next(it)
    peak = _rss_mib(workers)
    samples = 0
    c0, t0 = cpu_seconds(workers), time.perf_counter()
    for _ in range(n):
        b = next(it)
        samples += len(b["label"]) if isinstance(b, dict) else b
        peak = max(peak, _rss_mib(workers))
    dt, cpu = time.perf_counter() - t0, cpu_seconds(workers) - c0
    return {"samples_per_s": samples / dt, "cpu_ms_per_sample": 1000 * cpu / samples, "seconds": dt,
            "batches": n, "peak_rss_mib": peak}


def medians(reps: list[dict]) -> dict:
    out = {k: float(np.median([r[k] for r in reps])) for k in ("samples_per_s", "cpu_ms_per_sample")}
    out["peak_rss_mib"] = max(r["peak_rss_mib"] for r in reps)
    out["reps"] = reps
    return out


def _inputs(samples, cut: bool) -> tuple[list, list]:
    """The decoder's inputs for these samples: as the loaders pack them (cut to the needed GOPs,
    dali_pipelines.encoded_input), or, with `cut` False, whole files and file frame indices (before issue 21)."""
    from pipelines import dali_pipelines as dp
    from pipelines import sampling

    encoded, frames = [], []
    for s in samples:
        union = sampling.union_positions(s.primary_indices, s.aux_indices)[0]
        data = np.fromfile(s.record.path, np.uint8)
        e, f = dp.encoded_input(data, union, s.record.num_frames) if cut else (data, union)
        encoded.append(e)
        frames.append(f)
    return encoded, frames


def decode_floor(plan, threads: int, cut: bool = True) -> Iterator[int]:
    """Yields batch sizes while the DALI decoder decodes exactly the frames the full pipeline would, from the
    same input (`cut` False: from the whole files, as the loaders did before issue 21)."""
    from pipelines import dali_pipelines as dp

    state = {"epoch": 0, "pos": 0, "slots": plan.epoch_samples(0)}

    def source():
        if state["pos"] >= len(plan):
            state["epoch"] += 1
            state["pos"], state["slots"] = 0, plan.epoch_samples(state["epoch"])
        batch = plan.batch(state["epoch"], state["pos"], state["slots"])
        state["pos"] += 1
        return _inputs(batch, cut)

    pipe = dp.decode_pipeline(source, device="cpu", batch_size=plan.batch_size, num_threads=threads, device_id=None,
                              exec_dynamic=True)
    pipe.build()
    while True:
        out = pipe.run()
        yield len(out[0])


def position_costs(records, *, frames: int = 8, stride: int = 8, reps: int = 5, threads: int = 1) -> dict:
    """CPU ms per clip for DALI's CPU decoder to return one clip (`frames` at `stride`, F's by default) of each
    video at its start (frame 0) and at its end (the last start that fits), from whole files (before issue 21)
    and from the input the loaders now give it; and, for the latter, the mean over every start in the first
    GOP against every start in the last GOP's worth of starts (the end clip's position inside its GOP decides
    how many frames before it must be decoded). One pipeline, `threads` DALI threads, one batch = the
    videos; configurations interleaved `reps` times; medians."""
    from pipelines import dali_pipelines as dp
    from pipelines import sampling, webm

    n = min(r.num_frames for r in records)
    window = frames * stride
    last = n - window
    if last < 0:
        raise ValueError(f"videos of {n} frames are shorter than a {frames}x{stride} clip")
    lay = webm.layout(np.fromfile(records[0].path, np.uint8))
    keys = np.flatnonzero(lay.key)
    gop = int(keys[1] - keys[0]) if len(keys) > 1 else n
    whole = [np.fromfile(r.path, np.uint8) for r in records]
    cur: dict = {}

    def source():
        return cur["encoded"], cur["frames"]

    pipe = dp.decode_pipeline(source, device="cpu", batch_size=len(records), num_threads=threads, device_id=None,
                              exec_dynamic=True, prefetch_queue_depth=1)
    pipe.build()

    def inputs(start: int, cut: bool):
        idx = sampling.clip_indices(start, frames, stride, n).astype(np.int32)
        if not cut:
            return whole, [idx] * len(records)
        pairs = [dp.encoded_input(d, idx, r.num_frames) for d, r in zip(whole, records)]
        return [e for e, _ in pairs], [f for _, f in pairs]

    configs = {("whole", "start"): inputs(0, False), ("whole", "end"): inputs(last, False),
               ("cut", "start"): inputs(0, True), ("cut", "end"): inputs(last, True)}
    for s in range(min(gop, last + 1)):
        configs[("cut", f"first+{s}")] = inputs(s, True)
        configs[("cut", f"last-{s}")] = inputs(last - s, True)
    times: dict = {k: [] for k in configs}
    for rep in range(reps + 1):  # the first round warms up
        for k, (enc, fr) in configs.items():
            cur["encoded"], cur["frames"] = enc, fr
            c0 = time.process_time()  # all threads of this process, at ns resolution (psutil's: clock ticks)
            pipe.run()
            if rep:
                times[k].append(1000 * (time.process_time() - c0) / len(records))
    med = {k: float(np.median(v)) for k, v in times.items()}
    firsts = [v for (m, w), v in med.items() if w.startswith("first+")]
    lasts = [v for (m, w), v in med.items() if w.startswith("last-")]
    out = {"frames_per_video": n, "clip": [frames, stride], "end_start": last, "gop": gop, "videos": len(records),
           "whole": {"start": med[("whole", "start")], "end": med[("whole", "end")]},
           "cut": {"start": med[("cut", "start")], "end": med[("cut", "end")],
                   "first_gop_mean": float(np.mean(firsts)), "last_gop_mean": float(np.mean(lasts))}}
    for m in ("whole", "cut"):
        out[m]["end_over_start"] = out[m]["end"] / max(out[m]["start"], 1e-9)
    out["cut"]["last_over_first_gop"] = out["cut"]["last_gop_mean"] / max(out["cut"]["first_gop_mean"], 1e-9)
    return out


def print_position(pos: dict) -> None:
    w, c = pos["whole"], pos["cut"]
    f, s = pos["clip"]
    print(f"DALI decode of one {f}x{s} clip, CPU ms/clip ({pos['videos']} videos of {pos['frames_per_video']} frames, "
          f"GOP {pos['gop']}, 1 DALI thread, medians): start = frame 0, end = frame {pos['end_start']}")
    print(f"  whole file (before issue 21): start {w['start']:6.1f}  end {w['end']:6.1f}  end/start "
          f"{w['end_over_start']:.2f}")
    print(f"  cut to the needed GOPs:       start {c['start']:6.1f}  end {c['end']:6.1f}  end/start "
          f"{c['end_over_start']:.2f}  (target <= 1.3)")
    print(f"  cut, mean over the {pos['gop']} first / last starts: {c['first_gop_mean']:6.1f} / "
          f"{c['last_gop_mean']:6.1f}  ratio {c['last_over_first_gop']:.2f}")


def _dataset(data: str | None, tmp: str, frames: int, short_side: int, per_class: int) -> Path:
    if data:
        return Path(data)
    out = Path(tmp) / f"synthetic{frames}"
    cmd = [sys.executable, "-m", "preprocess.synthetic", "--out", str(out), "--classes", "10", "--per-class",
           str(per_class), "--val-per-class", "0", "--frames", str(frames), "--width", "320", "--height", "256",
           "--short-side", str(short_side)]
    print("writing a synthetic dataset:", " ".join(cmd[1:]), file=sys.stderr)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return out


NAMES = {"a0": "(a0) decode, whole files", "a": "(a) decode floor", "b": "(b) DALI pipeline",
         "b0": "(b0) DALI, ra_ops=0", "c": "(c) reference (PyAV+tv2)", "d": "(d) torchcodec+tv2"}
WARMUP = {"a0": 3, "a": 3, "b": 3, "b0": 3, "c": 5, "d": 5}  # > prefetch depth: DALI queue 2; DataLoader 2x2
RATIOS = (("b", "c", "target >= 2"), ("b", "d", "DALI over torchcodec, target >= 2"),
          ("c", "d", "PyAV over torchcodec"), ("a", "b", "decode floor over pipeline, target <= 1.3"),
          ("a", "a0", "decode, cut over whole files"))


def ratios(res: dict) -> dict[str, float]:
    """Speed ratios of RATIOS, for the loaders present in `res`: "x_over_y" in samples/s, and "x_over_y_cpu"
    in CPU ms/sample (y's over x's). The second is the fairer one on a loaded machine, where a loader with more
    busy threads (PyAV's frame threads, DALI's pool) gets a larger share of the cores than a single-threaded one.
    """
    out = {}
    for x, y, _ in RATIOS:
        if x in res and y in res:
            out[f"{x}_over_{y}"] = res[x]["samples_per_s"] / res[y]["samples_per_s"]
            if res[x]["cpu_ms_per_sample"] > 0:  # 0 only in runs shorter than a CPU-clock tick
                out[f"{x}_over_{y}_cpu"] = res[y]["cpu_ms_per_sample"] / res[x]["cpu_ms_per_sample"]
    return out


def run(root: Path, args: argparse.Namespace, skip: set[str]) -> dict:
    """Every loader of `args` on one dataset folder, interleaved; the results dict of that dataset."""
    import pipelines
    from pipelines.reference import reference_loader

    spec = ClipSpec(crop_size=args.crop_size, short_side=args.short_side, time_offset=args.time_offset)
    kw = dict(split=args.split, batch_size=args.batch_size, spec=spec)
    res: dict = {"config": {"split": args.split, "batch_size": args.batch_size, "crop_size": args.crop_size,
                            "short_side": args.short_side, "time_offset": args.time_offset, "threads": args.threads,
                            "data": str(root), "cpus": os.cpu_count(), "batches": args.batches, "reps": args.reps},
                 "loadavg_before": os.getloadavg()}
    iters: dict = {}
    workers: dict[str, list[psutil.Process]] = {}
    dali = None
    if {"a", "a0", "b"} - skip or args.rss_batches:
        t = time.perf_counter()
        dali = pipelines.unlabeled_loader(root, device="cpu", num_threads=args.threads, **kw)
        next(dali)
        res["dali_first_batch_s"] = time.perf_counter() - t  # includes building the graph
    if args.whole_file_floor:
        iters["a0"] = decode_floor(dali.plan, args.threads, cut=False)
    if "a" not in skip:
        iters["a"] = decode_floor(dali.plan, args.threads)
    if "b" not in skip:
        iters["b"] = dali
    if args.no_ra_variant:
        iters["b0"] = pipelines.unlabeled_loader(root, device="cpu", num_threads=args.threads,
                                                 **{**kw, "spec": dataclasses.replace(spec, ra_ops=0)})
    for k, decoder in (("c", "pyav"), ("d", "torchcodec")):
        if k not in skip:
            loader = reference_loader(root, kind="unlabeled", num_workers=args.threads, decoder=decoder, **kw)
            iters[k], workers[k] = start_workers(loader)
    reps: dict[str, list] = {k: [] for k in iters}
    for rep in range(args.reps):
        for k, it in iters.items():
            reps[k].append(timed(it, args.batches, WARMUP[k], workers.get(k, ())))
            print(f"rep {rep}: {NAMES[k]:<26} {reps[k][-1]['samples_per_s']:8.2f} samples/s", file=sys.stderr)
    for k in reps:
        res[k] = medians(reps[k])
    for k in workers:
        iters.pop(k)  # stop the DataLoader workers before the RSS run
    if args.rss_batches:
        rss = []
        for i in range(args.rss_batches):
            next(dali)
            if i % 50 == 0 or i == args.rss_batches - 1:
                rss.append((i, _rss_mib()))
        after = [v for i, v in rss if i >= 100] or [rss[-1][1]]
        res["rss"] = {"batches": args.rss_batches, "samples": rss, "at_100_mib": after[0],
                      "max_after_100_mib": max(after), "growth_after_100_mib": rss[-1][1] - after[0]}
    iters.clear()
    if args.position_reps:
        records = dali.plan.records if dali else pipelines.dataset.read_subset(root, "train")
        res["position"] = position_costs(records[:4], frames=spec.primary[0], stride=spec.primary[1],
                                         reps=args.position_reps)
    res["loadavg_after"] = os.getloadavg()
    res["ratios"] = ratios(res)
    return res


def report(res: dict, args: argparse.Namespace) -> None:
    print(f"{res['config']['data']}: t_s {args.time_offset:g} s, crop {args.crop_size}, short side {args.short_side}")
    print(f"{'loader':<28}{'samples/s':>12}{'CPU ms/sample':>15}{'peak RSS MiB':>14}")
    for k, name in NAMES.items():
        if k in res:
            r = res[k]
            print(f"{name:<28}{r['samples_per_s']:>12.2f}{r['cpu_ms_per_sample']:>15.1f}{r['peak_rss_mib']:>14.0f}")
    print(f"medians of {args.reps} interleaved repetitions x {args.batches} batches of {args.batch_size}; "
          f"load average {res['loadavg_before'][0]:.1f} -> {res['loadavg_after'][0]:.1f}")
    for x, y, what in RATIOS:
        if f"{x}_over_{y}" in res["ratios"]:
            by_cpu = res["ratios"].get(f"{x}_over_{y}_cpu", float("nan"))
            print(f"({x})/({y}) = {res['ratios'][f'{x}_over_{y}']:.2f} in samples/s, {by_cpu:.2f} in CPU ms/sample  "
                  f"({what})")
    if "rss" in res:
        r = res["rss"]
        print(f"RSS over {r['batches']} DALI batches: {r['samples'][0][1]:.0f} MiB at batch 0, {r['at_100_mib']:.0f} "
              f"at 100, max {r['max_after_100_mib']:.0f} after, {r['samples'][-1][1]:.0f} at the end "
              f"(growth after batch 100: {r['growth_after_100_mib']:+.0f} MiB)")
    if "position" in res:
        print_position(res["position"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.loader", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", nargs="+", help="dataset folder(s) (default: generated synthetic ones, --frames)")
    p.add_argument("--frames", type=int, nargs="+", default=[96],
                   help="without --data: one synthetic dataset (320x256 VP9, GOP 16) per video length")
    p.add_argument("--per-class", type=int, default=3, help="without --data: videos per class (10 classes)")
    p.add_argument("--split", default="1pct_seed0")
    p.add_argument("--batches", type=int, default=20, help="timed batches per loader per repetition")
    p.add_argument("--reps", type=int, default=3, help="repetitions, interleaved a b c d a b c d ...; medians reported")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=2, help="DALI threads = (c)/(d) DataLoader workers")
    p.add_argument("--crop-size", type=int, default=224)
    p.add_argument("--short-side", type=int, default=256)
    p.add_argument("--time-offset", type=float, default=0.0, help="t_s: seconds between F's and A's clips")
    p.add_argument("--rss-batches", type=int, default=0, help="also run the DALI loader this long, sampling RSS")
    p.add_argument("--no-ra-variant", action="store_true", help="also time (b0): the DALI loader with ra_ops=0")
    p.add_argument("--whole-file-floor", action="store_true",
                   help="also time (a0): the decode floor fed whole files, as before issue 21")
    p.add_argument("--position-reps", type=int, default=0,
                   help="also time DALI's decode of one clip at the start vs the end of the videos (this many reps)")
    p.add_argument("--skip", default="", help="comma list of a,b,c,d to skip")
    p.add_argument("--json", help="write the results here (one dataset: its dict; several: {'runs': [...]})")
    args = p.parse_args(argv)
    skip = set(args.skip.split(","))
    if args.whole_file_floor and "a" in skip:
        print("error: --whole-file-floor needs (a)", file=sys.stderr)
        return 2

    from pipelines.reference import torchcodec_missing

    if "d" not in skip and (missing := torchcodec_missing()):
        print(f"(d) skipped: {missing}", file=sys.stderr)
        skip.add("d")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        roots = ([_dataset(d, tmp, 0, args.short_side, args.per_class) for d in args.data] if args.data else
                 [_dataset(None, tmp, n, args.short_side, args.per_class) for n in args.frames])
        for root in roots:
            runs.append(run(root, args, skip))
    for res in runs:
        report(res, args)
    if args.json:
        write_json(args.json, runs[0] if len(runs) == 1 else {"runs": runs})
    return 0

if __name__ == "__main__":
    from preprocess.entry import run_main

    run_main(main)
