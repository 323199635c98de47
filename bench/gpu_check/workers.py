"""The check's measurements that run in child processes (`python -m bench.gpu_check --worker NAME`).

Each worker takes the parsed arguments (`work`, `json`, `dry_run`, `shapes`) and returns a JSON-able dict,
which __main__ writes to `--json`. torch, DALI and PyAV are imported inside the functions only.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import time
from typing import Any, Callable

from .decode import worker_decode
from .throughput import worker_loader


def worker_env(args: argparse.Namespace) -> dict[str, Any]:
    """Versions (Python, torch, CUDA, cuDNN, DALI, PyAV, driver), the GPU, its measured bf16 matmul peak."""
    import torch

    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
    for key, mod in (("dali", "nvidia.dali"), ("av", "av")):
        try:
            info[key] = __import__(mod, fromlist=["__version__"]).__version__
        except Exception as e:  # noqa: BLE001 - a missing or broken install is the finding
            info[key], info[f"{key}_error"] = None, f"{type(e).__name__}: {e}"[:200]
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, sm=p.multi_processor_count, capability=f"{p.major}.{p.minor}",
                    memory_gib=round(p.total_memory / 2**30, 1))
        smi = shutil.which("nvidia-smi")
        if smi:
            q = subprocess.run([smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                               text=True, timeout=20)
            info["driver"] = q.stdout.strip().splitlines()[0] if q.returncode == 0 and q.stdout.strip() else None
        info["bf16_peak_tflops"] = matmul_tflops(torch.device("cuda"), 8192, torch.bfloat16, iters=20)
    else:
        # Exercises the measuring code on CPU; the number is no peak and is not used for MFU.
        info["cpu_matmul_tflops_tiny"] = matmul_tflops(torch.device("cpu"), 256, torch.float32, iters=3)
    return info


def matmul_tflops(device: Any, n: int, dtype: Any, iters: int) -> float:
    """TFLOP/s of an n x n x n matmul (mean of `iters` after 3 warm-ups); on CUDA timed by events."""
    import torch

    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        for _ in range(iters):
            a @ b
        end.record()
        torch.cuda.synchronize()
        seconds = start.elapsed_time(end) / 1000
    else:
        t0 = time.perf_counter()
        for _ in range(iters):
            a @ b
        seconds = time.perf_counter() - t0
    return 2 * n**3 * iters / seconds / 1e12


def cmpl_step_flops(shapes: dict[str, Any]) -> dict[str, float]:
    """Model FLOPs of one CMPL step, counted by torch.utils.flop_counter on the meta device (no compute).

    `shapes`: bench.train_step's {primary, aux, classes, pt, at, size, bl, bu}. Per network: forward +
    backward on its B_l labeled and B_u strong clips, forward only on its B_u weak clips (pseudo-labels);
    the loss and the optimizer are left out, as MFU conventionally does.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from cmpl import models

    out = {}
    bl, bu, size = shapes["bl"], shapes["bu"], shapes["size"]
    for role, frames in (("primary", shapes["pt"]), ("aux", shapes["at"])):
        with torch.device("meta"):
            net = models.build(shapes[role], num_classes=shapes["classes"])
        with FlopCounterMode(display=False) as train:
            net(torch.empty(bl + bu, 3, frames, size, size, device="meta")).sum().backward()
        with FlopCounterMode(display=False) as weak, torch.no_grad():
            net(torch.empty(bu, 3, frames, size, size, device="meta"))
        out[role] = float(train.get_total_flops() + weak.get_total_flops())
    out["total"] = out["primary"] + out["aux"]
    return out


def worker_flops(args: argparse.Namespace) -> dict[str, Any]:
    """cmpl_step_flops of the shapes passed as JSON in --shapes."""
    return cmpl_step_flops(json.loads(args.shapes))


WORKERS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "env": worker_env, "decode": worker_decode, "loader": worker_loader, "flops": worker_flops}
