"""Building blocks of the 3D-ResNets: stem, basic and bottleneck residual blocks, classifier head.

Every block is a plain `nn.Module` on `(N, C, T, H, W)` tensors. Convolutions have no bias because a
BatchNorm follows each of them (its beta plays that role); this also matches pytorchvideo, so the
SlowOnly R50 has exactly the published parameter count.
"""
from __future__ import annotations

import torch
from torch import nn

Triple = tuple[int, int, int]


def conv_bn(c_in: int, c_out: int, kernel: Triple, stride: Triple = (1, 1, 1)) -> nn.Sequential:
    """Conv3d ("same" padding for odd kernels, no bias) followed by BatchNorm3d.

    Padding is kernel // 2 on every axis, so the only size changes come from `stride`.
    """
    pad = tuple(k // 2 for k in kernel)
    return nn.Sequential(
        nn.Conv3d(c_in, c_out, kernel, stride=stride, padding=pad, bias=False),
        nn.BatchNorm3d(c_out),
    )


STEMS = ("imagenet", "small", "cifar")


class Stem(nn.Module):
    """conv1 + BN + ReLU (+ max-pool); T unchanged.

    ::

        "imagenet" (the paper's; spatial size / 4):
        x (N, C_in, T, H, W)
          -> Conv3d k=(kt,7,7) s=(1,2,2) -> BN -> ReLU   (N, C, T, H/2, W/2)
          -> MaxPool3d k=(1,3,3) s=(1,2,2)               (N, C, T, H/4, W/4)
        "small" (low-resolution clips; spatial size / 2):
          -> Conv3d k=(kt,3,3) s=(1,2,2) -> BN -> ReLU   (N, C, T, H/2, W/2)
        "cifar" (as CIFAR ResNets; spatial size kept):
          -> Conv3d k=(kt,3,3) s=1 -> BN -> ReLU         (N, C, T, H, W)

    The ImageNet stem takes a 32-px crop to 8x8 before the first block and to 1x1 at res5. "small" keeps
    twice that resolution at 4x the FLOPs of res2..res5, "cifar" four times at 16x (bench.models).
    """

    def __init__(self, c_in: int, c_out: int, temporal_kernel: int, kind: str = "imagenet") -> None:
        super().__init__()
        if kind not in STEMS:
            raise ValueError(f"stem must be one of {', '.join(STEMS)}, got {kind!r}")
        if kind == "imagenet":
            self.conv = conv_bn(c_in, c_out, (temporal_kernel, 7, 7), (1, 2, 2))
            self.pool: nn.Module = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        else:
            s = 2 if kind == "small" else 1
            self.conv = conv_bn(c_in, c_out, (temporal_kernel, 3, 3), (1, s, s))
            self.pool = nn.Identity()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.relu(self.conv(x)))


class _Residual(nn.Module):
    """Shared residual wiring: out = ReLU(branch(x) + shortcut(x)).

    The shortcut is a 1x1x1 conv + BN (stride (1,s,s)) when the shape changes, else identity.
    """

    branch: nn.Sequential

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.shortcut: nn.Module = (
            conv_bn(c_in, c_out, (1, 1, 1), (1, stride, stride))
            if c_in != c_out or stride != 1
            else nn.Identity()
        )
        self.relu = nn.ReLU(inplace=True)

    def last_bn(self) -> nn.BatchNorm3d:
        """The BatchNorm that ends the residual branch (zero-initialised by the builder)."""
        bn = self.branch[-1][-1]
        assert isinstance(bn, nn.BatchNorm3d)
        return bn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.branch(x) + self.shortcut(x))


class BasicBlock(_Residual):
    """Two 3x3 convs (ResNet-10/18/34).

    ::

        x (N, C_in, T, H, W) ------------------------------------+
          -> Conv3d k=(kt,3,3) s=(1,s,s) -> BN -> ReLU            |  shortcut: identity, or
          -> Conv3d k=(1,3,3)            -> BN                    |  Conv3d 1x1x1 s=(1,s,s) + BN
          -> (+) <------------------------------------------------+
          -> ReLU                              (N, C_out, T, H/s, W/s)

    A basic block has no 1x1x1 conv that a 3x1x1 kernel could replace, so the temporal kernel `kt`
    (3 where the layout asks for temporal modelling) inflates the first 3x3 conv to 3x3x3, as I3D and
    mmaction2's BasicBlock3d do. This keeps the property that matters in Table A2: every such block
    widens the temporal receptive field by 2 frames, without adding layers the paper does not have.
    """

    def __init__(self, c_in: int, c_inner: int, c_out: int, *, stride: int, temporal_kernel: int) -> None:
        super().__init__(c_in, c_out, stride)
        self.branch = nn.Sequential(
            conv_bn(c_in, c_inner, (temporal_kernel, 3, 3), (1, stride, stride)),
            nn.ReLU(inplace=True),
            conv_bn(c_inner, c_out, (1, 3, 3)),
        )


class Bottleneck(_Residual):
    """1x1 reduce, 3x3, 1x1 expand (ResNet-50/101).

    ::

        x (N, C_in, T, H, W) ------------------------------------+
          -> Conv3d k=(kt,1,1)            -> BN -> ReLU           |  shortcut: identity, or
          -> Conv3d k=(1,3,3) s=(1,s,s)   -> BN -> ReLU           |  Conv3d 1x1x1 s=(1,s,s) + BN
          -> Conv3d k=(1,1,1)             -> BN                   |
          -> (+) <------------------------------------------------+
          -> ReLU                              (N, C_out, T, H/s, W/s)

    The spatial stride sits on the 3x3 conv (torchvision "ResNet v1.5", pytorchvideo), which keeps
    more information than striding the 1x1 conv.
    """

    def __init__(self, c_in: int, c_inner: int, c_out: int, *, stride: int, temporal_kernel: int) -> None:
        super().__init__(c_in, c_out, stride)
        self.branch = nn.Sequential(
            conv_bn(c_in, c_inner, (temporal_kernel, 1, 1)),
            nn.ReLU(inplace=True),
            conv_bn(c_inner, c_inner, (1, 3, 3), (1, stride, stride)),
            nn.ReLU(inplace=True),
            conv_bn(c_inner, c_out, (1, 1, 1)),
        )


class Head(nn.Module):
    """Global average pool over (T, H, W), dropout, linear classifier.

    ::

        x (N, C, T, H, W) -> AdaptiveAvgPool3d(1) -> flatten (N, C) -> Dropout -> Linear -> (N, K)

    Adaptive pooling (instead of pytorchvideo's fixed AvgPool3d(8,7,7)) accepts any T, H, W; both
    have no parameters, so the counts agree.
    """

    def __init__(self, c_in: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(torch.flatten(self.pool(x), 1)))
