"""Ship a trained network: a `torch.export` program (`.pt2`), a JSON sidecar, and ONNX when installed.

    python -m cmpl.export --checkpoint runs/X/checkpoints/primary.pt --out export/
    python -m cmpl.export --checkpoint runs/X/checkpoints/last.pt --network aux --out export/ --no-onnx

Writes DIR/<network>.pt2 (batch dimension dynamic), DIR/<network>.json (input shape, frames/stride, fps,
mean/std, eval clips x crops, class names) and, when the `onnx` and `onnxscript` packages are installed
(`pip install -e '.[export]'`), DIR/<network>.onnx. The program needs only torch to run:

    import torch
    program = torch.export.load("export/primary.pt2").module()
    logits = program(clip)  # clip: (N, 3, T, H, W) float32, (RGB - mean) / std as in export/primary.json

Every file is written atomically. `--section.key=value` overrides apply to the checkpoint's config.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from cmpl import checkpoint as ckpt_io
from cmpl import cli
from cmpl import config as cfg_mod
from cmpl import registry
from cmpl.atomic import atomic_path, write_json
from cmpl.evaluate import load_network, network_clip
from cmpl.predict import checkpoint_classes, training_fps

MAX_BATCH = 4096  # upper bound of the dynamic batch dimension (torch.export needs one)


def example_input(cfg: cfg_mod.Config, network: str, batch: int = 2) -> torch.Tensor:
    """A `(batch, 3, T, S, S)` clip of the network's eval shape (T frames, S = data.eval_crop_size)."""
    frames, _ = network_clip(cfg, network)
    s = cfg.data.eval_crop_size
    return torch.randn(batch, 3, frames, s, s)


def export_program(net: nn.Module, example: torch.Tensor) -> torch.export.ExportedProgram:
    """`net` in eval mode as an ExportedProgram whose batch dimension is dynamic."""
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    return torch.export.export(net.eval(), (example,), dynamic_shapes=({0: batch},))


def onnx_available() -> bool:
    """Whether torch's ONNX exporter can run (it needs both onnx and onnxscript)."""
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxscript"))


def sidecar(cfg: cfg_mod.Config, ckpt: dict, network: str, classes: list[str], files: dict[str, str | None],
            checkpoint: str) -> dict[str, Any]:
    """What a user of the program needs to feed it: shapes, clip sampling, normalization, class names."""
    from pipelines.dali_pipelines import MEAN, STD

    frames, stride = network_clip(cfg, network)
    d = cfg.data
    fps = training_fps(ckpt, cfg)
    return {
        **files,
        "network": network,
        "model": registry.role(registry.network_of(network, aux_shared=cfg.model.aux_shared)).model_name(cfg.model),
        "input_shape": ["N", 3, frames, d.eval_crop_size, d.eval_crop_size], "layout": "NCTHW",
        "output": "logits (N, K); a video's prediction is the mean softmax over its clips x crops views",
        "frames": frames, "stride": stride, "fps": None if fps is None else float(fps),
        "short_side": d.eval_short_side, "crop_size": d.eval_crop_size, "clips": d.eval_clips,
        "crops": d.eval_crops,
        "mean": list(MEAN), "std": list(STD), "normalization": "(RGB in 0..255 - mean) / std, per channel",
        "classes": classes, "num_classes": len(classes),
        "checkpoint": checkpoint, "step": int(ckpt.get("step", 0)), "torch": torch.__version__,
    }


def export(checkpoint: str | Path, out: str | Path, network: str = "primary",
           overrides: Sequence[tuple[str, str | None]] = (), onnx: bool = True) -> dict[str, Any]:
    """Write DIR/<network>.pt2, .json (and .onnx when asked and installed); returns the sidecar dict."""
    net, cfg, ckpt = load_network(checkpoint, network, overrides)
    net.eval()
    example = example_input(cfg, network)
    program = export_program(net, example)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, str | None] = {"program": f"{network}.pt2", "onnx": None}
    # A file object: torch.export.save warns about a path that does not end in .pt2 (the temp name).
    with atomic_path(out / files["program"]) as tmp, tmp.open("wb") as fh:
        torch.export.save(program, fh)
    if onnx and onnx_available():
        files["onnx"] = f"{network}.onnx"
        onnx_program = torch.onnx.export(program, (example,), input_names=["clip"], output_names=["logits"],
                                         dynamo=True, verbose=False)
        with atomic_path(out / files["onnx"]) as tmp:
            onnx_program.save(str(tmp))
    classes, _ = checkpoint_classes(ckpt, cfg)
    meta = sidecar(cfg, ckpt, network, classes, files, str(checkpoint))
    write_json(out / f"{network}.json", meta)
    return meta


def run(argv: Sequence[str]) -> None:
    """CLI body; raises ConfigError / CheckpointError on user errors."""
    opts, overrides = cli.parse_argv(argv, options=("checkpoint", "out", "network"), flags=("no-onnx",))
    if not opts.get("checkpoint") or not opts.get("out"):
        raise cfg_mod.ConfigError("--checkpoint PATH and --out DIR are required")
    network = opts.get("network") or "primary"
    if network not in registry.ROLES:
        raise cfg_mod.ConfigError(f"--network must be one of {', '.join(registry.ROLES)}, got {network!r}")
    meta = export(opts["checkpoint"], opts["out"], network, overrides, onnx=not opts.get("no-onnx"))
    out = Path(opts["out"])
    made = [meta["program"], f"{network}.json"] + ([meta["onnx"]] if meta["onnx"] else [])
    print(f"{network} ({meta['model']}, input {meta['input_shape']}) -> {', '.join(str(out / m) for m in made)}")
    if not meta["onnx"] and not opts.get("no-onnx"):
        print("no ONNX file: install the export extra (pip install -e '.[export]') for one")


def main(argv: Sequence[str] | None = None) -> None:
    cli.run_cli(__doc__, argv, run, errors=(ckpt_io.CheckpointError,))


if __name__ == "__main__":
    from cmpl import export as _export  # one module object, so error classes match
    from preprocess.entry import run_main

    run_main(_export.main)
