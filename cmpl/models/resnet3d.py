"""The 3D-ResNet family of the paper (depth 10/18/34/50/101, width multiplier, two layouts).

::

    clip (N, 3, T, H, W)
      -> Stem: conv1 (kt,7,7) s(1,2,2), max-pool (1,3,3) s(1,2,2)   (N,   64w, T, H/4,  W/4)
      -> res2: blocks, stride 1                                     (N, 64we, T, H/4,  W/4)
      -> res3: blocks, spatial stride 2 in the first block          (N, 128we, T, H/8,  W/8)
      -> res4: blocks, spatial stride 2                             (N, 256we, T, H/16, W/16)
      -> res5: blocks, spatial stride 2                             (N, 512we, T, H/32, W/32)
      -> Head: global average pool, dropout, linear                 (N, num_classes)

    w = width multiplier, e = block expansion (1 basic, 4 bottleneck); T is never downsampled.

Layouts (temporal kernel of conv1, and of the first conv of each block per stage res2..res5):

- ``cmpl``: the paper's Table A2. conv1 5x7x7, temporal kernel 3 in every block of every stage.
- ``slowonly``: SlowOnly of PySlowFast / pytorchvideo ``slow_r50``. conv1 1x7x7, temporal kernel 3
  only in res4 and res5 (early layers see too little motion at 8 fps for it to help, per SlowFast).
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from cmpl.models.blocks import BasicBlock, Bottleneck, Head, Stem

Layout = Literal["cmpl", "slowonly"]

# Blocks per stage (res2..res5) and block type, as in torchvision's and PySlowFast's depth tables.
DEPTHS: dict[int, tuple[tuple[int, int, int, int], type[BasicBlock] | type[Bottleneck]]] = {
    10: ((1, 1, 1, 1), BasicBlock),
    18: ((2, 2, 2, 2), BasicBlock),
    34: ((3, 4, 6, 3), BasicBlock),
    50: ((3, 4, 6, 3), Bottleneck),
    101: ((3, 4, 23, 3), Bottleneck),
}

# layout -> (conv1 temporal kernel, temporal kernel of the first conv of each block in res2..res5).
LAYOUTS: dict[str, tuple[int, tuple[int, int, int, int]]] = {
    "cmpl": (5, (3, 3, 3, 3)),
    "slowonly": (1, (1, 1, 3, 3)),
}

_STAGE_WIDTHS = (64, 128, 256, 512)  # inner width of res2..res5 at width 1
_STAGE_STRIDES = (1, 2, 2, 2)  # spatial; temporal stride is 1 everywhere (no temporal downsampling)


def _scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


class ResNet3d(nn.Module):
    """A 3D-ResNet: `stem -> res2..res5 -> head`. Build it with :func:`resnet3d`.

    `features(x)` returns the last feature map `(N, num_features, T, H/32, W/32)` (H, W rounded up
    at each stride); `forward(x)` returns logits `(N, num_classes)`.
    """

    def __init__(self, stem: Stem, stages: nn.Sequential, head: Head, *, in_channels: int) -> None:
        super().__init__()
        self.stem = stem
        self.stages = stages
        self.head = head
        self.in_channels = in_channels
        self.num_features = head.fc.in_features

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, T, H, W) -> (N, num_features, T, ceil(H/32), ceil(W/32))."""
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected input (N, {self.in_channels}, T, H, W), got shape {tuple(x.shape)}"
            )
        return self.stages(self.stem(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, T, H, W) float -> logits (N, num_classes)."""
        return self.head(self.features(x))


def resnet3d(
    *,
    depth: int,
    width: float = 1.0,
    num_classes: int,
    layout: Layout = "cmpl",
    dropout: float = 0.5,
    in_channels: int = 3,
    zero_init_residual: bool = True,
    stem: str = "imagenet",
) -> ResNet3d:
    """Build a 3D-ResNet.

    Args:
        depth: 10, 18, 34 (basic blocks) or 50, 101 (bottlenecks).
        width: multiplier on the channels of the stem and of every stage (1, 1/2, 1/4, 1/8, ...);
            each layer keeps at least 1 channel.
        num_classes: size of the classifier output.
        layout: ``"cmpl"`` (paper Table A2) or ``"slowonly"`` (pytorchvideo slow_r50).
        dropout: dropout probability before the classifier.
        in_channels: channels of the input clip (3 for RGB).
        zero_init_residual: start the last BN gamma of every residual branch at 0, so each block is
            the identity at step 0 and the deep net trains like a shallow one early on (Goyal et al.,
            "Accurate, Large Minibatch SGD"; PySlowFast's ZERO_INIT_FINAL_BN for its Kinetics
            recipes). The convs inside a branch then receive zero gradient until that gamma moves
            (after the first optimizer step).
        stem: ``"imagenet"`` (7x7 stride 2 + max-pool, the paper's) or ``"small"`` (3x3 stride 1, no
            pool: CIFAR ResNets' stem, for clips of a few dozen pixels).

    Returns:
        ResNet3d mapping `(N, in_channels, T, H, W)` to logits `(N, num_classes)`, any T >= 1.
    """
    if depth not in DEPTHS:
        raise ValueError(f"depth must be one of {sorted(DEPTHS)}, got {depth}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {sorted(LAYOUTS)}, got {layout!r}")
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    blocks_per_stage, block = DEPTHS[depth]
    stem_kt, stage_kts = LAYOUTS[layout]
    expansion = 4 if block is Bottleneck else 1

    c_in = _scaled(64, width)
    stem_module = Stem(in_channels, c_in, stem_kt, stem)
    stages = []
    for n_blocks, c_base, stride, kt in zip(blocks_per_stage, _STAGE_WIDTHS, _STAGE_STRIDES, stage_kts):
        c_inner = _scaled(c_base, width)
        c_out = c_inner * expansion
        layers = []
        for i in range(n_blocks):
            layers.append(block(c_in, c_inner, c_out, stride=stride if i == 0 else 1, temporal_kernel=kt))
            c_in = c_out
        stages.append(nn.Sequential(*layers))
    model = ResNet3d(
        stem_module, nn.Sequential(*stages), Head(c_in, num_classes, dropout), in_channels=in_channels
    )
    _init_weights(model, zero_init_residual=zero_init_residual)
    return model


def _init_weights(model: ResNet3d, *, zero_init_residual: bool) -> None:
    # He init (fan_out) for ReLU nets trained from scratch, as torchvision and PySlowFast do; a small
    # classifier init (std 0.01, PySlowFast's FC_INIT_STD) keeps the first softmax near uniform, so
    # early pseudo-labels are not confident by accident.
    for m in model.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm3d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in model.modules():
            if isinstance(m, (BasicBlock, Bottleneck)):
                nn.init.zeros_(m.last_bn().weight)
