"""Step 2: the weak-view loader on frame-indexed fixtures, frame-exact on every backend and codec (one child
process per backend and codec), and GPU vs CPU weak views alike in luma.

The fixtures (`worker_fixtures`, a background job started at step 0) are pipelines.testing's indexed videos
at 192x144: at least NVDEC's minimum for every codec (H.264 48x16, VP9 128x128, HEVC 144x144), and at the
clip spec's short side, so no resize runs and the comparison is decoder + crop only.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

# Luma (Y', 0..255) differences of the same weak views decoded by NVDEC + DALI's GPU color conversion vs
# libavcodec + DALI's CPU kernels: rounding and chroma siting differ by a few levels; a wrong frame or crop
# differs by tens of levels over whole regions. Luma, not RGB: RGB at the black stripes' edges depends on the
# chroma upsampling, which legitimately differs between the backends (pipelines/testing.py rgb_luma).
AGREE_MEAN, AGREE_P99 = 2.0, 16.0
SUBSETS = ("train", "val")
FIXTURE_SIZE = (144, 192)  # (H, W)
BATCHES = 2


def h264_copy(src: Path, dst: Path) -> Path:
    """The same dataset as `src` (indexed VP9 fixtures), every video re-written as H.264 .mp4."""
    import json

    from cmpl.atomic import write_text
    from pipelines.dataset import CSV_HEADER, read_subset
    from pipelines.testing import write_indexed_video
    from preprocess.fsutil import atomic_write_csv

    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.webm"))
    for subset in SUBSETS:
        rows = []
        for r in read_subset(src, subset):
            rel = r.rel.replace(".webm", ".mp4")
            write_indexed_video(dst / rel, r.num_frames, (r.height, r.width), r.fps, codec="libx264")
            rows.append([rel, r.label, r.num_frames, r.fps, r.width, r.height])
        atomic_write_csv(dst / f"{subset}.csv", CSV_HEADER, rows)
    for split in (dst / "splits").glob("*.txt"):
        write_text(split, split.read_text().replace(".webm", ".mp4"))
    meta = json.loads((dst / "meta.json").read_text())
    write_text(dst / "meta.json", json.dumps({**meta, "codec": "h264"}))
    return dst


def frame_counts_match(root: Path) -> bool:
    """Every video of train.csv/val.csv exists and decodes (PyAV) to exactly its num_frames frames."""
    from pipelines.dataset import read_subset
    from preprocess.encode import EncodeError, probe_output

    try:
        return all(probe_output(r.path).num_frames == r.num_frames for s in SUBSETS for r in read_subset(root, s))
    except EncodeError:  # a video that does not decode
        return False


def worker_fixtures(args: argparse.Namespace) -> dict[str, Any]:
    """Background job: indexed VP9 fixtures (work/fix_vp9) and their H.264 copy (work/fix_h264)."""
    from pipelines.testing import make_dataset

    work = Path(args.work)
    vp9 = make_dataset(work / "fix_vp9", classes=("a", "b"), train_per_class=4, val_per_class=1,
                       num_frames=[40, 64], size=FIXTURE_SIZE)
    h264 = h264_copy(vp9, work / "fix_h264")
    return {"vp9": str(vp9), "h264": str(h264), "h264_frames_ok": frame_counts_match(h264)}


def weak_batches(root: Path, device: str, batches: int, seed: int = 0) -> list[dict[str, Any]]:
    """`batches` unlabeled batches of 4 decoded on `device` ("cuda" | "cpu"; 8x2 + 16x1 clips, 128-px crops of
    the 144-px frames, RandAugment off): weak views and sampled indices, moved to the CPU."""
    import pipelines
    from pipelines.sampling import ClipSpec

    spec = ClipSpec(primary=(8, 2), aux=(16, 1), time_offset=0.5, crop_size=128, short_side=FIXTURE_SIZE[0],
                    ra_ops=0)
    loader = pipelines.unlabeled_loader(str(root), split="1pct_seed0", batch_size=4, spec=spec, device=device,
                                        seed=seed, with_indices=True, num_threads=2)
    it = iter(loader)
    out = []
    for _ in range(batches):
        b = next(it)
        out.append({k: v.cpu() for k, v in b.items() if k in ("primary_weak", "aux_weak", "primary_indices",
                                                                "aux_indices")})
    return out


def frame_exact(batches: list[dict[str, Any]]) -> tuple[int, int]:
    """(clips whose decoded frames are the sampled indices, clips checked) over the weak views."""
    from pipelines.testing import read_indices

    good = total = 0
    for b in batches:
        for view, idx in (("primary_weak", "primary_indices"), ("aux_weak", "aux_indices")):
            for clip, want in zip(b[view], b[idx]):
                total += 1
                # every 4th pixel each way: the index colour fills whole regions, 16x less median work
                good += read_indices(clip[:, :, ::4, ::4]) == [int(i) for i in want]
    return good, total


def worker_decode(args: argparse.Namespace) -> dict[str, Any]:
    """One row (`--shapes "backend codec"`): frame-exact weak clips; the batches are saved for the luma check."""
    import torch

    backend, codec = args.shapes.split()
    work = Path(args.work)
    batches = weak_batches(work / f"fix_{codec}", "cuda" if backend == "gpu" else "cpu", BATCHES)
    good, total = frame_exact(batches)
    path = work / f"weak_{backend}_{codec}.pt"
    torch.save(batches, path)
    return {"exact": [good, total], "file": str(path), "ok": good == total}


def luma_diff(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> dict[str, Any]:
    """Weak-view luma differences in 0..255 units (mean, 99th percentile, max) and whether indices match."""
    import numpy as np
    import torch

    from pipelines.testing import denormalize, rgb_luma

    diffs, same_idx = [], True
    for x, y in zip(a, b):
        same_idx &= all(torch.equal(x[k], y[k]) for k in ("primary_indices", "aux_indices"))
        for v in ("primary_weak", "aux_weak"):
            for cx, cy in zip(x[v], y[v]):
                ya, yb = rgb_luma(denormalize(cx).numpy()), rgb_luma(denormalize(cy).numpy())
                diffs.append(np.abs(ya - yb).ravel())
    d = np.concatenate(diffs)
    return {"same_indices": bool(same_idx), "mean": float(d.mean()), "p99": float(np.percentile(d, 99)),
            "max": float(d.max())}


def worker_agree(args: argparse.Namespace) -> dict[str, Any]:
    """`--shapes "A.pt B.pt"`: luma agreement of two saved weak-view sets (GPU vs CPU decode of one dataset)."""
    import torch

    a, b = (torch.load(p, weights_only=False) for p in args.shapes.split())
    res = luma_diff(a, b)
    res["ok"] = res["same_indices"] and res["mean"] <= AGREE_MEAN and res["p99"] <= AGREE_P99
    return res
