"""Multi-view test of a trained network: softmax averaged over clips x crops, top-1/top-5, per class.

    python -m cmpl.evaluate --checkpoint runs/X/checkpoints/last.pt
    python -m cmpl.evaluate --checkpoint runs/X/checkpoints/primary.pt --data.root data/ucf101 --out e.json
    python -m cmpl.evaluate --checkpoint runs/X/checkpoints/last.pt --network aux
    python -m cmpl.evaluate --checkpoint runs/X/checkpoints/last.pt --weights ema   # optim.ema_decay > 0 runs

The checkpoint (last.pt / best.pt, or the F-only export primary.pt) carries its config; `--section.key`
overrides apply on top (e.g. `--data.root`, `--data.eval_clips`). The official protocol is the config's
data.eval_clips x data.eval_crops (10 x 3 in the paper presets: ten uniform clips, three 256-px crops of
the 256-px short side). The JSON goes to `--out`, else RUN/eval.json (RUN/eval_aux.json for A; `_ema` before
`.json` for `--weights ema`) next to RUN/checkpoints/, else beside the checkpoint.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, ContextManager, Iterable, Sequence

import torch
from torch import nn

from cmpl import checkpoint as ckpt_io
from cmpl import cli, registry, runtime
from cmpl import config as cfg_mod
from cmpl import distributed as dist_mod
from cmpl.atomic import write_json
from cmpl.datasets import require_dataset


def video_probabilities(
    net: nn.Module,
    video: torch.Tensor,
    *,
    autocast: Callable[[], ContextManager] = runtime.autocast_factory("off", torch.device("cpu")),
    channels_last: bool = False,
) -> torch.Tensor:
    """`video` `(N, V, C, T, H, W)` (V = clips x crops) -> `(N, K)`: the mean over the V views of the
    softmax of `net`'s logits (float32). The caller sets eval mode and no_grad; shared by evaluate and
    predict so both score a video the same way."""
    n, v = video.shape[:2]
    x = runtime.to_channels_last(video.flatten(0, 1), channels_last)
    with autocast():
        logits = net(x)
    return logits.float().softmax(dim=-1).view(n, v, -1).mean(dim=1)


@torch.no_grad()
def evaluate_network(
    net: nn.Module,
    loader: Iterable[dict[str, torch.Tensor]],
    *,
    num_classes: int,
    device: torch.device,
    autocast: Callable[[], ContextManager] = runtime.autocast_factory("off", torch.device("cpu")),
    channels_last: bool = False,
    dist: dist_mod.DistInfo = dist_mod.DistInfo(),
) -> dict[str, Any]:
    """Top-1/top-5 and per-class accuracy of `net` over an eval loader.

    Each batch holds `video` `(N, V, C, T, H, W)` (V = clips x crops) and `label` `(N,)`; the prediction
    of a video is the mean of the softmax of its V views. Counts stay on the device until the end (one
    sync), and are summed over ranks when each rank evaluates its own shard.
    Returns {"top1", "top5" (fractions), "num_videos", "per_class_correct", "per_class_count" (lists)}.
    """
    was_training = net.training
    net.eval()
    correct = torch.zeros(2, device=device, dtype=torch.float64)  # top-1, top-5
    per_class = torch.zeros(2, num_classes, device=device, dtype=torch.float64)  # correct, count
    k = min(5, num_classes)
    try:
        for batch in loader:
            video = batch["video"].to(device, non_blocking=True)
            label = batch["label"].to(device, non_blocking=True)
            probs = video_probabilities(net, video, autocast=autocast, channels_last=channels_last)
            top = probs.topk(k, dim=-1).indices
            hit1 = (top[:, 0] == label).double()
            correct[0] += hit1.sum()
            correct[1] += (top == label[:, None]).any(dim=1).double().sum()
            per_class[0].index_add_(0, label, hit1)
            per_class[1].index_add_(0, label, torch.ones_like(hit1))
    finally:
        net.train(was_training)
    correct = dist_mod.all_reduce_sum(correct, dist)
    per_class = dist_mod.all_reduce_sum(per_class, dist)
    total = float(per_class[1].sum().item())
    c = correct.tolist()
    return {
        "top1": c[0] / max(total, 1.0),
        "top5": c[1] / max(total, 1.0),
        "num_videos": int(total),
        "per_class_correct": [int(x) for x in per_class[0].tolist()],
        "per_class_count": [int(x) for x in per_class[1].tolist()],
    }


def eval_loader(data: cfg_mod.DataConfig, *, frames_stride: tuple[int, int], official: bool,
                dist: dist_mod.DistInfo = dist_mod.DistInfo()) -> Iterable[dict[str, torch.Tensor]]:
    """The val-set loader for one network's clip shape; `official` picks eval_* over val_* views."""
    import pipelines

    clips, crops = (data.eval_clips, data.eval_crops) if official else (data.val_clips, data.val_crops)
    return pipelines.eval_loader(
        data.root, subset="val", batch_size=data.eval_batch, device=data.device,
        clips=clips, crops=crops, crop_size=data.eval_crop_size, short_side=data.eval_short_side,
        frames=frames_stride[0], stride=frames_stride[1], rank=dist.rank, world_size=dist.world_size,
    )


def load_network(path: str | Path, network: str = "primary",
                 overrides: Sequence[tuple[str, str | None]] = (), *, ema: bool = False,
                 ) -> tuple[nn.Module, cfg_mod.Config, dict]:
    """Build the network stored in a checkpoint (full or F-only export) on CPU, weights loaded.

    `ema`: load the exponential moving average of the weights (training checkpoints of runs with
    optim.ema_decay > 0) instead of the raw weights.

    Returns (module, config with overrides applied, raw checkpoint dict).
    """
    from cmpl import models

    ckpt = ckpt_io.load(path)
    if "config" not in ckpt or not ({"models", "model"} & set(ckpt)):
        raise ckpt_io.CheckpointError(f"{path} is not a cmpl checkpoint (no config/models)")
    cfg = cfg_mod.validate(cfg_mod.apply_overrides(cfg_mod.from_dict(ckpt["config"]), overrides))
    owner = registry.network_of(network, aux_shared=cfg.model.aux_shared)
    if "models" in ckpt:
        if owner not in ckpt["models"]:
            raise ckpt_io.CheckpointError(
                f"{path} has no {network!r} network; it has: {', '.join(ckpt['models'])}")
        state = ckpt["models"][owner]
        if ema:
            if owner not in ckpt.get("ema", {}):
                raise ckpt_io.CheckpointError(f"{path} holds no EMA weights (train with --optim.ema_decay > 0)")
            # cmpl.ema.WeightEMA's state (AveragedModel's layout): the module's under "module.", and its step count
            state = {k.removeprefix("module."): v for k, v in ckpt["ema"][owner].items() if k != "n_averaged"}
    elif ema:
        raise ckpt_io.CheckpointError(f"{path} is an inference export: its EMA weights are in the run's last.pt")
    else:
        if owner != ckpt.get("network", "primary"):
            raise ckpt_io.CheckpointError(f"{path} is an inference export of {ckpt.get('network')!r} only")
        state = ckpt["model"]
    if cfg.model.num_classes <= 0 and ckpt.get("classes"):
        cfg = cfg_mod.apply_overrides(cfg, [("model.num_classes", str(len(ckpt["classes"])))])
    net = models.build(registry.role(owner).model_name(cfg.model), num_classes=cfg.model.num_classes,
                       layout=cfg.model.layout, dropout=cfg.model.dropout, stem=cfg.model.stem)
    net.load_state_dict(state)
    return net, cfg, ckpt


def network_clip(cfg: cfg_mod.Config, network: str) -> tuple[int, int]:
    """(frames, stride) of the clips the `network` role is fed (data.primary / data.aux)."""
    return registry.role(network).clip(cfg.data)


def class_names(root: str, num_classes: int) -> list[str]:
    """Names from ROOT/classes.txt, or "0".."K-1" when it cannot be read."""
    try:
        from pipelines.dataset import read_classes

        names = read_classes(root)
        if len(names) == num_classes:
            return names
    except (ValueError, OSError):
        pass
    return [str(i) for i in range(num_classes)]


def default_out(checkpoint: Path, network: str, ema: bool = False) -> Path:
    name = registry.role(network).eval_name(ema)
    if checkpoint.parent.name == "checkpoints":
        return checkpoint.parent.parent / name
    return checkpoint.with_name(f"{checkpoint.stem}_{name}")


def run(argv: Sequence[str]) -> dict[str, Any]:
    """CLI body; raises ConfigError / CheckpointError / DatasetError on user errors."""
    opts, overrides = cli.parse_argv(argv, options=("checkpoint", "network", "out", "weights"))
    if not opts.get("checkpoint"):
        raise cfg_mod.ConfigError("--checkpoint PATH is required")
    network = opts.get("network") or "primary"
    if network not in registry.ROLES:
        raise cfg_mod.ConfigError(f"--network must be one of {', '.join(registry.ROLES)}, got {network!r}")
    weights = opts.get("weights") or "raw"
    if weights not in ("raw", "ema"):
        raise cfg_mod.ConfigError(f"--weights must be raw or ema, got {weights!r}")
    path = Path(opts["checkpoint"])
    net, cfg, ckpt = load_network(path, network, overrides, ema=weights == "ema")
    require_dataset(cfg.data.root)
    device = runtime.resolve_device(cfg.runtime.device)
    amp = runtime.resolve_amp(cfg.runtime.amp, device)
    net = net.to(device)
    if cfg.runtime.channels_last:
        net = net.to(memory_format=torch.channels_last_3d)
    fs = network_clip(cfg, network)
    loader = eval_loader(cfg.data, frames_stride=fs, official=True)
    res = evaluate_network(net, loader, num_classes=cfg.model.num_classes, device=device,
                           autocast=runtime.autocast_factory(amp, device),
                           channels_last=cfg.runtime.channels_last)
    names = ckpt.get("classes") or class_names(cfg.data.root, cfg.model.num_classes)
    per_class = {
        n: (c / t if t else None)
        for n, c, t in zip(names, res.pop("per_class_correct"), res["per_class_count"])
    }
    out = {
        "top1": res["top1"], "top5": res["top5"], "num_videos": res["num_videos"],
        "per_class": per_class, "per_class_count": dict(zip(names, res.pop("per_class_count"))),
        "checkpoint": str(path), "network": network, "weights": weights,
        "model": registry.role(registry.network_of(network, aux_shared=cfg.model.aux_shared)).model_name(cfg.model),
        "step": int(ckpt.get("step", 0)), "data_root": cfg.data.root,
        "clips": cfg.data.eval_clips, "crops": cfg.data.eval_crops, "crop_size": cfg.data.eval_crop_size,
        "frames": fs[0], "stride": fs[1], "amp": amp,
    }
    dest = Path(opts["out"]) if opts.get("out") else default_out(path, network, weights == "ema")
    write_json(dest, out)
    print(f"{network} top-1 {out['top1']:.4f} top-5 {out['top5']:.4f} on {out['num_videos']} videos "
          f"({out['clips']} clips x {out['crops']} crops) -> {dest}")
    return out


def main(argv: Sequence[str] | None = None) -> None:
    from pipelines.dataset import DatasetError

    cli.run_cli(__doc__, argv, run, errors=(ckpt_io.CheckpointError, DatasetError))


if __name__ == "__main__":
    from preprocess.entry import run_main

    run_main(main)
