"""Worker `loader`: unlabeled samples/s of the DALI loader, GPU ('mixed') vs CPU backend (step 3).

The videos are `preprocess.synthetic`'s content, encoded here with PyAV at `preprocess/encode.py`'s settings
(the GPU machine has no ffmpeg CLI; PyAV links the same libx264/libvpx); the clip and crop sizes are the
paper preset's.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from . import PAPER_PRESET

# The throughput videos last 5 s: K400's 10-s offset would pin every aux clip to an end of the video.
TIME_OFFSET_S = {"paper": 1.0, "tiny": 0.5}
# Unlabeled samples per loader batch (4 clips each): a throughput setting, not a training size.
LOADER_BATCH = 16


def loader_spec(preset: str, time_offset: float) -> Any:
    """The training clips (pipelines.sampling.ClipSpec) of cmpl preset `preset`, with `time_offset` seconds."""
    from cmpl import components, presets

    data = presets.get(preset).data
    data.time_offset = time_offset
    return components.clip_spec(data)


def _encode_one(job: tuple[str, int, int, int, str, int]) -> int:
    """Render synthetic video `index` (preprocess.synthetic's content: panning texture, noise, a moving
    shape) at (h, w) and encode it like the real datasets; returns the file size in bytes."""
    import av

    from preprocess.encode import EncodeSettings, encoder_options
    from preprocess.synthetic import VideoSpec, render_video

    path, frames, h, w, codec, index = job
    settings = EncodeSettings(codec=codec)
    encoder, options = encoder_options(settings)
    video = render_video(VideoSpec(label=index % 10, subset="train", index=index, seed=0, frames=frames,
                                   width=w, height=h))
    with av.open(path, "w") as out:
        stream = out.add_stream(encoder, rate=settings.fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = options
        for img in video:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode())
    return os.path.getsize(path)


def throughput_dataset(root: Path, codec: str, videos: int, frames: int, size: tuple[int, int]
                       ) -> tuple[Path, float]:
    """A one-class dataset folder of `videos` synthetic videos at `size` = (H, W) in `codec` ("vp9" |
    "h264"), encoded in parallel, one labeled video; returns it and the mean bitrate in kbit/s."""
    import multiprocessing as mp

    from cmpl.atomic import write_text
    from pipelines.dataset import CSV_HEADER
    from preprocess.encode import EncodeSettings
    from preprocess.fsutil import atomic_write_csv

    settings = EncodeSettings(codec=codec)
    rels = [f"videos/train/x/x_{i:04d}{settings.ext}" for i in range(videos)]
    (root / "videos" / "train" / "x").mkdir(parents=True, exist_ok=True)
    # fork: no re-import of torch per process; nothing has touched CUDA or DALI in this process yet.
    with mp.get_context("fork").Pool(min(16, os.cpu_count() or 1)) as pool:
        sizes = pool.map(_encode_one, [(str(root / r), frames, size[0], size[1], codec, i)
                                       for i, r in enumerate(rels)])
    write_text(root / "classes.txt", "x\n")
    atomic_write_csv(root / "train.csv", CSV_HEADER, [[r, 0, frames, settings.fps, size[1], size[0]] for r in rels])
    write_text(root / "splits" / "1pct_seed0.txt", f"{rels[0]}\n")
    return root, sum(sizes) * 8 / 1000 / (videos * frames / float(settings.fps))


def samples_per_s(root: Path, backend: str, batch: int, warmup: int, timed: int, threads: int, spec: Any) -> float:
    """Unlabeled samples (4 clips each) per second on DALI's `backend` ("gpu" | "cpu") over `timed` batches
    after `warmup` batches; `spec`: the pipelines.sampling.ClipSpec of the clips."""
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
    assert set(b) >= {"primary_weak", "primary_strong", "aux_weak", "aux_strong"}
    return batch * timed / (time.perf_counter() - t0)


def worker_loader(args: argparse.Namespace) -> dict[str, Any]:
    """Rows {backend, codec, threads, samples_per_s} and a setup line; the dry run: CPU, tiny preset sizes."""
    from preprocess.encode import EncodeSettings

    work = Path(args.work)
    cores = os.cpu_count() or 1
    if args.dry_run:
        tiny = loader_spec("tiny", TIME_OFFSET_S["tiny"])
        root, kbps = throughput_dataset(work / "tp_vp9", "vp9", 6, 24, (40, 56))
        sps = samples_per_s(root, "cpu", 2, 1, 2, 2, tiny)
        return {"rows": [{"backend": "cpu", "codec": "vp9", "samples_per_s": sps, "threads": 2}],
                "setup": f"dry run: 6 synthetic VP9 videos 56x40 ({kbps:.0f} kbit/s), {_clips(tiny)} clips, "
                         f"{tiny.crop_size} px crops, batch 2, 2 timed batches"}
    paper = loader_spec(PAPER_PRESET, TIME_OFFSET_S["paper"])
    # The preprocessed datasets' short side, 4:3 (even width), 5 s: the window plus offsets fits.
    short = EncodeSettings().short_side
    size, frames, videos, batch = (short, short * 4 // 3 // 2 * 2), 125, 48, LOADER_BATCH
    rows = []
    t0 = time.monotonic()
    vp9, vp9_kbps = throughput_dataset(work / "tp_vp9", "vp9", videos, frames, size)
    h264, h264_kbps = throughput_dataset(work / "tp_h264", "h264", videos, frames, size)
    made = time.monotonic() - t0
    # Warm-up 3 > DALI's prefetch depth 2: the timed batches are produced at the steady rate, not
    # handed out from a queue filled during the build.
    for backend, codec, root, threads, timed in (("gpu", "h264", h264, 8, 20), ("gpu", "vp9", vp9, 8, 20),
                                                 ("cpu", "vp9", vp9, cores, 8)):
        rows.append({"backend": backend, "codec": codec, "threads": threads, "batches": timed,
                     "samples_per_s": samples_per_s(root, backend, batch, 3, timed, threads, paper)})
    return {"rows": rows, "setup": f"{videos} synthetic videos {size[1]}x{size[0]} x {frames} frames, GOP "
                                   f"{EncodeSettings().gop} (H.264 {h264_kbps:.0f}, VP9 {vp9_kbps:.0f} kbit/s), "
                                   f"batch {batch}, {_clips(paper)} clips, {paper.crop_size} crops of "
                                   f"{paper.short_side} (datasets made in {made:.0f} s)"}


def _clips(spec: Any) -> str:
    """"8x8 + 16x4": (frames x stride) of F's and A's clips."""
    return " + ".join(f"{t}x{s}" for t, s in (spec.primary, spec.aux))
