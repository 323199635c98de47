"""The paper's Fig. 5 probe: how much accuracy each network loses when its clip has fewer distinct frames.

Each test clip of T frames is resampled with stride s in {1, 2, 4, 8}: frame i is replaced by frame
floor(i / s) * s of the same clip, so the clip keeps its length T but shows only ceil(T / s) distinct frames
(stride 1 is the clip unchanged). The drop ratio at stride s is (acc_1 - acc_s) / acc_1; a network that
relies on motion loses more.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

STRIDES = (1, 2, 4, 8)


def resample_indices(length: int, stride: int) -> torch.Tensor:
    """Frame positions `(length,)` int64: position i shows frame floor(i / stride) * stride of the clip."""
    if length < 1 or stride < 1:
        raise ValueError(f"length and stride must be >= 1, got {length}, {stride}")
    return torch.div(torch.arange(length), stride, rounding_mode="floor") * stride


def resample_clip(video: torch.Tensor, stride: int, dim: int = -3) -> torch.Tensor:
    """Resample the time axis `dim` of `video` (e.g. `(N, C, T, H, W)` with dim=-3) with `stride`."""
    index = resample_indices(video.shape[dim], stride).to(video.device)
    return video.index_select(dim, index)


@dataclass(frozen=True)
class StrideResult:
    stride: int
    correct: int
    total: int

    @property
    def top1(self) -> float:
        """Top-1 in percent (0 when no video was seen)."""
        return 100.0 * self.correct / self.total if self.total else 0.0


@torch.no_grad()
def stride_accuracies(model: nn.Module, batches: Iterable[dict], strides: Sequence[int] = STRIDES,
                      device: torch.device | str = "cpu") -> list[StrideResult]:
    """Top-1 of `model` for each stride on an eval loader's batches.

    Each batch holds `video` `(N, V, C, T, H, W)` (V = clips x crops) and `label` `(N,)`. The V views'
    softmax scores are averaged per video, as the multi-view test protocol does; every stride is scored on
    the same decoded batch, so the data is read once.
    """
    model.eval().to(device)
    correct = {s: 0 for s in strides}
    total = 0
    for batch in batches:
        video = batch["video"].to(device)
        label = batch["label"].to(device)
        n, v = video.shape[:2]
        flat = video.flatten(0, 1)
        for s in strides:
            probs = model(resample_clip(flat, s, dim=2)).float().softmax(-1).view(n, v, -1).mean(1)
            correct[s] += int((probs.argmax(-1) == label).sum())
        total += n
    return [StrideResult(s, correct[s], total) for s in strides]


def drop_ratios(results: Sequence[StrideResult]) -> dict[int, float]:
    """(acc_1 - acc_s) / acc_1 per stride, relative to the stride-1 result (NaN if acc_1 is 0)."""
    base = next((r.top1 for r in results if r.stride == 1), None)
    if base is None:
        raise ValueError("the drop ratio needs the stride-1 result")
    return {r.stride: (base - r.top1) / base if base > 0 else float("nan") for r in results}
