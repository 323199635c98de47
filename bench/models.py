"""Parameters and forward FLOPs per clip of every registered 3D-ResNet variant, as a markdown table.

    python -m bench.models                      # cmpl layout (paper Table A2), 400 classes
    python -m bench.models --layout slowonly    # the SlowOnly layout of pytorchvideo's slow_r50

FLOPs are counted by torch.utils.flop_counter.FlopCounterMode, which counts a multiply-add as 2 FLOPs
(convolutions and the linear layer; BN, ReLU and pooling are not counted, as in fvcore). `--unit
gmacs` prints multiply-adds instead, the convention of PySlowFast/pytorchvideo model zoos and, judging
by its numbers, of the paper's Table 3. The models are built on the meta device: shapes only, no
weights and no arithmetic, so the table takes seconds (mostly importing torch).
"""
from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from cmpl import models
from cmpl.models.resnet3d import LAYOUTS

# pytorchvideo's model zoo: slow_r50, 8x8, Kinetics-400, "FLOPs (G)" (multiply-adds, at 8x256^2).
PYTORCHVIDEO_SLOW_R50_GMACS = 54.52


def count_flops(model: torch.nn.Module, frames: int, size: int) -> int:
    """FLOPs (2 per multiply-add) of one forward pass on a (1, 3, frames, size, size) clip."""
    x = torch.empty(1, 3, frames, size, size, device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return counter.get_total_flops()


def table(layout: str, num_classes: int, unit: str) -> str:
    """Markdown table: one row per registered variant."""
    scale = 1e9 if unit == "gflops" else 2e9
    label = "GFLOPs" if unit == "gflops" else "GMACs"
    rows = [
        f"| model ({layout}) | params (M) | {label} 8×224² | {label} 16×224² |",
        "|---|---:|---:|---:|",
    ]
    for name in models.names():
        with torch.device("meta"):
            model = models.build(name, num_classes=num_classes, layout=layout).eval()
        params = sum(p.numel() for p in model.parameters()) / 1e6
        g8, g16 = (count_flops(model, frames, 224) / scale for frames in (8, 16))
        rows.append(f"| {name} | {params:.2f} | {g8:.1f} | {g16:.1f} |")
    return "\n".join(rows)


def slow_r50_check() -> str:
    """One line comparing our SlowOnly R50 to pytorchvideo's published slow_r50 cost."""
    with torch.device("meta"):
        model = models.resnet3d(depth=50, num_classes=400, layout="slowonly").eval()
    gmacs = count_flops(model, 8, 256) / 2e9
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return (
        f"Cross-check: slowonly resnet3d50, 400 classes, 8×256²: {params:.2f}M params, {gmacs:.2f} GMACs "
        f"(pytorchvideo model zoo, slow_r50: 32.45M, {PYTORCHVIDEO_SLOW_R50_GMACS} G)."
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layout", choices=sorted(LAYOUTS), default="cmpl")
    parser.add_argument("--num-classes", type=int, default=400, help="classifier size (default: Kinetics-400)")
    parser.add_argument("--unit", choices=("gflops", "gmacs"), default="gflops")
    args = parser.parse_args(argv)
    if args.num_classes < 1:
        parser.error("--num-classes must be >= 1")
    print(table(args.layout, args.num_classes, args.unit))
    print()
    unit_note = "2 FLOPs per multiply-add" if args.unit == "gflops" else "multiply-adds"
    print(f"Forward pass, batch 1, {args.num_classes} classes; {unit_note}; counted with "
          "torch.utils.flop_counter.FlopCounterMode on the meta device.")
    print(slow_r50_check())


if __name__ == "__main__":
    from preprocess.entry import run_main

    run_main(main)
