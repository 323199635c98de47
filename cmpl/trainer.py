"""The training loop: it steps, logs, validates and checkpoints; the Task owns forwards and losses.

`train(cfg)` runs one process's share of a run (torchrun starts one per GPU). A fresh start and a resume
are the same code path: build everything, then load RUN/checkpoints/last.pt if it exists.

No host-device sync inside a step: Task statistics are accumulated as device tensors and reduced
(all-reduced under DDP) with one `.tolist()` on log steps; the non-finite-loss flag is a device tensor read
only on log, validation and checkpoint steps, so the last checkpoint written is always a finite one.
"""
from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Mapping

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from cmpl import checkpoint as ckpt_io
from cmpl import config as cfg_mod
from cmpl import distributed as dist_mod
from cmpl import runtime
from cmpl.evaluate import eval_loader, evaluate_network, loader_device
from cmpl.metrics_log import NullLogger, RunLogger, format_record


class TrainError(RuntimeError):
    """A run that cannot go on (non-finite loss, ...); the message is one line for the user."""


Batch = Mapping[str, torch.Tensor]


def cosine_lambda(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """LR factor at optimizer step s: linear warmup from 1/warmup to 1, then cosine from 1 to 0."""

    def factor(s: int) -> float:
        if s < warmup_steps:
            return (s + 1) / warmup_steps
        span = max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (s - warmup_steps) / span)))

    return factor


def to_device(batch: Batch, device: torch.device, channels_last: bool) -> dict[str, torch.Tensor]:
    """Move a loader dict to the device; clips `(N, C, T, H, W)` become channels_last_3d."""
    return {k: runtime.to_channels_last(v.to(device, non_blocking=True), channels_last)
            for k, v in batch.items()}


def make_step(task: Any, optimizer: torch.optim.Optimizer, scheduler: Any, scaler: torch.amp.GradScaler,
              autocast: Callable[[], ContextManager]) -> Callable[[Batch, Batch | None], dict[str, torch.Tensor]]:
    """One optimizer step of `task` (forwards under autocast, scaled backward, SGD, LR step).

    Returns the Task's dict (loss + detached statistics), still on the device.
    """

    def step(labeled: Batch, unlabeled: Batch | None) -> dict[str, torch.Tensor]:
        with autocast():
            out = task(labeled, unlabeled)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(out["loss"]).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        return out

    return step


@dataclass
class _Models:
    plain: dict[str, nn.Module]  # for checkpoints, eval and the optimizer
    wrapped: dict[str, nn.Module]  # compiled / DDP, for training forwards


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _check_data(root: str) -> None:
    if not Path(root).is_dir():
        raise cfg_mod.ConfigError(f"data folder not found: {root} (set --data.root DIR)")


class Trainer:
    """Everything stateful of a run; `run()` trains to the stop step."""

    def __init__(self, cfg: cfg_mod.Config, *, echo: Callable[[str], None] = print) -> None:
        import pipelines
        from cmpl import models
        from cmpl.methods import build_task
        from pipelines.dataset import read_classes

        self.cfg = cfg
        self.dist = dist_mod.init(runtime.resolve_device(cfg.runtime.device).type)
        self.device = runtime.resolve_device(cfg.runtime.device, self.dist.local_rank)
        self.echo = echo if self.dist.is_main else (lambda s: None)
        self.run_dir = Path(cfg.run.dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        _check_data(cfg.data.root)
        if cfg.model.num_classes <= 0:
            cfg.model.num_classes = len(read_classes(cfg.data.root))
        K = cfg.model.num_classes

        # Same seed on every rank for the initial weights (DDP also broadcasts rank 0's at wrap time).
        _seed_all(cfg.runtime.seed)
        nets = {"primary": models.build(cfg.model.primary, num_classes=K, layout=cfg.model.layout,
                                        dropout=cfg.model.dropout)}
        if cfg.method.name == "cmpl":
            nets["aux"] = models.build(cfg.model.aux, num_classes=K, layout=cfg.model.layout,
                                       dropout=cfg.model.dropout)
        rt = cfg.runtime
        if rt.sync_bn and self.dist.distributed and self.device.type != "cuda":
            self.echo("cmpl.train: runtime.sync_bn ignored (SyncBatchNorm needs CUDA)")
        self.models = _Models({}, {})
        for name, net in nets.items():
            plain, wrapped = runtime.prepare(net, device=self.device, channels_last=rt.channels_last,
                                             compile=rt.compile, distributed=self.dist.distributed,
                                             sync_bn=rt.sync_bn)
            self.models.plain[name], self.models.wrapped[name] = plain, wrapped
        self.task = build_task(cfg.method, primary=self.models.wrapped["primary"],
                               aux=self.models.wrapped.get("aux"), compile_loss=rt.compile_loss)
        # Dropout, DALI-free RNG use etc. differ per rank from here on.
        _seed_all(cfg.runtime.seed + self.dist.rank)

        d = cfg.data
        common = dict(device=loader_device(d.device), seed=rt.seed, rank=self.dist.rank,
                      world_size=self.dist.world_size, primary=d.primary, aux=d.aux,
                      time_offset=d.time_offset, crop_size=d.crop_size, short_side=d.short_side,
                      num_threads=d.num_threads)
        self.labeled = pipelines.labeled_loader(d.root, split=d.split, batch_size=d.labeled_batch, **common)
        uses_u = self.task.uses_unlabeled
        self.unlabeled = (pipelines.unlabeled_loader(d.root, split=d.split, batch_size=d.unlabeled_batch,
                                                     **common)
                          if uses_u or cfg.schedule.epoch_unit == "unlabeled" else None)
        epoch_loader = self.unlabeled if cfg.schedule.epoch_unit == "unlabeled" else self.labeled
        self.steps_per_epoch = len(epoch_loader)
        if self.steps_per_epoch <= 0:
            raise cfg_mod.ConfigError(
                f"the {cfg.schedule.epoch_unit} loader yields no full batch per rank; lower data.*_batch")
        if not uses_u:
            self.unlabeled = None  # only needed for its length
        self.total_steps = max(1, math.ceil(cfg.schedule.epochs * self.steps_per_epoch))
        self.stop_step = min(self.total_steps, cfg.schedule.max_steps or self.total_steps)
        self.videos_per_step = (d.labeled_batch + (d.unlabeled_batch if uses_u else 0)) * self.dist.world_size
        lr_batch = d.labeled_batch * self.dist.world_size if cfg.optim.scale_by == "labeled" \
            else self.videos_per_step
        self.lr = cfg.optim.lr * lr_batch / cfg.optim.base_batch

        params = [p for n in self.task.networks for p in self.models.plain[n].parameters()]
        self.optimizer = torch.optim.SGD(params, lr=self.lr, momentum=cfg.optim.momentum,
                                         weight_decay=cfg.optim.weight_decay)
        warmup = round(cfg.schedule.warmup_epochs * self.steps_per_epoch)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                           cosine_lambda(self.total_steps, warmup))
        self.amp = runtime.resolve_amp(rt.amp, self.device)
        self.autocast = runtime.autocast_factory(self.amp, self.device)
        self.scaler = runtime.make_scaler(self.amp, self.device)
        self.step = 0
        self.best_top1 = -1.0
        self._lr_used = self.lr
        self.echo(
            f"cmpl.train: method {cfg.method.name}, {self.dist.world_size} process(es) on {self.device}, "
            f"amp {self.amp}, compile {rt.compile}; global batch {self.videos_per_step} videos/step -> "
            f"LR {cfg.optim.lr} x {lr_batch}/{cfg.optim.base_batch} = {self.lr:.6g}; "
            f"{self.steps_per_epoch} steps/epoch ({cfg.schedule.epoch_unit}), schedule {self.total_steps} "
            f"steps, stopping at {self.stop_step}")

    # ---- checkpoints -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The checkpoint dict of ARCHITECTURE.md section 5 (rank 0's RNG and loader positions)."""
        loaders = {"labeled": self.labeled.state_dict()}
        if self.unlabeled is not None:
            loaders["unlabeled"] = self.unlabeled.state_dict()
        return {
            "models": {n: m.state_dict() for n, m in self.models.plain.items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "epoch": self.step / self.steps_per_epoch,
            "rng": ckpt_io.rng_state(),
            "loaders": loaders,
            "config": cfg_mod.to_dict(self.cfg),
            "best_top1": self.best_top1,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for n, m in self.models.plain.items():
            m.load_state_dict(state["models"][n])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.best_top1 = float(state["best_top1"])
        self.labeled.load_state_dict(state["loaders"]["labeled"])
        if self.unlabeled is not None:
            self.unlabeled.load_state_dict(state["loaders"]["unlabeled"])
        if self.dist.is_main:
            ckpt_io.set_rng_state(state["rng"])
        else:  # other ranks' generators were not saved: reseed them deterministically for this step
            _seed_all(self.cfg.runtime.seed + 1000003 * self.dist.rank + self.step)

    def maybe_resume(self) -> None:
        last = self.ckpt_dir / "last.pt"
        if self.dist.is_main and self.ckpt_dir.is_dir():
            ckpt_io.remove_stale_temps(self.ckpt_dir)
        if not last.exists():
            return
        state = ckpt_io.load(last)
        changed = _diff(state.get("config", {}), cfg_mod.to_dict(self.cfg))
        if changed:
            self.echo(f"cmpl.train: config differs from the checkpoint's in {', '.join(changed)} "
                      "(using the new values)")
        self.load_state_dict(state)
        self.echo(f"cmpl.train: resumed from {last} at step {self.step}")

    def save(self, name: str, state: dict[str, Any] | None = None) -> None:
        if self.dist.is_main:
            ckpt_io.save_atomic(state if state is not None else self.state_dict(), self.ckpt_dir / name)

    def export_primary(self) -> Path:
        """F's weights + config for inference (A is a training aid only)."""
        path = self.ckpt_dir / "primary.pt"
        if self.dist.is_main:
            ckpt_io.save_atomic({"model": self.models.plain["primary"].state_dict(), "network": "primary",
                                 "config": cfg_mod.to_dict(self.cfg), "step": self.step,
                                 "best_top1": self.best_top1}, path)
        return path

    # ---- validation ---------------------------------------------------------------------------------
    def validate(self) -> dict[str, float]:
        """Periodic val (data.val_clips x val_crops views) of every trained network, all ranks."""
        rec: dict[str, float] = {}
        for name, suffix in (("primary", "f"), ("aux", "a")):
            if name not in self.models.plain:
                continue
            fs = self.cfg.data.primary if name == "primary" else self.cfg.data.aux
            loader = eval_loader(self.cfg.data, frames_stride=fs, official=False, dist=self.dist)
            res = evaluate_network(self.models.plain[name], loader, num_classes=self.cfg.model.num_classes,
                                   device=self.device, autocast=self.autocast,
                                   channels_last=self.cfg.runtime.channels_last, dist=self.dist)
            rec[f"top1_{suffix}"], rec[f"top5_{suffix}"] = res["top1"], res["top5"]
        return rec

    # ---- the loop -----------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Train from the current step to the stop step; returns the last train/val records."""
        cfg, rc = self.cfg, self.cfg.run
        self.maybe_resume()
        if self.dist.is_main:
            cfg_mod.save(cfg, self.run_dir / "config.toml")
            self.echo(cfg_mod.dumps(cfg).rstrip())
        logger = (RunLogger(self.run_dir, resume_step=self.step, console=lambda s: tqdm.write(s))
                  if self.dist.is_main else NullLogger())
        step_fn = make_step(self.task, self.optimizer, self.scheduler, self.scaler, self.autocast)
        labeled: Iterator[Batch] = iter(self.labeled)
        unlabeled: Iterator[Batch] | None = iter(self.unlabeled) if self.unlabeled is not None else None
        cl = cfg.runtime.channels_last
        bar = tqdm(total=self.stop_step, initial=self.step, desc=f"{cfg.method.name}", dynamic_ncols=True,
                   disable=not (self.dist.is_main and rc.progress), smoothing=0.05)
        sums: dict[str, torch.Tensor] = {}
        nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
        n_acc, wait, t_log = 0, 0.0, time.perf_counter()
        last: dict[str, Any] = {}
        try:
            if self.step >= self.stop_step:
                self.echo(f"cmpl.train: nothing to do, the run is at step {self.step} >= {self.stop_step}")
            while self.step < self.stop_step:
                t0 = time.perf_counter()
                lab = next(labeled)
                unl = next(unlabeled) if unlabeled is not None else None
                wait += time.perf_counter() - t0
                self._lr_used = self.optimizer.param_groups[0]["lr"]
                out = step_fn(to_device(lab, self.device, cl),
                              to_device(unl, self.device, cl) if unl is not None else None)
                self.step += 1
                n_acc += 1
                nonfinite |= ~torch.isfinite(out["loss"].detach())
                for k, v in out.items():
                    v = v.detach().float()
                    sums[k] = sums[k] + v if k in sums else v
                bar.update(1)
                s = self.step
                final = s == self.stop_step
                if s % rc.log_every == 0 or final:
                    self._check_finite(nonfinite)
                    elapsed = time.perf_counter() - t_log
                    last["train"] = self._log_train(logger, sums, n_acc, elapsed, wait)
                    bar.set_postfix(loss=f"{last['train']['loss']:.3f}", lr=f"{last['train']['lr']:.3g}")
                    sums, n_acc, wait, t_log = {}, 0, 0.0, time.perf_counter()
                improved = False
                if (rc.eval_every and s % rc.eval_every == 0) or final:
                    self._check_finite(nonfinite)
                    rec = {"kind": "val", "step": s, "epoch": s / self.steps_per_epoch, **self.validate()}
                    logger.log(rec)
                    last["val"] = rec
                    improved = rec["top1_f"] > self.best_top1
                    self.best_top1 = max(self.best_top1, rec["top1_f"])
                    t_log = time.perf_counter()  # keep eval time out of videos/s
                save_last = s % rc.checkpoint_every == 0 or final
                if improved or save_last:
                    self._check_finite(nonfinite)  # never write a checkpoint of NaN weights
                    state = self.state_dict()
                    if improved:
                        self.save("best.pt", state)
                    if save_last:
                        self.save("last.pt", state)
            self.export_primary()
        finally:
            bar.close()
            logger.close()
        dist_mod.barrier(self.dist)
        return last

    def _check_finite(self, flag: torch.Tensor) -> None:
        bad = dist_mod.broadcast_flag(bool(flag.item()), self.dist, self.device)
        if bad:
            last = self.ckpt_dir / "last.pt"
            kept = f"kept {last}" if last.exists() else "no checkpoint was written yet"
            raise TrainError(f"loss is NaN/inf at or before step {self.step}; stopped ({kept}). "
                             "Try a lower --optim.lr or --runtime.amp=off")

    def _log_train(self, logger: Any, sums: dict[str, torch.Tensor], n: int, elapsed: float,
                   wait: float) -> dict[str, Any]:
        keys = sorted(sums)
        means = dist_mod.all_reduce_mean(torch.stack([sums[k] for k in keys]) / n, self.dist).tolist()
        rec: dict[str, Any] = {"kind": "train", "step": self.step, "epoch": self.step / self.steps_per_epoch,
                               "lr": self._lr_used}
        rec.update(zip(keys, means))
        rec["videos_per_s"] = n * self.videos_per_step / max(elapsed, 1e-9)
        rec["data_wait"] = wait / max(elapsed, 1e-9)
        logger.log(rec)
        return rec


def _diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    return [f"{s}.{k}" for s in new for k in new[s] if old.get(s, {}).get(k, new[s][k]) != new[s][k]]


def train(cfg: cfg_mod.Config, *, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Build a Trainer for `cfg`, resume if RUN/checkpoints/last.pt exists, train, export F."""
    trainer = Trainer(cfg, echo=echo)
    try:
        return trainer.run()
    finally:
        dist_mod.shutdown()


__all__ = ["TrainError", "Trainer", "cosine_lambda", "format_record", "make_step", "to_device", "train"]
