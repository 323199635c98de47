"""torch.distributed from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT), elastic
restarts included (TORCHELASTIC_RESTART_COUNT).

A single process (no torchrun) gets world_size 1 and never touches torch.distributed.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init(device_type: str) -> DistInfo:
    """Join the process group torchrun set up: nccl for "cuda", gloo for "cpu"."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    if not dist.is_initialized():
        # torchrun's agent keeps one store across elastic restarts, and the failed attempt's keys (each rank's
        # address) stay in it: a restarted rank that reads them before its peer rewrites them dials a dead
        # process. A prefix per attempt gives every attempt fresh keys.
        store, rank, world_size = next(dist.rendezvous("env://"))
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo", rank=rank,
                                world_size=world_size, store=dist.PrefixStore(f"cmpl/attempt_{attempt}", store))
    return info


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Mean over ranks (in place on a copy); identity for one process."""
    if not info.distributed:
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / info.world_size


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum over ranks; identity for one process."""
    if not info.distributed:
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def broadcast_flag(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank if `flag` is true on any rank (a stop decision all ranks must share)."""
    if not info.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def env_rank() -> int:
    """This process's global rank from torchrun's environment, before the process group exists."""
    return int(os.environ.get("RANK", "0"))


def host_group(info: DistInfo) -> dist.ProcessGroup | None:
    """A gloo group for small CPU collectives: None (the default group) when it is gloo already, else a new
    gloo group over all ranks (every rank must call this at the same point)."""
    if not info.distributed or dist.get_backend() == "gloo":
        return None
    return dist.new_group(backend="gloo")


def any_rank_on_host(flag: bool, info: DistInfo, group: dist.ProcessGroup | None = None) -> bool:
    """True on every rank if `flag` is true on any rank, via a CPU tensor on `group` (see host_group): the
    ranks' hosts wait for each other, no device is synchronized."""
    if not info.distributed:
        return flag
    t = torch.tensor([int(flag)], dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    return bool(t.item())
