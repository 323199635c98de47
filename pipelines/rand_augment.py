"""RandAugment's op suite for video clips: DALI's own suite, with contrast and auto-contrast taken per clip.

DALI's `auto_aug` contrast and auto-contrast compute their statistics per frame (a contrast center, a
min/max range per frame). For a clip that makes the one drawn augmentation act differently on each frame;
here the statistics are over the whole clip (axes F, H, W), so a clip gets one intensity mapping, like
every other op of the suite. On the CPU backend, contrast also runs as one `fn.contrast` with the clip's
centre as a per-sample argument instead of DALI's chain of arithmetic operators: about 6x cheaper per
16-frame 224 px clip (`python -m bench.ra_ops`, bench/RESULTS.md). On the GPU, where statistics computed on
the device cannot be operator arguments, it keeps DALI's arithmetic form.

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


@augmentation
def clip_auto_contrast(data, _):
    """Per channel, stretch the clip's [min, max] to [0, 255]; a constant channel is left as it is.

    DALI's arithmetic with the statistics over F, H, W. (A single crop_mirror_normalize with per-clip
    arguments costs the same on the CPU: its float-to-uint8 conversion is the slow part of both.)
    """
    lo = fn.cast(fn.reductions.min(data, axis_names="FHW", keep_dims=True), dtype=types.FLOAT)
    spread = fn.cast(fn.reductions.max(data, axis_names="FHW", keep_dims=True), dtype=types.FLOAT) - lo
    stretch = spread > 0
    return fn.cast_like((data - lo * stretch) * (255.0 / (spread * stretch + (stretch ^ True) * 255.0)), data)


# DALI's own sharpness and equalize call the deprecated aliases fn.experimental.filter / .equalize, and DALI
# issues that DeprecationWarning under its own `simplefilter("default")`, which overrides any warnings filter
# of ours: a warning on every pipeline build that users cannot act on. These are the same augmentations
# (DALI's decorator arguments, tests/test_rand_augment.py compares them) calling the operators' current names;
# an alias and its operator are one kernel, so the output is identical.
@augmentation(mag_range=(0, 0.9), randomly_negate=True, mag_to_param=augmentations.sharpness_kernel,
              param_device="auto")
def sharpness(data, kernel):
    return fn.filter(data, kernel)


@augmentation
def equalize(data, _):
    return fn.equalize(data)


DALI_TRANSLATE = 100 / 224  # DALI's translate_x/y limit (use_shape=True), as a fraction of the crop


def clip_suite(translate: float = DALI_TRANSLATE) -> list:
    """DALI's RandAugment suite (use_shape=True) with contrast and auto_contrast replaced, order unchanged.

    `translate`: the largest shift of translate_x/y as a fraction of the crop (DALI's 100/224 by default;
    FixMatch's RandAugment shifts at most 0.3, which keeps more of a small object in view).
    """
    replace = {"contrast": clip_contrast, "auto_contrast": clip_auto_contrast,
               "sharpness": sharpness, "equalize": equalize}  # the last two: DALI's, without deprecated names
    if translate != DALI_TRANSLATE:
        replace.update({name: getattr(augmentations, name).augmentation(mag_range=(0, translate))
                        for name in ("translate_x", "translate_y")})
    return [replace.get(op.name, op) for op in rand_augment.get_rand_augment_suite(use_shape=True)]
