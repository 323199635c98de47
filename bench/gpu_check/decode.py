"""Worker `decode`: the unlabeled loader on frame-indexed fixtures, frame-exact on every backend and codec,
and GPU vs CPU weak views alike (step 2)."""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

# GPU (NVDEC + GPU color conversion/resize) vs CPU (libavcodec + CPU kernels) may round differently; a
# wrong frame or crop differs by tens of levels over whole regions, far beyond these.
AGREE_MEAN, AGREE_P99 = 2.0, 16.0
SUBSETS = ("train", "val")


def h264_copy(src: Path, dst: Path) -> Path:
    """The same dataset as `src` (indexed VP9 fixtures), every video re-written as H.264 .mp4."""
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
    return dst


def frame_counts_match(root: Path) -> bool:
    """Every video of train.csv/val.csv exists and decodes to exactly its num_frames frames."""
    from pipelines.dataset import read_subset
    from preprocess.encode import EncodeError, probe_output

    try:
        return all(probe_output(r.path).num_frames == r.num_frames for s in SUBSETS for r in read_subset(root, s))
    except EncodeError:  # a video that does not decode
        return False


def weak_batches(root: Path, device: str, batches: int, seed: int = 0) -> list[dict[str, Any]]:
    """`batches` unlabeled batches of 4 decoded on `device` ("cuda" | "cpu"; 8x2 + 16x1 clips, 48-px crops):
    weak views and sampled indices, moved to the CPU."""
    import pipelines
    from pipelines.sampling import ClipSpec

    spec = ClipSpec(primary=(8, 2), aux=(16, 1), time_offset=0.5, crop_size=48, short_side=56)
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
                good += read_indices(clip) == [int(i) for i in want]
    return good, total


def pixel_diff(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> dict[str, float]:
    """Weak-view differences in 0..255 units (mean, 99th percentile, max) and whether indices match."""
    import torch

    from pipelines.testing import STD

    std = STD.view(1, 3, 1, 1, 1)
    diffs, same_idx = [], True
    for x, y in zip(a, b):
        same_idx &= all(torch.equal(x[k], y[k]) for k in ("primary_indices", "aux_indices"))
        for v in ("primary_weak", "aux_weak"):
            diffs.append(((x[v] - y[v]).abs() * std).flatten())
    d = torch.cat(diffs)
    sample = d[torch.randperm(d.numel())[:1_000_000]] if d.numel() > 1_000_000 else d
    return {"same_indices": bool(same_idx), "mean": float(d.mean()), "p99": float(sample.quantile(0.99)),
            "max": float(d.max())}


def worker_decode(args: argparse.Namespace) -> dict[str, Any]:
    """Frame-exact clip counts per backend and codec, GPU vs CPU agreement; `ok` and a summary line."""
    from pipelines.testing import make_dataset

    work = Path(args.work)
    vp9 = make_dataset(work / "fix_vp9", classes=("a", "b"), train_per_class=4, val_per_class=1,
                       num_frames=[40, 64], size=(64, 88))
    cpu = weak_batches(vp9, "cpu", 2)
    res: dict[str, Any] = {}
    good, total = frame_exact(cpu)
    res["cpu_vp9_exact"] = [good, total]
    h264_root = h264_copy(vp9, work / "fix_h264")
    if args.dry_run:
        # The H.264 copy decodes only on the GPU; here check it is a complete, readable dataset folder.
        counted = frame_counts_match(h264_root)
        res["h264_fixture_frames_ok"] = counted
        res["ok"] = good == total and counted
        res["summary"] = (f"cpu vp9 frame-exact {good}/{total} clips; h264 fixture copy "
                          f"{'complete' if counted else 'BROKEN'} (decodes on the GPU only)")
        return res
    gpu = weak_batches(vp9, "cuda", 2)
    g_good, g_total = frame_exact(gpu)
    h264 = weak_batches(h264_root, "cuda", 2)
    h_good, h_total = frame_exact(h264)
    agree = pixel_diff(gpu, cpu)
    res.update(gpu_vp9_exact=[g_good, g_total], gpu_h264_exact=[h_good, h_total], gpu_vs_cpu=agree)
    agree_ok = agree["same_indices"] and agree["mean"] <= AGREE_MEAN and agree["p99"] <= AGREE_P99
    res["ok"] = agree_ok and good == total and g_good == g_total and h_good == h_total
    res["summary"] = (f"frame-exact clips gpu h264 {h_good}/{h_total}, gpu vp9 {g_good}/{g_total}, cpu vp9 "
                      f"{good}/{total}; gpu vs cpu weak views: indices {'equal' if agree['same_indices'] else 'DIFFER'}"
                      f", |diff| mean {agree['mean']:.2f} p99 {agree['p99']:.1f} max {agree['max']:.0f} /255 "
                      f"(limits {AGREE_MEAN}, {AGREE_P99})")
    return res
