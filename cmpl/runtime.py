"""Device, AMP and model wrapping, set up once per run.

`prepare()` applies, in this order: SyncBN conversion (DDP only), move to device, channels_last_3d,
torch.compile, DDP. The caller keeps the plain module for checkpoints and the optimizer (the wrappers
share its parameters) and hands the wrapped one to the Task. On CUDA it also turns cuDNN's autotuner on
(`cudnn.benchmark`: the clip shapes are fixed) and warns once about a cuDNN with the slow bf16 Conv3d path.
"""
from __future__ import annotations

import contextlib
import functools
import sys
from typing import Callable, ContextManager

import torch
from torch import nn

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# cuDNN 9.8 up to 9.14 run bf16 Conv3d on a slow, memory-hungry fallback (PyTorch #163539, #166643; fixed
# in 9.15): [first, fixed) as torch.backends.cudnn.version() numbers (major * 10000 + minor * 100 + patch).
CUDNN_SLOW_BF16_CONV3D = (90800, 91500)
_warned: set[str] = set()


def cudnn_warning(version: int | None) -> str | None:
    """One line about cuDNN `version` (torch.backends.cudnn.version()) when it has the bf16 Conv3d slow path."""
    lo, hi = CUDNN_SLOW_BF16_CONV3D
    if version is None or not lo <= version < hi:
        return None
    text = f"{version // 10000}.{version // 100 % 100}.{version % 100}"
    return (f"warning: cuDNN {text} runs bf16 Conv3d on a slow, memory-hungry path (PyTorch #163539, #166643; "
            f"fixed in 9.15): expect slow bf16 training; use a torch built with cuDNN >= 9.15")


def setup_cuda(device: torch.device) -> None:
    """On CUDA: cuDNN's autotuner on (fixed clip shapes: it picks the fastest conv algorithms once) and,
    once per process, the cuDNN warning on stderr. A no-op on the CPU."""
    if device.type != "cuda":
        return
    torch.backends.cudnn.benchmark = True
    line = cudnn_warning(torch.backends.cudnn.version())
    if line and line not in _warned:
        _warned.add(line)
        print(line, file=sys.stderr, flush=True)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """"auto" | "cuda" | "cpu" (pipelines.device's one resolver) -> the torch device of this process."""
    from pipelines.device import resolve_device as resolve

    try:
        kind = resolve(name)
    except ValueError as e:
        raise RuntimeError(str(e)) from None
    return torch.device("cuda", local_rank) if kind == "cuda" else torch.device("cpu")


def resolve_amp(amp: str, device: torch.device) -> str:
    """"auto" -> "bf16" on GPU, "off" on CPU; other values as given ("bf16" | "fp16" | "off")."""
    if amp == "auto":
        return "bf16" if device.type == "cuda" else "off"
    return amp


def autocast_factory(amp: str, device: torch.device) -> Callable[[], ContextManager]:
    """A zero-argument callable returning the autocast context of every forward (nullcontext if off)."""
    if amp == "off":
        return contextlib.nullcontext
    return functools.partial(torch.autocast, device_type=device.type, dtype=AMP_DTYPES[amp])


def make_scaler(amp: str, device: torch.device) -> torch.amp.GradScaler:
    """A GradScaler that is enabled only for fp16 (bf16 and fp32 need no loss scaling).

    A disabled scaler is a pass-through, so the step code is the same for every AMP mode.
    """
    return torch.amp.GradScaler(device.type, enabled=(amp == "fp16"))


def to_channels_last(x: torch.Tensor, enabled: bool = True) -> torch.Tensor:
    """(N, C, T, H, W) -> the same values in channels_last_3d memory format (no-op for other ranks)."""
    if enabled and x.dim() == 5:
        return x.contiguous(memory_format=torch.channels_last_3d)
    return x


def prepare(
    module: nn.Module,
    *,
    device: torch.device,
    channels_last: bool,
    compile: bool,
    distributed: bool,
    sync_bn: bool = False,
) -> tuple[nn.Module, nn.Module]:
    """Return (plain, wrapped): `plain` for checkpoints and the optimizer, `wrapped` for forwards.

    Order: SyncBN (must precede DDP), device, channels_last_3d, torch.compile, DDP.
    SyncBatchNorm is CUDA-only in PyTorch, so `sync_bn` is ignored on CPU. On CUDA: setup_cuda(device).
    """
    setup_cuda(device)
    if distributed and sync_bn and device.type == "cuda":
        module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    module = module.to(device)
    if channels_last:
        module = module.to(memory_format=torch.channels_last_3d)
    wrapped: nn.Module = module
    if compile:
        wrapped = torch.compile(wrapped)
    if distributed:
        ids = [device.index] if device.type == "cuda" else None
        wrapped = nn.parallel.DistributedDataParallel(wrapped, device_ids=ids)
    return module, wrapped
