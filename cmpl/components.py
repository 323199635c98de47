"""Builders of a run's parts, each from its own config section (torchtitan's shape). The Trainer and
bench/train_step.py assemble a run from these, so there is one way to build each part.

    networks  = build_networks(cfg.model, roles, num_classes=K)        # {role: nn.Module}
    loaders   = build_loaders(cfg.data, uses_unlabeled=..., ...)        # labeled / unlabeled / steps per epoch
    optimizer, scheduler = build_optimizer(cfg.optim, cfg.schedule, params, lr=..., ...)
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

from cmpl import registry


def build_networks(model_cfg: Any, roles: Iterable[str], *, num_classes: int) -> dict[str, nn.Module]:
    """{role: module} for `roles`; with `model_cfg.aux_shared` the aux role gets the primary module itself.

    Modules are built in role order (primary first), so a seed set before gives the same weights as ever.
    """
    from cmpl import models

    networks: dict[str, nn.Module] = {}
    for name in roles:
        owner = registry.network_of(name, aux_shared=model_cfg.aux_shared)
        if owner not in networks:
            networks[owner] = models.build(registry.role(owner).model_name(model_cfg), num_classes=num_classes,
                                           layout=model_cfg.layout, dropout=model_cfg.dropout,
                                           stem=model_cfg.stem)
        networks[name] = networks[owner]
    return networks


def distinct(networks: Mapping[str, nn.Module]) -> dict[str, nn.Module]:
    """The networks that own weights, by the name of their first role (a shared aux is dropped)."""
    out: dict[str, nn.Module] = {}
    for name, module in networks.items():
        if all(module is not m for m in out.values()):
            out[name] = module
    return out


def clip_spec(data_cfg: Any) -> Any:
    """The sampling parameters of the training clips (pipelines.sampling.ClipSpec) from a DataConfig."""
    from pipelines.sampling import ClipSpec

    return ClipSpec(primary=registry.ROLES["primary"].clip(data_cfg), aux=registry.ROLES["aux"].clip(data_cfg),
                    time_offset=data_cfg.time_offset, crop_size=data_cfg.crop_size,
                    short_side=data_cfg.short_side, ra_translate=data_cfg.ra_translate,
                    strong_jitter=data_cfg.strong_jitter, flip=data_cfg.flip)


@dataclass
class Loaders:
    labeled: Any  # pipelines.TrainLoader
    unlabeled: Any | None  # None when the method uses no unlabeled data
    steps_per_epoch: int  # optimizer steps in one epoch of schedule.epoch_unit


def build_loaders(data_cfg: Any, *, uses_unlabeled: bool, epoch_unit: str, seed: int, rank: int = 0,
                  world_size: int = 1) -> Loaders:
    """The training loaders of a run; an epoch is one pass over the `epoch_unit` ("labeled"|"unlabeled") set.

    The unlabeled set's length is read without building its pipeline when the method does not use it.
    """
    import pipelines
    from pipelines.loaders import epoch_length

    common = dict(split=data_cfg.split, spec=clip_spec(data_cfg), device=data_cfg.device, seed=seed, rank=rank,
                  world_size=world_size, num_threads=data_cfg.num_threads)
    batch = {"labeled": data_cfg.labeled_batch, "unlabeled": data_cfg.unlabeled_batch}
    labeled = pipelines.train_loader(data_cfg.root, "labeled", batch_size=batch["labeled"], **common)
    unlabeled = (pipelines.train_loader(data_cfg.root, "unlabeled", batch_size=batch["unlabeled"], **common)
                 if uses_unlabeled else None)
    steps = epoch_length(data_cfg.root, epoch_unit, split=data_cfg.split, batch_size=batch[epoch_unit],
                         world_size=world_size)
    return Loaders(labeled, unlabeled, steps)


def scaled_lr(optim_cfg: Any, *, labeled_batch: int, videos_per_step: int, world_size: int) -> tuple[float, int]:
    """(LR, the global batch it was scaled by): base LR x batch / base_batch, batch per `optim.scale_by`."""
    batch = labeled_batch * world_size if optim_cfg.scale_by == "labeled" else videos_per_step
    return optim_cfg.lr * batch / optim_cfg.base_batch, batch


def cosine_lambda(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LR factor at optimizer step s: linear warmup from 1/warmup to 1, then cosine from 1 to 0."""

    def factor(s: int) -> float:
        if s < warmup_steps:
            return (s + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (s - warmup_steps) / span)))

    return factor


def total_steps(schedule_cfg: Any, steps_per_epoch: int) -> int:
    """Length of the LR schedule: `schedule.steps` if set, else epochs x steps per epoch."""
    if schedule_cfg.steps > 0:
        return schedule_cfg.steps
    return max(1, math.ceil(schedule_cfg.epochs * steps_per_epoch))


def build_optimizer(optim_cfg: Any, schedule_cfg: Any, params: Iterable[nn.Parameter], *, lr: float,
                    steps_per_epoch: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """SGD (momentum, weight decay, optionally Nesterov) at `lr`, and its per-step schedule: linear warmup,
    then cosine to 0. With `optim.decay_norm_and_bias` false, 1-d parameters (BatchNorm weights and biases,
    the classifier's bias) get no weight decay.

    Parameters are de-duplicated, so a weight-shared network's are stepped once.
    """
    unique = list({id(p): p for p in params}.values())
    groups: list[dict[str, Any]] = [{"params": unique}]
    if not optim_cfg.decay_norm_and_bias:
        groups = [{"params": [p for p in unique if p.ndim > 1]},
                  {"params": [p for p in unique if p.ndim <= 1], "weight_decay": 0.0}]
    optimizer = torch.optim.SGD(groups, lr=lr, momentum=optim_cfg.momentum, weight_decay=optim_cfg.weight_decay,
                                nesterov=optim_cfg.nesterov)
    warmup = schedule_cfg.warmup_steps or round(schedule_cfg.warmup_epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, cosine_lambda(total_steps(schedule_cfg, steps_per_epoch), warmup))
    return optimizer, scheduler
