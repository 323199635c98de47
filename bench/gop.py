"""What the keyframe interval (GOP) costs the unlabeled loader: output size, decode floor, DALI pipeline.

    python -m bench.gop [--gops 8 16 32] [--width 320 --height 256 --short-side 256 --crop-size 224]
                        [--batches 6 --reps 3] [--data-dir DIR] [--json OUT]

For each GOP it writes the same synthetic videos (preprocess.synthetic: same seed, so the same frames) with
preprocess's encoder at that GOP (VP9, CPU), then times, interleaved over the GOPs and repetitions,
(a) the decode floor and (b) the full DALI pipeline (CPU backend) of bench.loader on the unlabeled 4-clip
sample, with the same samples (same seed) at every GOP; --peer-decoders adds the decode alone of the same
frames by PyAV and torchcodec (the decoders of bench.loader's (c) and (d)), which seek to a keyframe.
The table gives the total output size and bitrate, the mean decode span per sample (the frames any decoder
that seeks to keyframes must decode: each wanted frame's run from its keyframe, united over the sample's
frames), and medians of samples/s and CPU ms/sample. DALI's decoder, fed a whole file, decodes from its first
frame to the last wanted one (it has no keyframe index for in-memory input, bench/RESULTS.md); the loaders
feed it only the GOPs a sample needs (pipelines/webm.py), so (a) and (b) now decode the decode span too. The
last line compares one frame at the start and at the end of each video, from the whole file and from that
cut input. --data-dir keeps the datasets (a rerun reuses them: preprocess skips finished videos).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from bench.loader import decode_floor, medians, timed
from cmpl.atomic import write_json
from pipelines.sampling import ClipSpec

WARMUP = 3  # > DALI's prefetch queue (2)
COLUMNS = {"a": "(a) DALI decode", "b": "(b) DALI pipeline", "p": "PyAV decode", "t": "torchcodec decode"}


def write_dataset(out: Path, gop: int, args: argparse.Namespace) -> None:
    """The synthetic dataset at `gop` (same seed and size at every GOP), written by preprocess.synthetic."""
    cmd = [sys.executable, "-m", "preprocess.synthetic", "--out", str(out), "--gop", str(gop),
           "--classes", str(args.classes), "--per-class", str(args.per_class), "--val-per-class", "0",
           "--frames", str(args.frames), "--width", str(args.width), "--height", str(args.height),
           "--short-side", str(args.short_side), "--workers", str(args.workers)]
    print("writing:", " ".join(cmd[1:]), file=sys.stderr)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def decode_span(plan, gop: int, batches: int) -> float:
    """Mean frames per sample that any decoder seeking to keyframes must decode, over the first `batches`.

    Every wanted frame f needs the frames from its keyframe (f // gop * gop) up to f; the count is the union
    of those runs over the sample's primary and aux frames.
    """
    spans = []
    for pos in range(min(batches, len(plan))):
        for s in plan.batch(0, pos):
            needed: set[int] = set()
            for f in np.concatenate([s.primary_indices, s.aux_indices]).tolist():
                needed.update(range(f // gop * gop, f + 1))
            spans.append(len(needed))
    return float(np.mean(spans))


def dali_frame_cost(plan, frame: str, threads: int, runs: int = 3, cut: bool = True) -> float:
    """CPU ms per video for DALI's CPU decoder to return one frame, the "first" or the "last" of each video
    of the plan's first batch, from the input the loaders give it (`cut`) or from the whole file: equal
    costs mean the decoder starts at the keyframe before the frame."""
    from pipelines import dali_pipelines as dp

    records = [s.record for s in plan.batch(0, 0)]
    wanted = [np.array([0 if frame == "first" else r.num_frames - 1], np.int32) for r in records]
    whole = [np.fromfile(r.path, np.uint8) for r in records]
    inputs = [dp.encoded_input(d, w, r.num_frames) if cut else (d, w) for d, w, r in zip(whole, wanted, records)]

    def source():
        return [e for e, _ in inputs], [f for _, f in inputs]

    pipe = dp.decode_pipeline(source, device="cpu", batch_size=len(records), num_threads=threads, device_id=None,
                              exec_dynamic=True, prefetch_queue_depth=1)
    pipe.build()
    pipe.run()
    c0 = time.process_time()  # all threads of this process; finer than psutil's clock ticks
    for _ in range(runs):
        pipe.run()
    return 1000 * (time.process_time() - c0) / (runs * len(records))


def peer_decode(plan, decoder: str) -> Iterator[int]:
    """Yields batch sizes while `decoder` (a key of pipelines.reference.DECODERS, which seek to the keyframe
    before the frames) decodes the same frames as the decode floor, in this process."""
    from pipelines import sampling
    from pipelines.reference import DECODERS

    decode, epoch = DECODERS[decoder], 0
    while True:
        slots = plan.epoch_samples(epoch)
        for pos in range(len(plan)):
            batch = plan.batch(epoch, pos, slots)
            for s in batch:
                decode(s.record.path, sampling.union_positions(s.primary_indices, s.aux_indices)[0], s.record.fps)
            yield len(batch)
        epoch += 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gop", description=__doc__.split("\n\n")[0])
    p.add_argument("--gops", type=int, nargs="+", default=[8, 16, 32])
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=256)
    p.add_argument("--frames", type=int, default=96, help="frames per video")
    p.add_argument("--classes", type=int, default=10, help="synthetic classes (at most 10)")
    p.add_argument("--per-class", type=int, default=3, help="videos per class (>= 2)")
    p.add_argument("--short-side", type=int, default=256)
    p.add_argument("--crop-size", type=int, default=224)
    p.add_argument("--time-offset", type=float, default=0.0, help="t_s, seconds between F's and A's clips")
    p.add_argument("--batches", type=int, default=6, help="timed batches per loader per repetition")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--threads", type=int, default=2, help="DALI threads")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="encoding processes")
    p.add_argument("--skip-pipeline", action="store_true", help="time only (a), the decode floor")
    p.add_argument("--peer-decoders", action="store_true",
                   help="also time PyAV's and torchcodec's decode of the same frames (they seek; one process)")
    p.add_argument("--data-dir", type=Path, help="keep the datasets here (default: a temporary folder)")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    if min(args.gops) < 1 or args.batches < 1 or args.reps < 1:
        print("error: --gops, --batches and --reps must be >= 1", file=sys.stderr)
        return 2
    if args.per_class < 2:  # split 1pct labels one video per class; the unlabeled set is the rest
        print("error: --per-class must be >= 2 (one video per class is labeled)", file=sys.stderr)
        return 2

    import pipelines
    from pipelines.reference import torchcodec_missing

    peers = ["p", "t"] if args.peer_decoders else []
    if "t" in peers and (missing := torchcodec_missing()):
        print(f"torchcodec decode skipped: {missing}", file=sys.stderr)
        peers.remove("t")
    spec = ClipSpec(crop_size=args.crop_size, short_side=args.short_side, time_offset=args.time_offset)
    with tempfile.TemporaryDirectory(prefix="bench_gop_") as tmp:
        base = args.data_dir or Path(tmp)
        res: dict = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                     "cpus": os.cpu_count()}
        iters: dict[tuple[str, int], object] = {}
        plans = {}
        for gop in args.gops:
            root = base / f"gop{gop}"
            write_dataset(root, gop, args)
            videos = sorted((root / "videos").rglob("*.webm"))
            mbytes = sum(v.stat().st_size for v in videos) / 1e6
            seconds = len(videos) * args.frames / 25.0
            dali = pipelines.unlabeled_loader(root, device="cpu", num_threads=args.threads, split="1pct_seed0",
                                              batch_size=args.batch_size, spec=spec)
            plans[gop] = dali.plan
            res[str(gop)] = {"videos": len(videos), "output_mb": mbytes, "kbit_per_s": 8000 * mbytes / seconds,
                             "decode_span_frames": decode_span(dali.plan, gop, args.batches)}
            iters[("a", gop)] = decode_floor(dali.plan, args.threads)
            if not args.skip_pipeline:
                next(dali)  # builds the graph
                iters[("b", gop)] = dali
            for k in peers:
                iters[(k, gop)] = peer_decode(dali.plan, "pyav" if k == "p" else "torchcodec")
        res["loadavg_before"] = os.getloadavg()
        reps: dict[tuple[str, int], list] = {k: [] for k in iters}
        for rep in range(args.reps):
            for (k, gop), it in iters.items():
                reps[(k, gop)].append(timed(it, args.batches, WARMUP))
                print(f"rep {rep}: ({k}) gop {gop:<3} {reps[(k, gop)][-1]['samples_per_s']:8.2f} samples/s",
                      file=sys.stderr)
        res["loadavg_after"] = os.getloadavg()
        for (k, gop), rows in reps.items():
            res[str(gop)][k] = medians(rows)
        plan = plans[args.gops[0]]
        res["dali_one_frame_cpu_ms"] = {f: dali_frame_cost(plan, f, args.threads) for f in ("first", "last")}
        res["dali_one_frame_whole_file_cpu_ms"] = {f: dali_frame_cost(plan, f, args.threads, cut=False)
                                                   for f in ("first", "last")}
        del iters

    print(f"synthetic {args.width}x{args.height} -> short side {args.short_side}, {args.frames} frames, VP9; "
          f"crop {args.crop_size}, t_s {args.time_offset:g}; batch {args.batch_size}, {args.threads} DALI threads")
    cols = [k for k in COLUMNS if k in res[str(args.gops[0])]]
    print(f"{'GOP':>4}{'output MB':>11}{'kbit/s':>8}{'decode span':>13}"
          + "".join(f"{COLUMNS[k] + ' samples/s':>30}{'CPU ms':>8}" for k in cols))
    for gop in args.gops:
        r = res[str(gop)]
        print(f"{gop:>4}{r['output_mb']:>11.2f}{r['kbit_per_s']:>8.0f}{r['decode_span_frames']:>13.1f}"
              + "".join(f"{r[k]['samples_per_s']:>30.2f}{r[k]['cpu_ms_per_sample']:>8.1f}" for k in cols))
    one, whole = res["dali_one_frame_cpu_ms"], res["dali_one_frame_whole_file_cpu_ms"]
    print(f"DALI CPU decoder, one frame per video (GOP {args.gops[0]}): the first {one['first']:.1f}, the last "
          f"{one['last']:.1f} CPU ms/video as the loaders feed it (whole file: {whole['first']:.1f} and "
          f"{whole['last']:.1f}; equal if it starts at the keyframe before the frame)")
    print(f"medians of {args.reps} interleaved repetitions x {args.batches} batches; load average "
          f"{res['loadavg_before'][0]:.1f} -> {res['loadavg_after'][0]:.1f}")
    if args.json:
        write_json(args.json, res)
    return 0


if __name__ == "__main__":
    from preprocess.entry import run_main

    run_main(main)
