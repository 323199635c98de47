"""The baselines users would write: a video decoder + torchvision.transforms.v2 in a DataLoader.

Two decoders, the same transforms (one code path, so the two differ only in decoding):
- `decoder="pyav"` (mmaction2-style): PyAV seeks to the keyframe before the first wanted frame and decodes
  forward;
- `decoder="torchcodec"`: PyTorch's own decoder, `torchcodec.decoders.VideoDecoder(path).get_frames_at(...)`
  with its defaults (exact seek mode, one FFmpeg thread). Optional: `pip install 'cmpl[peers]'` and FFmpeg
  4-8 shared libraries (Debian: `apt-get install ffmpeg`); `torchcodec_missing()` says what is absent.
Both read the same frames and use the same crop/flip/scale/Cutout draws as the DALI loaders (all come from
`sampling.py`), so they are independent checks of the DALI path, and they are the baselines (c) and (d) of
bench/loader.py. RandAugment is torchvision's own (`v2.RandAugment`, its own RNG), as a user's pipeline would
have it. Yields the same dicts as the DALI loaders, on the CPU.
"""
from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Callable, Iterator

import av
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from pipelines import sampling
from pipelines.dataset import read_split

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]
CUTOUT_FILL = torch.tensor([124, 116, 104], dtype=torch.uint8).view(3, 1, 1)


def decode_frames(path: Path, frames: np.ndarray, fps: float) -> torch.Tensor:
    """`(len(frames), 3, H, W)` uint8 RGB: seek to the keyframe before the first wanted frame, decode forward."""
    wanted = sorted(set(int(i) for i in frames))
    got: dict[int, np.ndarray] = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        base = stream.start_time or 0
        container.seek(base + int(wanted[0] / fps / stream.time_base), stream=stream, backward=True)
        for frame in container.decode(stream):
            i = int(round((frame.pts - base) * stream.time_base * fps))
            if i in wanted:  # convert only the frames we need
                got[i] = frame.to_ndarray(format="rgb24")
            if i >= wanted[-1]:
                break
    if not got:
        raise RuntimeError(f"{path}: no frames decoded; rerun preprocess")
    top = max(got)  # num_frames overstated: repeat the last frame, like the clamping rule
    try:
        out = np.stack([got[min(int(i), top)] for i in frames])
    except KeyError as e:
        raise RuntimeError(f"{path}: frame {e} not decoded; rerun preprocess") from None
    return torch.from_numpy(out).permute(0, 3, 1, 2)


def torchcodec_missing() -> str | None:
    """None if torchcodec and its FFmpeg libraries load; else one line saying what to install."""
    try:
        from torchcodec.decoders import VideoDecoder  # noqa: F401 -- loads the FFmpeg libraries
    except Exception as e:  # noqa: BLE001 -- ImportError, or RuntimeError/OSError when libav* are missing
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return (f"torchcodec unavailable ({type(e).__name__}: {why[:120]}); install it with "
                "`pip install 'cmpl[peers]'` and FFmpeg 4-8 libraries (Debian: `apt-get install ffmpeg`)")
    return None


def decode_frames_torchcodec(path: Path, frames: np.ndarray, fps: float) -> torch.Tensor:
    """`(len(frames), 3, H, W)` uint8 RGB via torchcodec; `fps` unused (it indexes frames itself)."""
    from torchcodec.decoders import VideoDecoder

    try:
        decoder = VideoDecoder(str(path))
        top = len(decoder) - 1  # num_frames overstated: repeat the last frame, like the clamping rule
        return decoder.get_frames_at(np.minimum(frames, top).tolist()).data
    except (RuntimeError, ValueError, IndexError) as e:
        raise RuntimeError(f"{path}: torchcodec could not decode it ({e}); rerun preprocess") from None


DECODERS: dict[str, Callable[[Path, np.ndarray, float], torch.Tensor]] = {
    "pyav": decode_frames, "torchcodec": decode_frames_torchcodec}


def _resize_crop(clip: torch.Tensor, view: sampling.View, crop: int) -> torch.Tensor:
    """Short side to `view.short_side`, crop at the normalized anchor, optional flip; `(T, 3, c, c)` uint8."""
    clip = F.resize(clip, [int(round(view.short_side))], antialias=True)
    h, w = clip.shape[-2:]
    # half away from zero, like DALI's crop rounding (Python's round() would go to even)
    top, left = math.floor(view.y * (h - crop) + 0.5), math.floor(view.x * (w - crop) + 0.5)
    clip = F.crop(clip, top, left, crop, crop)
    return F.horizontal_flip(clip) if view.flip else clip


def _normalize(clip: torch.Tensor) -> torch.Tensor:
    """`(T, 3, H, W)` uint8 -> `(3, T, H, W)` float32, ImageNet-normalized."""
    clip = F.normalize(F.to_dtype(clip, torch.float32, scale=True), MEAN, STD)
    return clip.permute(1, 0, 2, 3).contiguous()


def _strong(clip: torch.Tensor, view: sampling.View, crop: int, ra_ops: int) -> torch.Tensor:
    clip = _resize_crop(clip, view, crop)
    if ra_ops:
        clip = v2.RandAugment(num_ops=ra_ops, magnitude=int(np.random.randint(0, 31)))(clip)
    y, x, h, w = (int(v) for v in view.cutout)
    clip = clip.clone()
    clip[..., y : y + h, x : x + w] = CUTOUT_FILL
    return _normalize(clip)


class _PlanDataset(Dataset):
    """Item g = sample g % per_epoch of epoch g // per_epoch of a TrainPlan, as a dict of `(3, T, H, W)` tensors.

    Indexing across epochs lets one DataLoader (and its worker processes) serve every epoch, as a user's
    `persistent_workers=True` loader would, instead of forking new workers at each epoch.
    """

    def __init__(self, plan: sampling.TrainPlan, with_indices: bool, decoder: str = "pyav"):
        self.plan, self.with_indices, self.decode = plan, with_indices, DECODERS[decoder]
        self.per_epoch = len(plan) * plan.batch_size
        self._slots: tuple[int, list] = (-1, [])

    def __getitem__(self, g: int) -> dict[str, torch.Tensor]:
        p = self.plan
        epoch, j = divmod(g, self.per_epoch)
        if self._slots[0] != epoch:
            self._slots = (epoch, p.epoch_samples(epoch))
        s = p.sample(epoch, *self._slots[1][j])
        union, (p_pos, a_pos) = sampling.union_positions(s.primary_indices, s.aux_indices)
        frames = self.decode(s.record.path, union, s.record.fps)
        primary, aux = frames[torch.from_numpy(p_pos).long()], frames[torch.from_numpy(a_pos).long()]
        clips = {"primary": primary, "aux": aux}
        out = {}
        for v in p.kind.views:  # the same views, in the same order, as the DALI graph of this kind
            clip, view = clips[v.clip], s.views[v.name]
            out[v.name] = (_strong(clip, view, p.spec.crop_size, p.spec.ra_ops) if v.augment == "strong"
                           else _normalize(_resize_crop(clip, view, p.spec.crop_size)))
        out["label"] = torch.tensor(s.record.label, dtype=torch.int64)
        if self.with_indices:
            out["primary_indices"] = torch.from_numpy(s.primary_indices)
            out["aux_indices"] = torch.from_numpy(s.aux_indices)
        return out


class ReferenceLoader:
    """Infinite iterator over epochs of a TrainPlan with a torch DataLoader of `num_workers` processes;
    `decoder`: a key of DECODERS."""

    def __init__(self, plan: sampling.TrainPlan, *, num_workers: int = 2, with_indices: bool = False,
                 decoder: str = "pyav"):
        if decoder not in DECODERS:
            raise ValueError(f"decoder must be one of {sorted(DECODERS)}, got {decoder!r}")
        self.plan, self.num_workers, self.with_indices, self.decoder = plan, num_workers, with_indices, decoder
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.plan)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        data = _PlanDataset(self.plan, self.with_indices, self.decoder)
        start = self.epoch * data.per_epoch
        loader = DataLoader(data, batch_size=self.plan.batch_size, sampler=itertools.count(start),
                            num_workers=self.num_workers, prefetch_factor=2 if self.num_workers else None)
        for i, batch in enumerate(loader, start=1):
            yield batch
            if i % len(self.plan) == 0:
                self.epoch += 1


def reference_loader(root: str | Path, *, split: str, kind: sampling.Kind | str, batch_size: int,
                     spec: sampling.ClipSpec = sampling.ClipSpec(), seed: int = 0, rank: int = 0,
                     world_size: int = 1, with_indices: bool = False, num_workers: int = 2,
                     drop_last: bool = True, decoder: str = "pyav") -> ReferenceLoader:
    """Reference twin of `pipelines.train_loader` (same batches of frames, CPU tensors).

    `decoder`: "pyav" (baseline (c) of bench/loader.py) or "torchcodec" (baseline (d)).
    """
    kind = sampling.KINDS[kind] if isinstance(kind, str) else kind
    labeled_set, unlabeled_set = read_split(root, split)
    plan = sampling.TrainPlan(labeled_set if kind is sampling.LABELED else unlabeled_set, kind, batch_size, spec,
                              seed, rank, world_size, drop_last)
    return ReferenceLoader(plan, num_workers=num_workers, with_indices=with_indices, decoder=decoder)
