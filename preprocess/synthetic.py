"""Synthetic action datasets whose classes need both appearance and motion: a quick one and a hard one.

    python -m preprocess.synthetic --out data/synthetic [--classes 10 --per-class 30 --val-per-class 10
                                                          --seed 0 --frames 80 --width 80 --height 64
                                                          --short-side 144]
    python -m preprocess.synthetic --variant hard --out data/synthetic_hard [--classes 8 --per-class 40
                                   --val-per-class 15 --seed 0 --frames 96 --width 80 --height 64
                                   --distractors 2 --short-side 144]

Both are encoded exactly like the real datasets (VP9, GOP 16; same writer, same manifests and splits) at
25 fps; class count, frame count, fps and size are in classes.txt, train.csv/val.csv and meta.json, so
nothing downstream depends on the variant.

Size: the scenes are drawn at --width x --height (80x64: every size in pixels below is in this drawing)
and the encoder scales them to a short side of --short-side (default 144, so 180x144 files). 144 is the
smallest short side NVIDIA's GPU decoder takes for every codec it may meet (NVDEC minimums: H.264 48x16,
VP9 128x128, HEVC 144x144; DALI's GPU backend rejects a smaller video), so a default dataset trains on a GPU
machine too; the loaders resize to the training short side either way (40 in the demo), so what a network
sees is the same drawing. `--short-side 64` writes the drawing unscaled (80x64), as before 2026-12.

## Variant `quick` (the default; `make demo` uses it)

Each video: one shape moving over a flat grey background with per-frame noise, 80 frames at 25 fps
(3.2 s, so a 64-frame window fits with room for time offsets), drawn at 80x64 pixels.

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

## Variant `hard`

Sized like a small real check set: 8 classes = 2 shapes x 4 motions, 40 train and 15 val videos per
class, 96 frames (3.84 s) at 25 fps, drawn at 80x64 pixels. Everything but the actor's shape and motion law is
drawn the same way for every class (one draw order, whatever the label), so it carries no class
information, only nuisance:
  - background: a sum of 8 coloured gratings (periods 6-32 px, random orientation, tint and contrast) on a
    random base colour, new for every video; each grating also drifts at its own speed (<= 0.3 px/frame),
    so the background moves even without the camera;
  - camera pan: the whole scene translates by a random velocity (<= 0.6 px/frame) plus a slow sway
    (<= 4 px per axis, period 60-120 frames); the background moves at 0.8-1.0 of the objects' pan (parallax);
    objects leaving the frame come back at the opposite edge (the scene wraps around);
  - distractors (2 by default): triangles and crosses of random vivid colours (the actor's colours come
    from the same distribution), each moving by a law drawn from {drift, rise, fall, swing, vibrate}, so
    neither colour nor "something moves like X" tells the class: the motion must be bound to the
    circle or square, which is drawn on top;
  - jitter: speed, amplitude, period and phase are drawn per video, and a time warp
    tau(t) = t + m sin(2 pi t / L + psi) (m <= 2 frames, L = 48-120) makes the tempo vary within a video;
  - sensor noise of +-9 grey levels on every pixel of every frame.

Classes (label: name): the actor is a circle (0-3) or a square (4-7) of radius 7-10 px, and moves by
    rise     up at 0.4-1.2 px/frame of warped time (>= 0.29 px/frame of real time; relative to the
             background too: the pan's parallax residue is at most 0.2 px/frame)
    fall     down, the same speeds                                   (direction: needs frame order)
    swing    x = x0 + A sin(2 pi tau / Q + phi): A = 6-12 px, period Q = 28-44 frames
    vibrate  x = x0 + A sin(2 pi t / 8 + 2 pi tau / Q + phi): the same slow swing plus a carrier of
             exactly 1/8 cycle per frame (period 6.2-6.8 frames). At stride 8 every sample advances the
             carrier by whole cycles, so a stride-8 clip of a vibrate video equals, frame for frame, a
             stride-8 clip of a swing video whose phase is phi + 2 pi s / 8 (s = the clip's first frame) --
             and that swing video is as likely as this one: the two classes have the same distribution
             of stride-8 clips. At stride 4 the carrier flips sign every sample: the actor zigzags across
             its swing, which no swing video does.
So F (4 frames at stride 8 in the demo preset) cannot tell swing from vibrate for either shape (4 of the
8 classes pair up), A (8 frames at stride 4) can. The background still identifies each labeled video
(see "Why flat" above): with 1 label per class that shortcut is part of what makes the variant hard.
Splits: 1pct = 1 per class, 10pct = 10% of --per-class (at least 2; 4 at the default 40), seeds 0, 1, 2.

Determinism: video (subset, class, i) draws from numpy's PCG64 seeded with [seed, subset, class, i]
(hard: [seed, subset, class, i, 1]); the encoder runs single-threaded with bit-exact flags, so the same
seed gives byte-identical files on the same software versions.
"""
from __future__ import annotations

import argparse
import colorsys
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


# ---- variant "hard" ----------------------------------------------------------------------------------

HARD_SHAPES = ("circle", "square")
HARD_MOTIONS = ("rise", "fall", "swing", "vibrate")
HARD_CLASSES = tuple(f"{shape}_{motion}" for shape in HARD_SHAPES for motion in HARD_MOTIONS)
DISTRACTOR_SHAPES = ("triangle_up", "triangle_down", "cross")
DISTRACTOR_MOTIONS = ("drift", *HARD_MOTIONS)
CARRIER_PERIOD = 8  # frames: vibrate's fast carrier, F's stride in the demo preset
_GRATINGS = 8
_HARD_TAG = 1  # appended to the RNG seed: hard videos never share a stream with quick ones


@dataclass(frozen=True)
class MovingShape:
    """One object of a hard scene: its look and its motion law in scene coordinates (before the pan)."""

    shape: str  # circle | square | triangle_up | triangle_down | cross
    radius: float
    color: tuple[float, float, float]
    motion: str  # one of HARD_MOTIONS or "drift"
    x0: float
    y0: float
    speed: float  # px per frame of warped time: rise, fall, drift
    angle: float  # drift direction (radians)
    amplitude: float  # px: swing, vibrate
    period: float  # frames: the slow swing of swing and vibrate
    phase: float  # radians: swing, vibrate
    warp: tuple[float, float, float]  # (m, L, psi) of the time warp tau(t) = t + m sin(2 pi t / L + psi)


@dataclass(frozen=True)
class Camera:
    """The pan: the scene translates by `pan(t) = velocity t + sway sin(2 pi t / sway_period + sway_phase)`."""

    velocity: tuple[float, float]
    sway: tuple[float, float]
    sway_period: float
    sway_phase: tuple[float, float]
    depth: float  # the background moves by depth * pan(t) (parallax: it is farther than the objects)


@dataclass(frozen=True, eq=False)
class Background:
    """`base + sum_k colors[k] cos(2 pi freqs[k] . p + phases[k] - omegas[k] t)` at scene point p."""

    base: np.ndarray  # (3,) RGB
    freqs: np.ndarray  # (K, 2) cycles per px along (x, y)
    phases: np.ndarray  # (K,) radians
    omegas: np.ndarray  # (K,) radians per frame: each grating drifts on its own
    colors: np.ndarray  # (K, 3) RGB amplitude of each grating


@dataclass(frozen=True, eq=False)
class HardScene:
    """Everything that determines one hard video. `actor=None` leaves the actor out (tests, probes)."""

    frames: int
    width: int
    height: int
    background: Background
    camera: Camera
    distractors: tuple[MovingShape, ...]
    actor: MovingShape | None
    noise_seed: int


@dataclass(frozen=True)
class HardVideoSpec(VideoSpec):
    """What identifies one generated hard video (its repr is the resume key): a quick one's fields, with
    the hard defaults, and the number of distractors."""

    frames: int = 96
    distractors: int = 2


def _vivid_color(rng: np.random.Generator) -> tuple[float, float, float]:
    r, g, b = colorsys.hsv_to_rgb(rng.uniform(), rng.uniform(0.6, 1.0), rng.uniform(0.75, 1.0))
    return (255.0 * r, 255.0 * g, 255.0 * b)


def _draw_shape(rng: np.random.Generator, shape: str, motion: str, radii: tuple[float, float], w: int, h: int
                ) -> MovingShape:
    """Draw every parameter of every motion law, whichever `motion` is: the draws never depend on it."""
    r = rng.uniform(*radii)
    color = _vivid_color(rng)
    amplitude = rng.uniform(6, 12)
    x0 = w / 2 + rng.uniform(-1, 1) * max(0.0, w / 2 - amplitude - r)  # a swing stays inside the frame
    y0 = h / 2 + rng.uniform(-1, 1) * max(0.0, h / 2 - r)
    speed, angle = rng.uniform(0.4, 1.2), rng.uniform(0, 2 * np.pi)
    period, phase = rng.uniform(28, 44), rng.uniform(0, 2 * np.pi)
    warp = (rng.uniform(0, 2), rng.uniform(48, 120), rng.uniform(0, 2 * np.pi))
    return MovingShape(shape, r, color, motion, x0, y0, speed, angle, amplitude, period, phase, warp)


def draw_hard_scene(rng: np.random.Generator, label: int, *, frames: int, width: int, height: int,
                    distractors: int) -> HardScene:
    """Draw a scene of class `label`. The sequence of draws is the same for every label, so two scenes drawn
    from equal generator states differ only in the actor's shape and motion law."""
    periods = np.exp(rng.uniform(np.log(6), np.log(32), _GRATINGS))
    theta = rng.uniform(0, np.pi, _GRATINGS)
    freqs = np.stack([np.cos(theta), np.sin(theta)], axis=1) / periods[:, None]
    drift = rng.uniform(-0.3, 0.3, _GRATINGS)  # px per frame along each grating's normal
    tints = rng.normal(size=(_GRATINGS, 3))
    tints *= (rng.uniform(6, 18, _GRATINGS) / np.linalg.norm(tints, axis=1))[:, None]
    background = Background(base=rng.uniform(70, 170, 3), freqs=freqs,
                            phases=rng.uniform(0, 2 * np.pi, _GRATINGS),
                            omegas=2 * np.pi * drift / periods, colors=tints)
    pan_speed, pan_angle = rng.uniform(0, 0.6), rng.uniform(0, 2 * np.pi)
    camera = Camera(velocity=(pan_speed * np.cos(pan_angle), pan_speed * np.sin(pan_angle)),
                    sway=(rng.uniform(0, 4), rng.uniform(0, 4)), sway_period=rng.uniform(60, 120),
                    sway_phase=(rng.uniform(0, 2 * np.pi), rng.uniform(0, 2 * np.pi)),
                    depth=rng.uniform(0.8, 1.0))
    others = []
    for _ in range(distractors):
        shape = DISTRACTOR_SHAPES[rng.integers(len(DISTRACTOR_SHAPES))]
        motion = DISTRACTOR_MOTIONS[rng.integers(len(DISTRACTOR_MOTIONS))]
        others.append(_draw_shape(rng, shape, motion, (5, 8), width, height))
    shape, motion = HARD_CLASSES[label].split("_")
    actor = _draw_shape(rng, shape, motion, (7, 10), width, height)
    return HardScene(frames, width, height, background, camera, tuple(others), actor,
                     noise_seed=int(rng.integers(2**63)))


def camera_pan(camera: Camera, t: np.ndarray) -> np.ndarray:
    """Scene translation at frames t: `(T, 2)` px (x, y)."""
    sway = np.sin(2 * np.pi * t[:, None] / camera.sway_period + np.array(camera.sway_phase))
    return t[:, None] * np.array(camera.velocity) + np.array(camera.sway) * sway


def shape_centres(obj: MovingShape, t: np.ndarray, pan: np.ndarray, w: int, h: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Screen centre (x, y) of `obj` at frames t (each `(T,)`), after the pan `(T, 2)`, wrapped around."""
    m, period, psi = obj.warp
    tau = t + m * np.sin(2 * np.pi * t / period + psi)
    x, y = np.full_like(t, obj.x0), np.full_like(t, obj.y0)
    if obj.motion in ("rise", "fall"):
        y = y + (obj.speed if obj.motion == "fall" else -obj.speed) * tau
    elif obj.motion == "drift":
        x, y = x + obj.speed * np.cos(obj.angle) * tau, y + obj.speed * np.sin(obj.angle) * tau
    elif obj.motion == "swing":
        x = x + obj.amplitude * np.sin(2 * np.pi * tau / obj.period + obj.phase)
    elif obj.motion == "vibrate":  # the carrier runs on real time: whole cycles between stride-8 samples
        x = x + obj.amplitude * np.sin(2 * np.pi * t / CARRIER_PERIOD + 2 * np.pi * tau / obj.period
                                       + obj.phase)
    else:
        raise ValueError(f"unknown motion {obj.motion!r}")
    reach = 1.5 * obj.radius  # wrap only once the whole shape (and its outline) is off-screen
    x, y = x - pan[:, 0], y - pan[:, 1]
    return np.mod(x + reach, w + 2 * reach) - reach, np.mod(y + reach, h + 2 * reach) - reach


def _signed_distance(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    """Distance in px to the shape's outline (negative inside), for offsets from its centre."""
    if shape == "circle":
        return np.sqrt(dx**2 + dy**2) - r
    if shape == "square":  # the circle's area
        return np.maximum(np.abs(dx), np.abs(dy)) - r * np.sqrt(np.pi) / 2
    if shape in ("triangle_up", "triangle_down"):  # equilateral, circumradius 1.3 r; image y points down
        dy = dy if shape == "triangle_up" else -dy
        edges = np.maximum(dy, np.maximum(-0.866 * dx - 0.5 * dy, 0.866 * dx - 0.5 * dy))
        return edges - 0.65 * r
    if shape == "cross":
        ax, ay, arm = np.abs(dx), np.abs(dy), r / 3
        return np.minimum(np.maximum(ax - r, ay - arm), np.maximum(ax - arm, ay - r))
    raise ValueError(f"unknown shape {shape!r}")


def render_background(scene: HardScene) -> np.ndarray:
    """The moving, panned background alone: `(T, H, W, 3)` float32, before objects and noise."""
    bg, t = scene.background, np.arange(scene.frames, dtype=np.float64)
    offset = scene.camera.depth * camera_pan(scene.camera, t)  # screen pixel p shows scene point p + offset
    ys, xs = np.mgrid[0:scene.height, 0:scene.width].astype(np.float32)
    spatial = 2 * np.pi * (bg.freqs[:, 0, None, None] * xs + bg.freqs[:, 1, None, None] * ys)  # (K, H, W)
    temporal = 2 * np.pi * offset @ bg.freqs.T + bg.phases - bg.omegas * t[:, None]  # (T, K)
    waves = np.cos(spatial[None].astype(np.float32) + temporal[:, :, None, None].astype(np.float32))
    return np.einsum("tkhw,kc->thwc", waves, bg.colors.astype(np.float32)) + bg.base.astype(np.float32)


def render_scene(scene: HardScene) -> np.ndarray:
    """Generate the frames of a hard scene: `(T, H, W, 3)` uint8 RGB."""
    t = np.arange(scene.frames, dtype=np.float64)
    h, w = scene.height, scene.width
    video = render_background(scene)
    pan = camera_pan(scene.camera, t)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    objects = scene.distractors + ((scene.actor,) if scene.actor is not None else ())
    for obj in objects:  # the actor last: on top, so its shape is never hidden
        x, y = shape_centres(obj, t, pan, w, h)
        dist = _signed_distance(obj.shape, xs[None] - x[:, None, None].astype(np.float32),
                                ys[None] - y[:, None, None].astype(np.float32), obj.radius)
        color = np.array(obj.color, dtype=np.float32)
        # a dark 1.5-px outline keeps every shape visible on any background; 1-px soft edges keep
        # sub-pixel motion visible
        outer = np.clip(0.5 - dist, 0.0, 1.0)[..., None]
        inner = np.clip(-1.0 - dist, 0.0, 1.0)[..., None]
        video += outer * (0.3 * color - video)
        video += inner * (color - video)
    video += np.random.default_rng(scene.noise_seed).integers(-9, 10, size=video.shape, dtype=np.int8)
    return np.clip(np.rint(video), 0, 255).astype(np.uint8)


def hard_scene(spec: HardVideoSpec) -> HardScene:
    """The scene of one hard video, drawn from its own seeded generator."""
    rng = np.random.default_rng([spec.seed, _SUBSETS[spec.subset], spec.label, spec.index, _HARD_TAG])
    return draw_hard_scene(rng, spec.label, frames=spec.frames, width=spec.width, height=spec.height,
                           distractors=spec.distractors)


def render_hard_video(spec: HardVideoSpec) -> np.ndarray:
    """Generate the frames of one hard video: `(T, H, W, 3)` uint8 RGB."""
    return render_scene(hard_scene(spec))


# ---- both variants --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Variant:
    """A variant's classes and default sizes."""

    classes: tuple[str, ...]
    per_class: int
    val_per_class: int
    frames: int
    width: int
    height: int


VARIANTS = {"quick": Variant(CLASSES, 30, 10, 80, 80, 64), "hard": Variant(HARD_CLASSES, 40, 15, 96, 80, 64)}
# The files' short side: the smallest every GPU decoder (NVDEC) codec takes (pipelines.device.NVDEC_MIN_SIZE).
DEFAULT_SHORT_SIDE = 144


def variant_splits(variant: str, per_class: int) -> dict[str, int]:
    """Labeled videos per class of each split. quick keeps its fixed 10pct = 3 (its output must not change
    for the same arguments); hard's 10pct is 10% of its training videos per class, at least 2."""
    if variant == "quick":
        return SPLITS
    return {"1pct": 1, "10pct": max(2, (per_class + 5) // 10)}


def make_jobs(*, classes: int, per_class: int, val_per_class: int, seed: int, frames: int, width: int,
              height: int, ext: str, limit: int | None = None, variant: str = "quick",
              distractors: int = 2) -> list[Job]:
    names = VARIANTS[variant].classes
    jobs = []
    for subset, count in (("train", per_class), ("val", val_per_class)):
        subset_jobs = []
        for label in range(classes):
            for i in range(count):
                name = names[label]
                if variant == "quick":
                    spec = VideoSpec(label, subset, i, seed, frames, width, height)
                    render, source = functools.partial(render_video, spec), f"synthetic:{subset}/{name}/{i}"
                else:
                    spec = HardVideoSpec(label, subset, i, seed, frames, width, height, distractors)
                    render = functools.partial(render_hard_video, spec)
                    source = f"synthetic-hard:{subset}/{name}/{i}"
                subset_jobs.append(Job(
                    source=source, rel=f"videos/{subset}/{name}/{name}_{i:03d}{ext}", label=label,
                    subset=subset, make_frames=render, source_key=repr(spec), expected_frames=frames))
        jobs += subset_jobs[:limit]
    return jobs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m preprocess.synthetic",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="dataset folder to write")
    p.add_argument("--variant", choices=sorted(VARIANTS), default="quick",
                   help="quick (the demo's, default) or hard (textured panning scenes, distractors)")
    p.add_argument("--classes", type=int, help=f"first N classes (quick: at most and default {len(CLASSES)}, "
                                               f"hard: {len(HARD_CLASSES)})")
    p.add_argument("--per-class", type=int, help="training videos per class (quick 30, hard 40)")
    p.add_argument("--val-per-class", type=int, help="validation videos per class (quick 10, hard 15)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--frames", type=int, help="frames per video (quick 80, hard 96; >= 64 for the paper's "
                                              "window)")
    p.add_argument("--width", type=int, help="width of the drawing (quick and hard: 80; the file: --short-side)")
    p.add_argument("--height", type=int, help="height of the drawing (quick and hard: 64; the file: --short-side)")
    p.add_argument("--distractors", type=int, help="hard only: moving shapes besides the actor (default 2)")
    # 144: the files decode on the GPU too (NVDEC minimums, module docstring); 180x144 for the 80x64 drawing.
    add_encode_args(p, fps=25, short_side=DEFAULT_SHORT_SIDE)
    args = p.parse_args(argv)
    variant = VARIANTS[args.variant]
    for key in ("classes", "per_class", "val_per_class", "frames", "width", "height"):
        if getattr(args, key) is None:
            setattr(args, key, len(variant.classes) if key == "classes" else getattr(variant, key))

    def build() -> Summary:
        settings = settings_from_args(args)
        if not 1 <= args.classes <= len(variant.classes):
            raise PreprocessError(f"--classes must be in 1..{len(variant.classes)} for --variant {args.variant}")
        if args.per_class < 1 or args.val_per_class < 0 or args.frames < 1:
            raise PreprocessError("--per-class and --frames must be >= 1, --val-per-class >= 0")
        if min(args.width, args.height) < 32:
            raise PreprocessError("--width and --height must be at least 32")
        if args.distractors is not None and (args.variant != "hard" or args.distractors < 0):
            raise PreprocessError("--distractors is for --variant hard only, and must be >= 0")
        distractors = 2 if args.distractors is None else args.distractors
        jobs = make_jobs(classes=args.classes, per_class=args.per_class, val_per_class=args.val_per_class,
                         seed=args.seed, frames=args.frames, width=args.width, height=args.height,
                         ext=settings.ext, limit=args.limit, variant=args.variant, distractors=distractors)
        generated = {"classes": args.classes, "per_class": args.per_class, "val_per_class": args.val_per_class,
                     "frames": args.frames, "width": args.width, "height": args.height}
        meta = {"source": "synthetic", "seed": args.seed, "generated": generated}
        if args.variant != "quick":  # quick's meta.json keeps exactly its old keys
            meta = {"source": "synthetic", "variant": args.variant, "seed": args.seed,
                    "generated": {**generated, "distractors": distractors}}
        return build_dataset(args.out, dataset="synthetic", classes=list(variant.classes[:args.classes]),
                             jobs=jobs, settings=settings, workers=args.workers,
                             splits=variant_splits(args.variant, args.per_class), extra_meta=meta)

    return run_cli(build)


if __name__ == "__main__":
    from preprocess.entry import run_main

    run_main(main)
