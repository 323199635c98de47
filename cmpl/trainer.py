"""The training loop: it steps, logs, validates and checkpoints; the Task owns forwards and losses, and
cmpl.components builds the parts.

`train(cfg)` runs one process's share of a run (torchrun starts one per GPU). A fresh start and a resume
are the same code path: build everything, then load RUN/checkpoints/last.pt if it exists (or the newest
readable of the `run.keep_last` kept ones). Rank 0 holds RUN/trainer.lock (cmpl.run_lock) for the whole run;
SIGTERM / SIGUSR1 stop all ranks at one agreed step after saving last.pt (cmpl.preemption).

No host-device sync inside a step: Task statistics are accumulated as device tensors and reduced
(all-reduced under DDP) with one `.tolist()` on log steps; the non-finite-loss flag is a device tensor read
only on steps that log, validate or save, so the last checkpoint written is always a finite one.
"""
from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any, Callable, ContextManager, Mapping, NamedTuple

import numpy as np
import torch
from tqdm import tqdm

from cmpl import checkpoint as ckpt_io
from cmpl import config as cfg_mod
from cmpl import distributed as dist_mod
from cmpl import preemption, registry, run_lock, runtime
from cmpl.components import (build_loaders, build_networks, build_optimizer, cosine_lambda, distinct, scaled_lr,
                             total_steps)
from cmpl.ema import WeightEMA
from cmpl.methods import build_task
from cmpl.metrics_log import NullLogger, RunLogger, format_record
from cmpl.run_folder import NewFolder


class TrainError(RuntimeError):
    """A run that cannot go on (non-finite loss, ...); the message is one line for the user."""


Batch = Mapping[str, torch.Tensor]


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


class Due(NamedTuple):
    """What a step must do after training: log statistics, validate, save last.pt."""

    log: bool
    validate: bool
    save: bool


def due(step: int, stop_step: int, run_cfg: Any) -> Due:
    """The log / validate / save schedule of `run.*_every`; the final step does all three."""
    final = step == stop_step
    return Due(log=final or step % run_cfg.log_every == 0,
               validate=final or bool(run_cfg.eval_every and step % run_cfg.eval_every == 0),
               save=final or step % run_cfg.checkpoint_every == 0)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Everything stateful of a run; `run()` trains to the stop step."""

    def __init__(self, cfg: cfg_mod.Config, *, echo: Callable[[str], None] = print) -> None:
        from pipelines.dataset import dataset_facts

        rt, d = cfg.runtime, cfg.data
        self.dist = dist_mod.init(runtime.resolve_device(rt.device).type)
        self.device = runtime.resolve_device(rt.device, self.dist.local_rank)
        self.echo = echo if self.dist.is_main else (lambda s: None)
        self.run_dir, self.ckpt_dir = Path(cfg.run.dir), Path(cfg.run.dir) / "checkpoints"
        if not Path(d.root).is_dir():
            raise cfg_mod.ConfigError(f"data folder not found: {d.root} (set --data.root DIR)")
        cfg_mod.validate(cfg)  # ranges (a positive step count, batch sizes >= 1, ...), for callers other than the CLI
        self.about = dataset_facts(d.root)  # class names and fps, saved in every checkpoint
        self.classes = self.about["classes"]
        if cfg.model.num_classes <= 0:  # resolved in a copy: the caller's config is left as given
            cfg = cfg_mod.apply_overrides(cfg, [("model.num_classes", str(len(self.classes)))])
        self.cfg, self.spec = cfg, registry.method(cfg.method.name)
        if rt.sync_bn and self.dist.distributed and self.device.type != "cuda":
            self.echo("cmpl.train: runtime.sync_bn ignored (SyncBatchNorm needs CUDA)")

        _seed_all(rt.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
        networks = build_networks(cfg.model, self.spec.roles, num_classes=cfg.model.num_classes)
        self.plain = distinct(networks)  # modules that own weights: checkpoints, eval, optimizer
        wrapped = {n: runtime.prepare(m, device=self.device, channels_last=rt.channels_last, compile=rt.compile,
                                      distributed=self.dist.distributed, sync_bn=rt.sync_bn)
                   for n, m in self.plain.items()}
        self.plain = {n: plain for n, (plain, _) in wrapped.items()}
        owner = {r: registry.network_of(r, aux_shared=cfg.model.aux_shared) for r in networks}
        self.task = build_task(cfg.method, {r: wrapped[owner[r]][1] for r in networks},
                               compile_loss=rt.compile_loss, num_classes=cfg.model.num_classes)
        self.eval_nets = {r: self.plain[owner[r]] for r in networks}  # role -> module, for validation
        # optim.ema_decay > 0: an EMA of each network's weights and BN buffers, updated after every step on the
        # device (no sync), validated and checkpointed beside the raw networks.
        self.ema = ({n: WeightEMA(m, cfg.optim.ema_decay) for n, m in self.plain.items()}
                    if cfg.optim.ema_decay > 0 else {})
        self.ema_eval_nets = {r: self.ema[owner[r]].module for r in networks} if self.ema else {}
        _seed_all(rt.seed + self.dist.rank)  # dropout etc. differ per rank from here on

        loaders = build_loaders(d, uses_unlabeled=self.spec.uses_unlabeled, epoch_unit=cfg.schedule.epoch_unit,
                                seed=rt.seed, rank=self.dist.rank, world_size=self.dist.world_size)
        self.labeled, self.unlabeled, self.steps_per_epoch = loaders.labeled, loaders.unlabeled, loaders.steps_per_epoch
        self.total_steps = total_steps(cfg.schedule, self.steps_per_epoch)
        self.stop_step = min(self.total_steps, cfg.schedule.max_steps or self.total_steps)
        batch = d.labeled_batch + (d.unlabeled_batch if self.spec.uses_unlabeled else 0)
        self.videos_per_step = batch * self.dist.world_size
        self.lr, lr_batch = scaled_lr(cfg.optim, labeled_batch=d.labeled_batch,
                                      videos_per_step=self.videos_per_step, world_size=self.dist.world_size)
        params = [p for m in self.plain.values() for p in m.parameters()]
        self.optimizer, self.scheduler = build_optimizer(cfg.optim, cfg.schedule, params, lr=self.lr,
                                                         steps_per_epoch=self.steps_per_epoch)
        self.amp = runtime.resolve_amp(rt.amp, self.device)
        self.autocast = runtime.autocast_factory(self.amp, self.device)
        self.scaler = runtime.make_scaler(self.amp, self.device)
        self.step, self.best_top1, self._lr_used = 0, -1.0, self.lr
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
        extra = {"ema": {n: e.state_dict() for n, e in self.ema.items()}} if self.ema else {}
        task_state = self.task.state_dict()  # method state (distribution alignment's running means)
        if task_state:
            extra["task"] = task_state
        return {"models": {n: m.state_dict() for n, m in self.plain.items()}, **extra,
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(), "step": self.step, "epoch": self.step / self.steps_per_epoch,
                "rng": ckpt_io.rng_state(), "loaders": loaders, "config": cfg_mod.to_dict(self.cfg),
                **self.about, "best_top1": self.best_top1}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for n, m in self.plain.items():
            m.load_state_dict(state["models"][n])
        for n, e in self.ema.items():
            if n in state.get("ema", {}):
                e.load_state_dict(state["ema"][n])
            else:  # a run that turned the EMA on at resume starts it from the current weights
                e.module.load_state_dict(state["models"][n])
        self.task.load_state_dict(state.get("task", {}))
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.best_top1 = int(state["step"]), float(state["best_top1"])
        self.labeled.load_state_dict(state["loaders"]["labeled"])
        if self.unlabeled is not None:
            self.unlabeled.load_state_dict(state["loaders"]["unlabeled"])
        if self.dist.is_main:
            ckpt_io.set_rng_state(state["rng"])
        else:  # other ranks' generators were not saved: reseed them deterministically for this step
            _seed_all(self.cfg.runtime.seed + 1000003 * self.dist.rank + self.step)

    def maybe_resume(self) -> None:
        if self.dist.is_main and self.ckpt_dir.is_dir():
            ckpt_io.remove_stale_temps(self.ckpt_dir)
        found = ckpt_io.load_newest(self.ckpt_dir / "last.pt", warn=lambda s: self.echo(f"cmpl.train: {s}"))
        if found is None:
            return
        last, state = found
        changed = _diff(state.get("config", {}), cfg_mod.to_dict(self.cfg))
        if changed:
            self.echo(f"cmpl.train: config differs from the checkpoint's in {', '.join(changed)} "
                      "(using the new values)")
        self.load_state_dict(state)
        self.echo(f"cmpl.train: resumed from {last} at step {self.step}")

    def save(self, name: str, state: dict[str, Any], keep: int = 1) -> None:
        """Rank 0 writes RUN/checkpoints/NAME atomically, keeping `keep` - 1 older ones (NAME.1.pt, ...)."""
        if self.dist.is_main:
            ckpt_io.save_rotating(state, self.ckpt_dir / name, keep)

    def export_primary(self) -> Path:
        """F's weights + config + class names for inference (A is a training aid only)."""
        path = self.ckpt_dir / "primary.pt"
        self.save("primary.pt", {"model": self.plain["primary"].state_dict(), "network": "primary",
                                 "config": cfg_mod.to_dict(self.cfg), **self.about, "step": self.step,
                                 "best_top1": self.best_top1})
        return path

    # ---- the loop -----------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Train from the current step to the stop step; returns the last train/val records."""
        cfg = self.cfg
        self.maybe_resume()
        if self.dist.is_main:
            cfg_mod.save(cfg, self.run_dir / "config.toml")
            self.echo(cfg_mod.dumps(cfg).rstrip())
        logger = (RunLogger(self.run_dir, resume_step=self.step, console=lambda s: tqdm.write(s))
                  if self.dist.is_main else NullLogger())
        step_fn = make_step(self.task, self.optimizer, self.scheduler, self.scaler, self.autocast)
        labeled, unlabeled = iter(self.labeled), iter(self.unlabeled) if self.unlabeled is not None else None
        cl = cfg.runtime.channels_last
        bar = tqdm(total=self.stop_step, initial=self.step, desc=f"{cfg.method.name}", dynamic_ncols=True,
                   disable=not (self.dist.is_main and cfg.run.progress), smoothing=0.05)
        window, stop = _Window(self.device), preemption.StopCheck(self.dist)
        last: dict[str, Any] = {}
        try:
            if self.step >= self.stop_step:
                self.echo(f"cmpl.train: nothing to do, the run is at step {self.step} >= {self.stop_step}")
            while self.step < self.stop_step:
                t0 = time.perf_counter()
                lab = next(labeled)
                unl = next(unlabeled) if unlabeled is not None else None
                window.wait += time.perf_counter() - t0
                self._lr_used = self.optimizer.param_groups[0]["lr"]
                self.task.step = self.step  # for a Task whose lambda ramps up (method.lambda_warmup_steps)
                out = step_fn(to_device(lab, self.device, cl),
                              to_device(unl, self.device, cl) if unl is not None else None)
                for name, ema in self.ema.items():
                    ema.update(self.plain[name])
                self.step += 1
                window.add(out)
                bar.update(1)
                todo = due(self.step, self.stop_step, cfg.run)
                preempted = self.step < self.stop_step and stop.check()  # the final step just finishes
                if preempted:  # skip validation: the time before SIGKILL is short
                    todo = todo._replace(validate=False, save=True)
                if any(todo):
                    self._check_finite(window.nonfinite)  # never log, keep or save NaN weights
                if todo.log:
                    last["train"] = self._log_train(logger, window)
                    bar.set_postfix(loss=f"{last['train']['loss']:.3f}", lr=f"{last['train']['lr']:.3g}")
                    window = _Window(self.device, window.nonfinite)
                improved = False
                if todo.validate:
                    rec = {"kind": "val", "step": self.step, "epoch": self.step / self.steps_per_epoch,
                           **validate(self.cfg, self.eval_nets, dist=self.dist, device=self.device,
                                      autocast=self.autocast)}
                    if self.ema_eval_nets:
                        rec.update({f"{k}_ema": v for k, v in validate(
                            self.cfg, self.ema_eval_nets, dist=self.dist, device=self.device,
                            autocast=self.autocast).items()})
                    logger.log(rec)
                    last["val"], improved = rec, rec["top1_f"] > self.best_top1
                    self.best_top1 = max(self.best_top1, rec["top1_f"])
                    window.start = time.perf_counter()  # keep eval time out of videos/s
                if improved or todo.save:
                    state = self.state_dict()
                    if improved:
                        self.save("best.pt", state)
                    if todo.save:
                        self.save("last.pt", state, keep=cfg.run.keep_last)
                if preempted:
                    raise stop.stopped(self.step, self.ckpt_dir / "last.pt", self.echo)
            self.export_primary()
        finally:
            bar.close()
            logger.close()
        dist_mod.barrier(self.dist)
        self.echo(self._done_line())
        return last

    def _done_line(self) -> str:
        """The trainer's last line: the step and the checkpoint files, with what each is for."""
        uses = {"last.pt": "resume, cmpl.evaluate", "primary.pt": "F only: cmpl.predict, cmpl.export",
                "best.pt": "best periodic val top-1"}
        files = [f"{name} ({use})" for name, use in uses.items() if (self.ckpt_dir / name).is_file()]
        return f"cmpl.train: done at step {self.step}; checkpoints in {self.ckpt_dir}/: {', '.join(files)}"

    def _check_finite(self, flag: torch.Tensor) -> None:
        if dist_mod.broadcast_flag(bool(flag.item()), self.dist, self.device):
            last = self.ckpt_dir / "last.pt"
            kept = f"kept {last}" if last.exists() else "no checkpoint was written yet"
            raise TrainError(f"loss is NaN/inf at or before step {self.step}; stopped ({kept}). "
                             "Try a lower --optim.lr or --runtime.amp=off")

    def _log_train(self, logger: Any, window: _Window) -> dict[str, Any]:
        keys = sorted(window.sums)
        stacked = torch.stack([window.sums[k] for k in keys]) / window.steps
        means = dist_mod.all_reduce_mean(stacked, self.dist).tolist()
        elapsed = max(time.perf_counter() - window.start, 1e-9)
        rec: dict[str, Any] = {"kind": "train", "step": self.step, "epoch": self.step / self.steps_per_epoch,
                               "lr": self._lr_used, **dict(zip(keys, means)),
                               "videos_per_s": window.steps * self.videos_per_step / elapsed,
                               "data_wait": window.wait / elapsed}
        logger.log(rec)
        return rec


def validate(cfg: cfg_mod.Config, eval_nets: Mapping[str, torch.nn.Module], *, dist: dist_mod.DistInfo,
             device: torch.device, autocast: Callable[[], ContextManager]) -> dict[str, float]:
    """Periodic val (data.val_clips x val_crops views) of each role's network (role -> module) at the role's
    clip, on all ranks; returns {"top1_f", "top5_f", "top1_a", ...}."""
    from cmpl.evaluate import eval_loader, evaluate_network

    rec: dict[str, float] = {}
    for name, net in eval_nets.items():
        role = registry.role(name)
        loader = eval_loader(cfg.data, frames_stride=role.clip(cfg.data), official=False, dist=dist)
        res = evaluate_network(net, loader, num_classes=cfg.model.num_classes, device=device, autocast=autocast,
                               channels_last=cfg.runtime.channels_last, dist=dist)
        rec[f"top1_{role.letter}"], rec[f"top5_{role.letter}"] = res["top1"], res["top5"]
    return rec


class _Window:
    """Statistics summed on the device since the last log step, and the sticky non-finite flag."""

    def __init__(self, device: torch.device, nonfinite: torch.Tensor | None = None) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.steps, self.wait, self.start = 0, 0.0, time.perf_counter()
        self.nonfinite = nonfinite if nonfinite is not None else torch.zeros((), dtype=torch.bool, device=device)

    def add(self, out: Mapping[str, torch.Tensor]) -> None:
        self.steps += 1
        self.nonfinite |= ~torch.isfinite(out["loss"].detach())
        for k, v in out.items():
            v = v.detach().float()
            self.sums[k] = self.sums[k] + v if k in self.sums else v


def _diff(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    return [f"{s}.{k}" for s in new for k in new[s] if old.get(s, {}).get(k, new[s][k]) != new[s][k]]


def train(cfg: cfg_mod.Config, *, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Build a Trainer for `cfg`, resume if RUN/checkpoints/last.pt exists, train, export F.

    Rank 0 holds RUN/trainer.lock throughout (RunLockError if another trainer holds it); raises
    preemption.Preempted after a stop signal (handlers: preemption.install()).
    """
    new = NewFolder.note(cfg.run.dir) if dist_mod.env_rank() == 0 else None
    trainer: Trainer | None = None
    try:
        with run_lock.hold(cfg.run.dir, enabled=new is not None, warn=lambda s: echo(f"cmpl.train: {s}")):
            trainer = Trainer(cfg, echo=echo)
            try:
                return trainer.run()
            finally:
                dist_mod.shutdown()
    except run_lock.RunLockError:
        raise  # the folder is another trainer's
    except BaseException:
        if new is not None and (trainer is None or trainer.step == 0):
            new.remove_unstarted()  # a run that failed before its first step leaves no folder behind
        raise


__all__ = ["Due", "TrainError", "Trainer", "cosine_lambda", "due", "format_record", "make_step", "to_device",
           "train", "validate"]
