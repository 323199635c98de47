"""Cost of each RandAugment op on video clips: where the strong view's time goes on a DALI backend.

    python -m bench.ra_ops [--device cpu|cuda] [--frames 16] [--size 224] [--batch 8] [--json OUT]

For every op of the suite the loaders use (`pipelines.rand_augment.clip_suite`), and for DALI's own
per-frame contrast and auto-contrast that two of them replace, a pipeline applies that one op at a middle
magnitude (warps: nearest neighbour, as in the loaders) to a batch of random uint8 FHWC clips. The table gives
ms per clip (CPU time of the process on the CPU backend, wall time on the GPU) minus the same pipeline with
no op, so only the op is counted.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np

from cmpl.atomic import write_json

MAGNITUDE_BIN = 15  # of 31: the middle of every op's range
NUM_BINS = 31


def _pipeline(op, clips: list, device: str, threads: int):
    from nvidia.dali import fn, pipeline_def, types
    from nvidia.dali.auto_aug.core import signed_bin

    from pipelines.dali_pipelines import RA_FILL

    @pipeline_def(batch_size=len(clips), num_threads=threads, device_id=0 if device == "cuda" else None,
                  exec_dynamic=True)
    def pipe():
        x = fn.external_source(source=lambda: clips, batch=True, layout="FHWC")
        x = x.gpu() if device == "cuda" else x
        if op is None:
            return x
        h, w = clips[0].shape[1:3]
        # The loaders' warp settings (pipelines/dali_pipelines.py): nearest neighbour, grey border; a signed
        # magnitude bin as the loaders pass (an unsigned one makes DALI warn and draw the sign itself).
        return op(x, magnitude_bin=signed_bin(MAGNITUDE_BIN), num_magnitude_bins=NUM_BINS, shape=(h, w),
                  fill_value=RA_FILL, interp_type=types.INTERP_NN)

    p = pipe()
    p.build()
    return p


def _cost_ms(p, runs: int, clips_per_run: int, device: str) -> float:
    clock = time.process_time if device == "cpu" else time.perf_counter
    for _ in range(2):
        p.run()
    t = clock()
    for _ in range(runs):
        outs = p.run()
        if device == "cuda":
            outs[0].as_cpu()  # waits for the GPU work
    return (clock() - t) / (runs * clips_per_run) * 1000


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ra_ops", description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")  # the project's one vocabulary
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    for name in ("frames", "size", "batch", "threads", "runs"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            ap.error("--device cuda but CUDA is not available")
    warnings.filterwarnings("ignore", message=".*deprecated")
    from nvidia.dali.auto_aug import augmentations

    from pipelines import rand_augment

    rng = np.random.default_rng(0)
    # Each channel within its own sub-range, so that auto-contrast has work to do.
    lo, hi = np.array([5, 30, 60]), np.array([190, 220, 250])
    clips = [rng.integers(lo, hi, (args.frames, args.size, args.size, 3)).astype(np.uint8) for _ in range(args.batch)]
    ops = [(op.name, op) for op in rand_augment.clip_suite()]
    ops += [("contrast (DALI, per frame)", augmentations.contrast),
            ("auto_contrast (DALI, per frame)", augmentations.auto_contrast)]
    base = _cost_ms(_pipeline(None, clips, args.device, args.threads), args.runs, args.batch, args.device)
    rows = []
    for name, op in ops:
        ms = _cost_ms(_pipeline(op, clips, args.device, args.threads), args.runs, args.batch, args.device) - base
        rows.append({"op": name, "ms_per_clip": ms})
    print(f"RandAugment op cost, {args.device}, {args.batch} clips of {args.frames}x{args.size}x{args.size}x3 uint8, "
          f"{args.threads} threads, magnitude bin {MAGNITUDE_BIN}/{NUM_BINS}; "
          f"{'CPU' if args.device == 'cpu' else 'wall'} ms per clip above a no-op pipeline ({base:.2f} ms)")
    for r in rows:
        print(f"  {r['op']:<34}{r['ms_per_clip']:8.2f}")
    mean = float(np.mean([r["ms_per_clip"] for r in rows[:len(ops) - 2]]))
    print(f"  {'mean over the suite (one op draw)':<34}{mean:8.2f}")
    if args.json:
        write_json(args.json, {"bench": "ra_ops", "device": args.device, "frames": args.frames, "size": args.size,
                               "batch": args.batch, "threads": args.threads, "base_ms": base, "rows": rows,
                               "suite_mean_ms": mean})
    return 0


if __name__ == "__main__":
    from preprocess.entry import run_main

    run_main(main)
