"""RandAugment's op suite for video clips: DALI's own suite, with contrast and auto-contrast taken per clip.

DALI's `auto_aug` contrast and auto-contrast compute their statistics per frame (a contrast center, a
min/max range per frame). For a clip that makes the one drawn augmentation act differently on each frame;
here the statistics are over the whole clip (axes F, H, W), so a clip gets one intensity mapping, like
every other op of the suite. On the CPU backend these versions also run as single fused operators
(`fn.contrast`, `fn.crop_mirror_normalize` with per-clip arguments) instead of DALI's chains of arithmetic
operators: about 6x and 4x cheaper per 16-frame 224 px clip (bench/RESULTS.md). On the GPU, where
statistics computed on the device cannot be operator arguments, they keep DALI's arithmetic form.

Everything else (op list and order, magnitude ranges, `select`, `signed_bin`) is DALI's.
"""
from __future__ import annotations

import numpy as np
from nvidia.dali import fn, types
from nvidia.dali.auto_aug import augmentations, rand_augment
from nvidia.dali.auto_aug.core import augmentation

# PIL's ImageEnhance.Contrast centre: the mean of the luma L = 0.299 R + 0.587 G + 0.114 B.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def contrast_fused(data, parameter):
    """CPU form of `clip_contrast`: one `fn.contrast` with the clip's centre as a per-sample argument."""
    center = fn.reductions.sum(fn.reductions.mean(data, axis_names="FHW") * types.Constant(_LUMA), axes=0)
    return fn.contrast(data, contrast=parameter, contrast_center=center)


def contrast_arithmetic(data, parameter):
    """GPU form of `clip_contrast` (DALI's arithmetic, statistics over F, H, W); also runs on the CPU."""
    mean = fn.reductions.mean(data, axis_names="FHW", keep_dims=True)
    center = fn.reductions.sum(mean * types.Constant(_LUMA), axis_names="C", keep_dims=True)
    return fn.cast_like(center + (data - center) * parameter, data)


@augmentation(mag_range=(0, 0.9), randomly_negate=True, mag_to_param=augmentations.shift_enhance_range)
def clip_contrast(data, parameter):
    """PIL-style contrast around the clip's mean luma: out = c + (x - c) * parameter."""
    return (contrast_fused if data.device == "cpu" else contrast_arithmetic)(data, parameter)


def _range(data, keep_dims: bool):
    """Per channel over the clip: (lo as float, spread = hi - lo, spread > 0, spread == 0)."""
    lo = fn.cast(fn.reductions.min(data, axis_names="FHW", keep_dims=keep_dims), dtype=types.FLOAT)
    spread = fn.cast(fn.reductions.max(data, axis_names="FHW", keep_dims=keep_dims), dtype=types.FLOAT) - lo
    stretch = spread > 0
    return lo, spread, stretch, stretch ^ True


def auto_contrast_fused(data):
    """CPU form of `clip_auto_contrast`: one crop_mirror_normalize with per-clip mean/std arguments,
    (x - lo) / (spread / 255), or (x - 0) / 1 for a constant channel, rounded and saturated to uint8."""
    lo, spread, stretch, keep = _range(data, keep_dims=False)
    return fn.crop_mirror_normalize(data, mean=lo * stretch, std=spread * stretch / 255.0 + keep,
                                    dtype=types.UINT8, output_layout="FHWC")


def auto_contrast_arithmetic(data):
    """GPU form of `clip_auto_contrast` (DALI's arithmetic, statistics over F, H, W); also runs on the CPU."""
    lo, spread, stretch, keep = _range(data, keep_dims=True)
    return fn.cast_like((data - lo * stretch) * (255.0 / (spread * stretch + keep * 255.0)), data)


@augmentation
def clip_auto_contrast(data, _):
    """Per channel, stretch the clip's [min, max] to [0, 255]; a constant channel is left as it is."""
    return (auto_contrast_fused if data.device == "cpu" else auto_contrast_arithmetic)(data)


def clip_suite() -> list:
    """DALI's RandAugment suite (use_shape=True) with contrast and auto_contrast replaced, order unchanged."""
    replace = {"contrast": clip_contrast, "auto_contrast": clip_auto_contrast}
    return [replace.get(op.name, op) for op in rand_augment.get_rand_augment_suite(use_shape=True)]
