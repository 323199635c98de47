"""The check's measurements that run in child processes (`python -m bench.gpu_check --worker NAME`).

Each worker takes the parsed arguments (`work`, `json`, `dry_run`, `shapes`: the row's own argument) and
returns a JSON-able dict, which __main__ writes to `--json`; {"skip": reason} makes the row a skip. torch,
DALI and PyAV are imported inside the functions only.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Callable

from . import PAPER_PRESET
from .decode import worker_agree, worker_decode, worker_fixtures
from .probe import probe_nvdec
from .throughput import TIME_OFFSET_S, worker_datasets, worker_loader

# Step 5's run: steps, and the first record left out of the steady figures (pipeline builds, cuDNN autotune).
E2E_STEPS = {"gpu": 40, "dry": 2}
E2E_LOG_EVERY = {"gpu": 10, "dry": 1}


def worker_probe(args: argparse.Namespace) -> dict[str, Any]:
    """Step 0: probe.probe_nvdec() (ctypes: driver, libnvcuvid, per-codec NVDEC caps) and the cuDNN that
    torch loads (torch imported after the ctypes probe, so a broken torch does not hide the rest)."""
    out = probe_nvdec()
    try:
        import torch

        out["torch"] = torch.__version__
        out["cudnn"] = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        from cmpl.runtime import cudnn_warning

        out["cudnn_warning"] = cudnn_warning(out["cudnn"])
    except Exception as e:  # noqa: BLE001 - the finding
        out["torch_error"] = f"{type(e).__name__}: {e}"[:200]
    return out


def worker_env(args: argparse.Namespace) -> dict[str, Any]:
    """Versions (Python, torch, CUDA, cuDNN, DALI, PyAV, numpy), the GPU, its measured bf16 matmul peak."""
    import torch

    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                            "cpus": os.cpu_count()}
    for key, mod in (("dali", "nvidia.dali"), ("av", "av"), ("numpy", "numpy"), ("tomli_w", "tomli_w")):
        try:
            m = __import__(mod, fromlist=["__version__"])
            info[key] = getattr(m, "__version__", "present")
        except Exception as e:  # noqa: BLE001 - a missing or broken install is the finding
            info[key], info[f"{key}_error"] = None, f"{type(e).__name__}: {e}"[:200]
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=p.name, sm=p.multi_processor_count, capability=f"{p.major}.{p.minor}",
                    memory_gib=round(p.total_memory / 2**30, 1))
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


def worker_train(args: argparse.Namespace) -> dict[str, Any]:
    """One row of steps 4 / 6 (`--shapes MODE`, a bench.train_step mode): videos/s, s/step, peak memory of
    the paper models (dry run: the tiny ones on CPU; torch.compile with the aot_eager backend, which runs
    dynamo and AOTAutograd but no code generation); plus the model FLOPs of one step."""
    import torch

    from bench import train_step

    mode = args.shapes
    dry = args.dry_run
    device = torch.device("cpu" if dry else "cuda")
    preset = "tiny" if dry else "paper"
    if dry and train_step.MODES[mode][2]:
        compile_fn = torch.compile
        torch.compile = lambda model, **kw: compile_fn(model, **{**kw, "backend": "aot_eager"})
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    warmup, steps = (1, 1) if dry else (2, 8)
    res = train_step.bench_mode(mode, preset, device, warmup, steps)
    res["shapes"] = shapes = train_step.shapes(preset)
    res["flops_per_step"] = cmpl_step_flops(shapes)["total"]
    return res


def worker_bf16(args: argparse.Namespace) -> dict[str, Any]:
    """bf16 (autocast + channels_last_3d) vs fp32 (TF32 off) forward of the paper's R50-3D on one random
    batch, train-mode BN as in training: relative L2 error of the logits, cosine, argmax agreement, and the
    time of each forward (a bf16 forward slower than fp32 points at cuDNN's bf16 Conv3d fallback)."""
    import torch

    from cmpl import models, presets

    dry = args.dry_run
    device = torch.device("cpu" if dry else "cuda")
    cfg = presets.get("tiny" if dry else PAPER_PRESET)
    name, frames = cfg.model.primary, cfg.data.primary[0]
    size, batch = (32, 2) if dry else (cfg.data.crop_size, 4)
    torch.manual_seed(0)
    net = models.build(name, num_classes=400, dropout=0.0).to(device).train()  # no dropout: one function
    x = torch.randn(batch, 3, frames, size, size, device=device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False

    def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
        fn()  # warm-up (cuDNN autotune)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return out, time.perf_counter() - t0

    with torch.no_grad():
        ref, fp32_s = timed(lambda: net(x).float())
        net_cl = net.to(memory_format=torch.channels_last_3d)
        x_cl = x.contiguous(memory_format=torch.channels_last_3d)

        def bf16() -> Any:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                return net_cl(x_cl).float()

        low, bf16_s = timed(bf16)
    rel = float((low - ref).norm() / ref.norm().clamp_min(1e-12))
    cos = float(torch.nn.functional.cosine_similarity(low.flatten(), ref.flatten(), dim=0))
    agree = float((low.argmax(1) == ref.argmax(1)).float().mean())
    return {"model": name, "input": [batch, 3, frames, size, size], "rel_l2": rel, "cosine": cos,
            "argmax_agree": agree, "fp32_ms": fp32_s * 1e3, "bf16_ms": bf16_s * 1e3,
            "finite": bool(torch.isfinite(low).all() and torch.isfinite(ref).all())}


def e2e_overrides(root: Path, run_dir: Path, dry: bool) -> list[str]:
    """The paper preset (dry run: tiny), shortened to a few dozen steps on the check's dataset."""
    key = "dry" if dry else "gpu"
    steps = E2E_STEPS[key]
    return [f"--data.root={root}", f"--run.dir={run_dir}", f"--schedule.max_steps={steps}",
            f"--run.log_every={E2E_LOG_EVERY[key]}", "--run.eval_every=0", f"--run.checkpoint_every={steps}",
            "--run.progress=false",
            # Random networks are never 0.9-confident in 40 steps; 0 lets pseudo-labels flow through the
            # masked losses, as the tiny preset does (the rest stays the paper's size).
            "--method.threshold=0.0",
            # The check's videos last 4 s; K400's 10-s offset would pin every aux clip to an end.
            f"--data.time_offset={TIME_OFFSET_S['tiny' if dry else 'paper']}",
            # The final validation: one view per video, not the paper's 10 x 3 (a throughput run).
            "--data.val_clips=1", "--data.val_crops=1"]


class _MemorySampler:
    """Peak device memory in use (cudaMemGetInfo) and, at the same moments, torch's reserved memory, every
    0.1 s: DALI's share = max(used - torch reserved) - what the CUDA context alone used before training."""

    def __init__(self) -> None:
        import torch

        self.torch = torch
        free, total = torch.cuda.mem_get_info()
        self.context = (total - free) - torch.cuda.memory_reserved()
        self.peak_used = self.peak_other = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            free, total = self.torch.cuda.mem_get_info()
            used = total - free
            self.peak_used = max(self.peak_used, used)
            self.peak_other = max(self.peak_other, used - self.torch.cuda.memory_reserved())

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        gib = 2**30
        return {"device_peak_used_gib": self.peak_used / gib,
                "torch_peak_allocated_gib": self.torch.cuda.max_memory_allocated() / gib,
                "torch_peak_reserved_gib": self.torch.cuda.max_memory_reserved() / gib,
                "dali_peak_gib": max(0, self.peak_other - self.context) / gib,
                "cuda_context_gib": self.context / gib}


def worker_e2e(args: argparse.Namespace) -> dict[str, Any]:
    """Step 5 (`--shapes CODEC`): cmpl.train in this process on work/tp_CODEC; its records, exit code, the
    steady videos/s and data-wait fraction (records after the first), peak memory of torch and DALI."""
    import torch

    from cmpl import cli
    from cmpl import train as train_cli
    from cmpl.analysis.runs import AnalysisError, read_metrics

    dry = args.dry_run
    work, codec = Path(args.work), args.shapes
    run_dir = work / "cmpl_run"
    shutil.rmtree(run_dir, ignore_errors=True)
    overrides = e2e_overrides(work / f"tp_{codec}", run_dir, dry)
    out: dict[str, Any] = {"codec": codec, "steps_wanted": E2E_STEPS["dry" if dry else "gpu"]}
    if dry:  # the GPU run's exact command line must parse: unknown keys and bad values fail here
        cli.resolve(["--preset", PAPER_PRESET, *e2e_overrides(work / f"tp_{codec}", run_dir, False)])
        out["paper_overrides_ok"] = True
    sampler = _MemorySampler() if torch.cuda.is_available() else None
    t0 = time.monotonic()
    try:
        train_cli.main(["--preset", "tiny" if dry else PAPER_PRESET, *overrides])
        rc = 0
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out.update(rc=rc, seconds=time.monotonic() - t0)
    if sampler is not None:
        out["memory"] = sampler.stop()
    try:
        out["records"] = read_metrics(run_dir)
    except AnalysisError as e:
        out["records"], out["records_error"] = [], str(e)
    train = [r for r in out["records"] if r.get("kind") == "train"]
    steady = train[1:] or train
    if steady:
        out["videos_per_s"] = sum(r["videos_per_s"] for r in steady) / len(steady)
        out["data_wait"] = sum(r["data_wait"] for r in steady) / len(steady)
    return out


WORKERS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "probe": worker_probe, "env": worker_env, "fixtures": worker_fixtures, "datasets": worker_datasets,
    "decode": worker_decode, "agree": worker_agree, "loader": worker_loader, "train": worker_train,
    "bf16": worker_bf16, "e2e": worker_e2e}
