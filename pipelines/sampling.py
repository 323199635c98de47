"""Which frames and which augmentation parameters each sample gets: pure functions of (seed, epoch, slot).

Shared by the DALI loaders and the reference loader, so both see the same frames. Every random draw is
made here in Python (none inside the DALI graph), which makes a batch a pure function of the loader's
seed, epoch and position: resuming from `state_dict()` reproduces the uninterrupted run exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipelines.dataset import VideoRecord

# Streams of the per-sample RNG, so that labeled and unlabeled draws never coincide.
TAG_UNLABELED, TAG_LABELED = 1, 2
# DALI's RandAugment suite (get_rand_augment_suite) has 14 operations; FixMatch's RA setting applies
# 2 of them with a magnitude drawn uniformly per operation (`ra_ops` can change the 2; 0 disables RA).
RA_SUITE_SIZE = 14
RA_NUM_OPS = 2
RA_NUM_BINS = 31
CUTOUT_MAX = 0.5  # FixMatch: a square of side U(0, 0.5] x crop size
SCALE_JITTER = (1.0, 1.25)  # SlowFast's [256, 320] short side, as a ratio of short_side


def clip_indices(start: int, frames: int, stride: int, num_frames: int) -> np.ndarray:
    """`frames` indices from `start` every `stride`, clamped to the video: a short video repeats its last frame."""
    return np.minimum(start + stride * np.arange(frames), num_frames - 1).astype(np.int64)


def window_starts(
    rng: np.random.Generator, num_frames: int, fps: float, primary: tuple[int, int], aux: tuple[int, int],
    time_offset: float,
) -> tuple[int, int]:
    """Start frames of the primary and auxiliary windows (each `frames * stride` long).

    The primary starts uniformly in the video. The auxiliary starts uniformly among the starts that are
    both within t_s = `time_offset` seconds (rounded to frames) of the primary's and inside the video, so
    near the ends of a video the shift is drawn from what fits instead of being clamped onto the first or
    last window (clamping a U[-t_s, t_s] draw piled a third of the K400 draws onto each end). When no such
    start exists (A's window is longer than what is left) A takes the valid start nearest to F's.
    """
    p_start = int(rng.integers(0, max(0, num_frames - primary[0] * primary[1]) + 1))
    a_last = max(0, num_frames - aux[0] * aux[1])
    reach = round(time_offset * fps) if time_offset > 0 else 0
    lo, hi = max(0, p_start - reach), min(a_last, p_start + reach)
    if reach == 0 or lo > hi:
        return p_start, min(p_start, a_last)
    return p_start, int(rng.integers(lo, hi + 1))


def eval_indices(num_frames: int, clips: int, frames: int, stride: int) -> np.ndarray:
    """`(clips, frames)` indices: clip starts spread evenly from frame 0 to the last full window."""
    last = max(0, num_frames - frames * stride)
    starts = np.rint(np.linspace(0, last, clips)).astype(np.int64) if clips > 1 else np.array([last // 2])
    return np.stack([clip_indices(int(s), frames, stride, num_frames) for s in starts])


def union_positions(*clips: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Sorted unique frames to decode once, and for each clip the positions of its frames in that union."""
    union, inverse = np.unique(np.concatenate(clips), return_inverse=True)
    bounds = np.cumsum([0] + [len(c) for c in clips])
    return union.astype(np.int32), [inverse[a:b].astype(np.int32) for a, b in zip(bounds[:-1], bounds[1:])]


@dataclass(frozen=True)
class View:
    """Per-clip augmentation parameters (one draw, applied to every frame of the clip).

    `short_side`: resize target of the frame's short side; `x`, `y`: crop anchor in [0, 1] of the free
    range (0.5 = center); `flip`: horizontal flip; `ra`: `(ra_ops, 3)` int32 rows (op id, magnitude
    bin, negate) or None; `cutout`: (y, x, h, w) in pixels of the crop, or None.
    """

    short_side: float
    x: float = 0.5
    y: float = 0.5
    flip: bool = False
    ra: np.ndarray | None = None
    cutout: tuple[float, float, float, float] | None = None


def weak_view(short_side: int) -> View:
    """Resize the short side, center crop."""
    return View(float(short_side))


def standard_view(rng: np.random.Generator, short_side: int, flip: bool = True) -> View:
    """Labeled (SlowFast-style): short-side scale jitter, random crop, horizontal flip (if `flip`)."""
    s = short_side * rng.uniform(*SCALE_JITTER)
    return View(float(s), float(rng.random()), float(rng.random()), bool(rng.random() < 0.5) and flip)


def strong_view(rng: np.random.Generator, short_side: int, crop_size: int, ra_ops: int = RA_NUM_OPS,
                jitter: float = 1.0, flip: bool = True) -> View:
    """Random crop + flip at the weak scale, then RandAugment (`ra_ops` ops, random magnitudes) and Cutout.

    `jitter` scales the crop anchor's spread around the weak view's centre crop (1: anywhere in the frame,
    0: the weak crop itself); `flip` False never mirrors. The draws are the same whatever the two are.
    """
    x, y, flip = (0.5 + jitter * (float(rng.random()) - 0.5), 0.5 + jitter * (float(rng.random()) - 0.5),
                  bool(rng.random() < 0.5) and flip)
    ra = np.stack([
        rng.integers(0, RA_SUITE_SIZE, ra_ops),
        rng.integers(0, RA_NUM_BINS, ra_ops),
        rng.integers(0, 2, ra_ops),
    ], axis=1).astype(np.int32).reshape(ra_ops, 3)
    side = max(1.0, math.floor(rng.uniform(0.0, CUTOUT_MAX) * crop_size))
    cy, cx = (float(rng.integers(0, crop_size - int(side) + 1)) for _ in range(2))
    return View(float(short_side), x, y, flip, ra, (cy, cx, side, side))


@dataclass(frozen=True)
class TrainSample:
    """Everything needed to produce one training sample, independent of the backend."""

    record: VideoRecord
    primary_indices: np.ndarray  # (T_p,)
    aux_indices: np.ndarray  # (T_a,)
    views: dict[str, View]  # by Kind.views name: unlabeled primary_weak/strong, aux_weak/strong; labeled primary, aux


def sample_rng(seed: int, tag: int, epoch: int, key: int) -> np.random.Generator:
    return np.random.default_rng([seed, tag, epoch, key])


@dataclass(frozen=True)
class ClipSpec:
    """What the training clips are: one object, passed whole from the config to the loaders and plans.

    primary / aux: (frames, stride) of F's and A's clips; time_offset: t_s, the largest shift (seconds)
    between the two clips' starts (0: the same start); crop_size / short_side: training crop of the
    short-side-resized frames; ra_ops: RandAugment ops per strong clip (0: crop, flip and Cutout only).
    """

    primary: tuple[int, int] = (8, 8)
    aux: tuple[int, int] = (16, 4)
    time_offset: float = 0.0
    crop_size: int = 224
    short_side: int = 256
    ra_ops: int = RA_NUM_OPS
    ra_translate: float = 100 / 224  # RandAugment's largest shift, a fraction of the crop (DALI's default)
    strong_jitter: float = 1.0  # spread of the strong crop around the weak one (1: anywhere)
    flip: bool = True  # horizontal flips in the labeled and strong views

    def __post_init__(self) -> None:
        for name in ("primary", "aux"):
            clip = tuple(int(v) for v in getattr(self, name))
            if len(clip) != 2 or min(clip) < 1:
                raise ValueError(f"{name} clip must be (frames >= 1, stride >= 1), got {getattr(self, name)}")
            object.__setattr__(self, name, clip)
        if self.time_offset < 0:
            raise ValueError(f"time_offset must be >= 0 seconds, got {self.time_offset}")
        if self.crop_size > self.short_side:
            raise ValueError(f"crop_size {self.crop_size} must not exceed short_side {self.short_side}")
        if self.ra_ops < 0:
            raise ValueError(f"ra_ops must be >= 0, got {self.ra_ops}")
        if not 0 < self.ra_translate <= 1 or not 0 <= self.strong_jitter <= 1:
            raise ValueError(f"need 0 < ra_translate <= 1 and 0 <= strong_jitter <= 1, got {self.ra_translate}, "
                             f"{self.strong_jitter}")


@dataclass(frozen=True)
class ViewSlot:
    """One output clip of a sample: its name in the batch dict, which clip it is cut from, how augmented."""

    name: str  # batch key, e.g. "primary_strong"
    clip: str  # "primary" | "aux": which frames
    augment: str  # "standard" | "weak" | "strong"


@dataclass(frozen=True)
class Kind:
    """Labeled or unlabeled training data: its RNG stream and the views each sample yields, in order."""

    name: str
    tag: int
    views: tuple[ViewSlot, ...]

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(v.name for v in self.views)

    def draw_views(self, rng: np.random.Generator, spec: ClipSpec) -> dict[str, View]:
        draw = {"standard": lambda: standard_view(rng, spec.short_side, spec.flip),
                "weak": lambda: weak_view(spec.short_side),
                "strong": lambda: strong_view(rng, spec.short_side, spec.crop_size, spec.ra_ops,
                                              spec.strong_jitter, spec.flip)}
        return {v.name: draw[v.augment]() for v in self.views}


LABELED = Kind("labeled", TAG_LABELED, (ViewSlot("primary", "primary", "standard"),
                                        ViewSlot("aux", "aux", "standard")))
UNLABELED = Kind("unlabeled", TAG_UNLABELED, tuple(
    ViewSlot(f"{clip}_{aug}", clip, aug) for clip in ("primary", "aux") for aug in ("weak", "strong")))
KINDS = {k.name: k for k in (LABELED, UNLABELED)}


def draw_train_sample(record: VideoRecord, rng: np.random.Generator, kind: Kind, spec: ClipSpec) -> TrainSample:
    """Frames and views of one training sample, in a fixed draw order."""
    p_start, a_start = window_starts(rng, record.num_frames, record.fps, spec.primary, spec.aux, spec.time_offset)
    p_idx = clip_indices(p_start, *spec.primary, record.num_frames)
    a_idx = clip_indices(a_start, *spec.aux, record.num_frames)
    return TrainSample(record, p_idx, a_idx, kind.draw_views(rng, spec))


def epoch_slots(
    num_videos: int, *, seed: int, tag: int, epoch: int, rank: int, world_size: int, batch_size: int,
    drop_last: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """(video ids, RNG keys) this rank reads in `epoch`, in order; length = batches * batch_size (or less).

    A per-epoch permutation is padded cyclically to a multiple of `world_size` (as DistributedSampler
    does) and dealt round-robin, so shards are disjoint up to that padding and cover the set. A shard
    smaller than one batch is repeated to fill one batch (the labeled set can be tiny). Keys are the
    global positions, unique within the epoch, so repeated videos get fresh random draws.
    """
    perm = np.random.default_rng([seed, tag, epoch]).permutation(num_videos)
    padded = np.resize(perm, math.ceil(num_videos / world_size) * world_size)
    local = padded[rank::world_size]
    n = len(local)
    if drop_last:
        count = max(1, n // batch_size) * batch_size
    else:
        count = n
    ids = np.resize(local, count)
    keys = np.arange(count) * world_size + rank
    return ids, keys


def batches_per_epoch(num_videos: int, *, world_size: int, batch_size: int, drop_last: bool) -> int:
    n = math.ceil(num_videos / world_size)
    return max(1, n // batch_size) if drop_last else math.ceil(n / batch_size)


@dataclass(frozen=True)
class TrainPlan:
    """The samples of every (epoch, batch) of one rank's training loader; pure, backend-independent."""

    records: list[VideoRecord]
    kind: Kind
    batch_size: int
    spec: ClipSpec = ClipSpec()
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    drop_last: bool = True

    @property
    def tag(self) -> int:
        return self.kind.tag

    def __len__(self) -> int:
        return batches_per_epoch(len(self.records), world_size=self.world_size, batch_size=self.batch_size,
                                 drop_last=self.drop_last)

    def epoch_samples(self, epoch: int) -> list[tuple[int, int]]:
        """(video id, RNG key) of every sample this rank reads in `epoch`, in order."""
        ids, keys = epoch_slots(len(self.records), seed=self.seed, tag=self.tag, epoch=epoch, rank=self.rank,
                                world_size=self.world_size, batch_size=self.batch_size, drop_last=self.drop_last)
        return list(zip(ids.tolist(), keys.tolist()))

    def sample(self, epoch: int, video: int, key: int) -> TrainSample:
        return draw_train_sample(self.records[video], sample_rng(self.seed, self.tag, epoch, key), self.kind,
                                 self.spec)

    def batch(self, epoch: int, position: int, slots: list[tuple[int, int]] | None = None) -> list[TrainSample]:
        """Samples of batch `position` of `epoch` (`slots`: epoch_samples(epoch), if already computed)."""
        slots = self.epoch_samples(epoch) if slots is None else slots
        chunk = slots[position * self.batch_size : (position + 1) * self.batch_size]
        return [self.sample(epoch, v, k) for v, k in chunk]
