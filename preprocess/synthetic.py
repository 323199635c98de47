"""A small synthetic action dataset whose classes need both appearance and motion.

    python -m preprocess.synthetic --out data/synthetic [--classes 10 --per-class 30 --val-per-class 10
                                                          --seed 0 --frames 80 --width 80 --height 64]

Each video: one shape moving over a flat grey background with per-frame noise, 80 frames at 25 fps
(3.2 s, so a 64-frame window fits with room for time offsets), 80x64 pixels, encoded exactly like the
real datasets (VP9, GOP 16; same writer, same manifests and splits).

Why flat: with one labeled video per class, any per-video background (an earlier version had textured,
tinted, panning backgrounds) is the most discriminative cue among the 10 labeled clips, and small
3D-ResNets learned it instead of the object: a probe that pasted each labeled object onto another labeled
video's background got the background's class, even with faint textures (results/demo/README.md, notes).

Classes (label: name -- what tells it apart):
  appearance only -- same random bouncing drift, the shape or colour differs:
    0 red_circle      1 red_square      2 blue_circle      3 blue_square
  motion only -- the same yellow circle, the motion differs:
    4 rise_slow   moves up at 0.5-0.9 px/frame (wrapping around)
    5 fall_slow   moves down at 0.5-0.9 px/frame             (direction: needs frame order)
    6 rise_fast   moves up at 2.0-3.0 px/frame               (speed)
    7 swing       sways left-right, period 20-32 frames      (rhythm vs constant velocity)
    8 shake       jumps +-2.5-4 px every 4 frames (period 8) (needs a frame stride <= 4: at stride 8
                  every sample sees the same position and it looks like `still`)
    9 still       stays put (drift <= 0.1 px/frame)
Motion is vertical or horizontal-symmetric, so horizontal-flip augmentation never changes a class.
A network that sees 16 frames at stride 4 separates shake from still; one that sees 8 frames at stride 8
cannot, and speed/rhythm are coarser for it: the complementarity the paper's auxiliary network exploits.

Splits: 1pct = 1 labeled video per class, 10pct = 3 per class (10% of the default 30), seeds 0, 1, 2.
Determinism: video (subset, class, i) draws from numpy's PCG64 seeded with [seed, subset, class, i];
the encoder runs single-threaded with bit-exact flags, so the same seed gives byte-identical files on the
same software versions.
"""
from __future__ import annotations

import argparse
import functools
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from preprocess import PreprocessError
from preprocess.cli import add_encode_args, run_cli, settings_from_args
from preprocess.dataset_writer import Job, Summary, build_dataset

CLASSES = ("red_circle", "red_square", "blue_circle", "blue_square",
           "rise_slow", "fall_slow", "rise_fast", "swing", "shake", "still")
SPLITS = {"1pct": 1, "10pct": 3}
_COLORS = {"red": (215, 45, 45), "blue": (45, 75, 220), "yellow": (230, 205, 40)}
_SUBSETS = {"train": 0, "val": 1}


@dataclass(frozen=True)
class VideoSpec:
    """Everything that determines one generated video."""

    label: int
    subset: str
    index: int
    seed: int
    frames: int = 80
    width: int = 80
    height: int = 64


def _bounce(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Fold positions into [lo, hi] as a ball bouncing between two walls."""
    span = hi - lo
    y = np.mod(x - lo, 2 * span)
    return lo + np.where(y > span, 2 * span - y, y)


def trajectory(name: str, rng: np.random.Generator, t: np.ndarray, w: int, h: int, r: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """Centre (x, y) of the shape at frames t, each `(T,)`."""
    cx, cy = rng.uniform(r + 4, w - r - 4), rng.uniform(r + 4, h - r - 4)
    ones = np.ones_like(t)
    if name in ("rise_slow", "fall_slow", "rise_fast"):
        v = rng.uniform(2.0, 3.0) if name == "rise_fast" else rng.uniform(0.5, 0.9)
        v = v if name == "fall_slow" else -v
        span = h + 2 * r  # wrap: leave at one edge, come back at the other
        return cx * ones, np.mod(cy + v * t + r, span) - r
    if name == "swing":
        amp, period = rng.uniform(10, 16), rng.uniform(20, 32)
        cx = np.clip(cx, amp + r, w - amp - r)
        return cx + amp * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi)), cy * ones
    if name == "shake":
        amp, phase = rng.uniform(2.5, 4.0), rng.integers(8)
        return cx + amp * np.where((t + phase) % 8 < 4, 1.0, -1.0), cy * ones
    if name == "still":
        angle, v = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.1)
        return cx + v * np.cos(angle) * t, cy + v * np.sin(angle) * t
    # appearance classes: bounce around at a random speed and direction
    angle, v = rng.uniform(0, 2 * np.pi), rng.uniform(0.4, 1.5)
    return (_bounce(cx + v * np.cos(angle) * t, r, w - r), _bounce(cy + v * np.sin(angle) * t, r, h - r))


def render_video(spec: VideoSpec) -> np.ndarray:
    """Generate the frames of one video: `(T, H, W, 3)` uint8 RGB."""
    name = CLASSES[spec.label]
    rng = np.random.default_rng([spec.seed, _SUBSETS[spec.subset], spec.label, spec.index])
    t = np.arange(spec.frames, dtype=np.float64)
    h, w = spec.height, spec.width
    # Background: flat grey with fresh per-frame noise. It carries nothing that identifies a video (see the
    # module docstring), and the noise still makes every frame difference nonzero, so the object is not
    # the only thing that changes between frames.
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    video = np.full((spec.frames, h, w, 3), 120.0, dtype=np.float32)
    video += rng.integers(-9, 10, size=video.shape, dtype=np.int8)  # cheaper than Gaussian noise

    r = rng.uniform(8, 11)  # radius: large enough to stay several pixels wide in the demo's small crops
    x, y = trajectory(name, rng, t, w, h, r)
    color_name, _, shape = name.partition("_") if spec.label < 4 else ("yellow", "", "circle")
    color = (np.array(_COLORS[color_name]) + rng.uniform(-20, 20, size=3)).astype(np.float32)
    dx = xs[None] - x[:, None, None].astype(np.float32)
    dy = ys[None] - y[:, None, None].astype(np.float32)
    if shape == "circle":
        dist = np.sqrt(dx**2 + dy**2) - r
    else:  # square of the same area as the circle
        dist = np.maximum(np.abs(dx), np.abs(dy)) - r * np.sqrt(np.pi) / 2
    alpha = np.clip(0.5 - dist, 0.0, 1.0)[..., None]  # 1-pixel soft edge: sub-pixel motion stays visible
    video += alpha * (color - video)
    return np.clip(np.rint(video), 0, 255).astype(np.uint8)


def make_jobs(*, classes: int, per_class: int, val_per_class: int, seed: int, frames: int, width: int,
              height: int, ext: str, limit: int | None = None) -> list[Job]:
    jobs = []
    for subset, count in (("train", per_class), ("val", val_per_class)):
        subset_jobs = []
        for label in range(classes):
            for i in range(count):
                spec = VideoSpec(label, subset, i, seed, frames, width, height)
                name = CLASSES[label]
                subset_jobs.append(Job(
                    source=f"synthetic:{subset}/{name}/{i}",
                    rel=f"videos/{subset}/{name}/{name}_{i:03d}{ext}",
                    label=label, subset=subset, make_frames=functools.partial(render_video, spec),
                    source_key=repr(spec), expected_frames=frames))
        jobs += subset_jobs[:limit]
    return jobs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m preprocess.synthetic",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="dataset folder to write")
    p.add_argument("--classes", type=int, default=len(CLASSES),
                   help=f"first N classes (at most {len(CLASSES)})")
    p.add_argument("--per-class", type=int, default=30, help="training videos per class")
    p.add_argument("--val-per-class", type=int, default=10, help="validation videos per class")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frames", type=int, default=80, help="frames per video (>= 64 for the paper's window)")
    p.add_argument("--width", type=int, default=80)
    p.add_argument("--height", type=int, default=64)
    add_encode_args(p, fps=25, short_side=64)
    args = p.parse_args(argv)

    def build() -> Summary:
        settings = settings_from_args(args)
        if not 1 <= args.classes <= len(CLASSES):
            raise PreprocessError(f"--classes must be in 1..{len(CLASSES)}")
        if args.per_class < 1 or args.val_per_class < 0 or args.frames < 1:
            raise PreprocessError("--per-class and --frames must be >= 1, --val-per-class >= 0")
        if min(args.width, args.height) < 32:
            raise PreprocessError("--width and --height must be at least 32")
        jobs = make_jobs(classes=args.classes, per_class=args.per_class, val_per_class=args.val_per_class,
                         seed=args.seed, frames=args.frames, width=args.width, height=args.height,
                         ext=settings.ext, limit=args.limit)
        meta = {"source": "synthetic", "seed": args.seed, "generated": {
            "classes": args.classes, "per_class": args.per_class, "val_per_class": args.val_per_class,
            "frames": args.frames, "width": args.width, "height": args.height}}
        return build_dataset(args.out, dataset="synthetic", classes=list(CLASSES[:args.classes]), jobs=jobs,
                             settings=settings, workers=args.workers, splits=SPLITS, extra_meta=meta)

    return run_cli(build)


if __name__ == "__main__":
    sys.exit(main())
