"""Step 3's loader throughput and step 5's dataset: synthetic videos encoded there with PyAV.

`make_datasets` (the background job `datasets`, started at step 0) writes one dataset folder per codec:
10 classes of `preprocess.synthetic`'s drawing at the preprocessed datasets' size (340x256, short side 256, so
no resize), encoded with PyAV at `preprocess/encode.py`'s settings (the GPU machine has no ffmpeg CLI; PyAV
links the same libx264/libvpx); split 1pct_seed0 labels one video per class. `samples_per_s` times the
unlabeled loader's weak views (RandAugment off: no AutoGraph-traced graph to build) at the paper's clips.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from . import PAPER_PRESET

# The videos last 4 s: the paper's 64-frame windows plus 1-s offsets fit; K400's 10-s offset would pin
# every aux clip to an end of the video.
TIME_OFFSET_S = {"paper": 1.0, "tiny": 0.5}
CLASSES = 10
# (videos per codec, frames, (H, W)) on the GPU machine and in the CPU rehearsal.
SIZES = {"gpu": (40, 100, (256, 340)), "dry": (16, 24, (40, 56))}
# Unlabeled samples per loader batch and (warm-up, timed) batches per backend; warm-up 3 > DALI's prefetch
# depth 2, so the timed batches come at the steady rate, not from a queue filled during the build.
BATCH = {"gpu": 16, "cpu": 4, "dry": 2}
BATCHES = {"gpu": (3, 8), "cpu": (2, 4), "dry": (1, 2)}


def loader_spec(preset: str, time_offset: float, weak_only: bool = True) -> Any:
    """The training clips (pipelines.sampling.ClipSpec) of cmpl preset `preset`, with `time_offset` seconds;
    `weak_only`: RandAugment off (ra_ops 0), so the pipeline has no RandAugment graph."""
    import dataclasses

    from cmpl import components, presets

    data = presets.get(preset).data
    data.time_offset = time_offset
    spec = components.clip_spec(data)
    return dataclasses.replace(spec, ra_ops=0) if weak_only else spec


def _encode_one(job: tuple[str, int, int, int, str, int]) -> int:
    """Render synthetic video `index` (preprocess.synthetic's quick drawing, class index % 10) at (h, w) and
    encode it like the real datasets; returns the file size in bytes."""
    import av

    from preprocess.encode import EncodeSettings, encoder_options
    from preprocess.synthetic import VideoSpec, render_video

    path, frames, h, w, codec, index = job
    settings = EncodeSettings(codec=codec)
    encoder, options = encoder_options(settings)
    video = render_video(VideoSpec(label=index % CLASSES, subset="train", index=index, seed=0, frames=frames,
                                   width=w, height=h))
    with av.open(path, "w") as out:
        stream = out.add_stream(encoder, rate=settings.fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = options
        for img in video:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode())
    return os.path.getsize(path)


def throughput_dataset(root: Path, codec: str, videos: int, frames: int, size: tuple[int, int], pool: Any
                       ) -> dict[str, Any]:
    """A 10-class dataset folder of `videos` synthetic videos at `size` = (H, W) in `codec` ("vp9" | "h264"):
    train.csv (all), val.csv (the first video of each class again: a throughput run, not an evaluation),
    splits/1pct_seed0.txt (one per class), meta.json with the codec. Returns its facts."""
    import json

    from cmpl.atomic import write_text
    from pipelines.dataset import CSV_HEADER
    from preprocess.encode import EncodeSettings
    from preprocess.fsutil import atomic_write_csv

    settings = EncodeSettings(codec=codec)
    rels = [f"videos/train/c{i % CLASSES}/v_{i:04d}{settings.ext}" for i in range(videos)]
    for c in range(CLASSES):
        (root / "videos" / "train" / f"c{c}").mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    sizes = pool.map(_encode_one, [(str(root / r), frames, size[0], size[1], codec, i) for i, r in enumerate(rels)])
    rows = [[r, i % CLASSES, frames, settings.fps, size[1], size[0]] for i, r in enumerate(rels)]
    write_text(root / "classes.txt", "".join(f"c{c}\n" for c in range(CLASSES)))
    atomic_write_csv(root / "train.csv", CSV_HEADER, rows)
    atomic_write_csv(root / "val.csv", CSV_HEADER, rows[:CLASSES])
    write_text(root / "splits" / "1pct_seed0.txt", "".join(f"{r}\n" for r in rels[:CLASSES]))
    write_text(root / "failures.csv", "source,reason\n")
    write_text(root / "meta.json", json.dumps({"source": "bench.gpu_check", "codec": codec, "fps": 25}))
    kbps = sum(sizes) * 8 / 1000 / (videos * frames / float(settings.fps))
    return {"root": str(root), "codec": codec, "videos": videos, "frames": frames, "size": [size[1], size[0]],
            "kbps": kbps, "encode_s": time.monotonic() - t0}


def worker_datasets(args: argparse.Namespace) -> dict[str, Any]:
    """Background job: the H.264 and VP9 dataset folders (work/tp_h264, work/tp_vp9), in a process pool."""
    import multiprocessing as mp

    work = Path(args.work)
    videos, frames, size = SIZES["dry" if args.dry_run else "gpu"]
    # fork: no re-import of torch per process; nothing has touched CUDA or DALI in this process.
    with mp.get_context("fork").Pool(max(1, min(16, (os.cpu_count() or 2) - 2))) as pool:
        return {codec: throughput_dataset(work / f"tp_{codec}", codec, videos, frames, size, pool)
                for codec in ("h264", "vp9")}


def samples_per_s(root: Path, backend: str, batch: int, warmup: int, timed: int, threads: int, spec: Any) -> float:
    """Unlabeled samples (weak views of F's and A's clips) per second on DALI's `backend` ("gpu" | "cpu")
    over `timed` batches after `warmup` ones; `spec`: the pipelines.sampling.ClipSpec of the clips."""
    import torch

    import pipelines

    device = "cuda" if backend == "gpu" else "cpu"
    loader = pipelines.unlabeled_loader(str(root), split="1pct_seed0", batch_size=batch, spec=spec, device=device,
                                        seed=0, num_threads=threads)
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(timed):
        b = next(it)
    if device == "cuda":
        torch.cuda.synchronize()
    assert set(b) >= {"primary_weak", "aux_weak"}
    return batch * timed / (time.perf_counter() - t0)


def worker_loader(args: argparse.Namespace) -> dict[str, Any]:
    """One row (`--shapes "backend codec"`): samples/s of the weak-view loader, the preset's DALI threads."""
    from cmpl import presets

    backend, codec = args.shapes.split()
    work = Path(args.work)
    preset = "tiny" if args.dry_run else PAPER_PRESET
    spec = loader_spec(preset, TIME_OFFSET_S["tiny" if args.dry_run else "paper"])
    threads = presets.get(PAPER_PRESET).data.num_threads  # what training runs with (2), not all cores
    key = "dry" if args.dry_run else backend
    warmup, timed = BATCHES[key]
    sps = samples_per_s(work / f"tp_{codec}", backend, BATCH[key], warmup, timed, threads, spec)
    return {"backend": backend, "codec": codec, "samples_per_s": sps, "threads": threads, "batch": BATCH[key],
            "batches": timed, "clips": clips_text(spec), "crop": spec.crop_size, "short_side": spec.short_side}


def clips_text(spec: Any) -> str:
    """"8x8 + 16x4": (frames x stride) of F's and A's clips."""
    return " + ".join(f"{t}x{s}" for t, s in (spec.primary, spec.aux))
