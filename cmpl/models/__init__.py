"""Named 3D-ResNet variants: ``build("resnet3d50_w1_4", num_classes=400, layout="cmpl")``.

The registry holds names only (depth, width), not configs: layout, classes and dropout come from the
caller, so one name means the same network shape in every layout. ``_wA_B`` means width A/B.
"""
from __future__ import annotations

from fractions import Fraction

from cmpl.models.resnet3d import DEPTHS, LAYOUTS, Layout, ResNet3d, resnet3d

# name -> (depth, width). Paper networks (Sec. 3.3, Table 3) first, then tiny CPU variants for tests
# and the demo.
_VARIANTS: dict[str, tuple[int, Fraction]] = {
    "resnet3d10": (10, Fraction(1)),
    "resnet3d18": (18, Fraction(1)),
    "resnet3d34": (34, Fraction(1)),
    "resnet3d50": (50, Fraction(1)),
    "resnet3d101": (101, Fraction(1)),
    "resnet3d50_w1_2": (50, Fraction(1, 2)),
    "resnet3d50_w1_4": (50, Fraction(1, 4)),
    "resnet3d50_w1_8": (50, Fraction(1, 8)),
    "resnet3d10_w1_8": (10, Fraction(1, 8)),
    "resnet3d10_w1_4": (10, Fraction(1, 4)),
    "resnet3d18_w1_4": (18, Fraction(1, 4)),
}


def names() -> list[str]:
    """All registered variant names, in registry order (paper networks first)."""
    return list(_VARIANTS)


def spec(name: str) -> tuple[int, float]:
    """(depth, width) of a registered variant; ValueError listing the valid names otherwise."""
    if name not in _VARIANTS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(_VARIANTS)}")
    depth, width = _VARIANTS[name]
    return depth, float(width)


def build(name: str, *, num_classes: int, layout: Layout = "cmpl", dropout: float = 0.5,
          stem: str = "imagenet") -> ResNet3d:
    """Build a registered variant. Input `(N, 3, T, H, W)`, output logits `(N, num_classes)`."""
    depth, width = spec(name)
    return resnet3d(depth=depth, width=width, num_classes=num_classes, layout=layout, dropout=dropout,
                    stem=stem)


__all__ = ["DEPTHS", "LAYOUTS", "Layout", "ResNet3d", "build", "names", "resnet3d", "spec"]
