"""Throughput of one full CMPL training step: both networks, forward + backward + SGD, B_l + B_u videos.

    python -m bench.train_step                       # CPU, tiny preset models
    python -m bench.train_step --device cuda --preset paper --json bench/out/train_step_gpu.json

Inputs are random tensors of the preset's clip shapes (no decoding: bench/ measures the loader on its
own), so this isolates the model step. Three settings, each in a fresh set of models:
  eager      fp32, contiguous, no torch.compile
  amp_cl     autocast (bf16) + channels_last_3d models and inputs
  amp_cl_compile  the above + torch.compile of both networks
Reported: videos/s (B_l + B_u per step), speedup over eager, seconds per step, and peak GPU memory.
Presets: `tiny` = the tests' tiny models (R10x1/8, 4x2 / 8x1 clips, 32 px, B_l=2, B_u=4);
`paper` = R50 8x8 + R50x1/4 16x4 at 224 px, B_l=2, B_u=10, 400 classes.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from cmpl import presets, runtime
from cmpl.atomic import write_json
from cmpl.components import build_networks, build_optimizer, distinct
from cmpl.methods import build_task
from cmpl.trainer import make_step

MODES = {  # name -> (amp, channels_last, compile)
    "eager": ("off", False, False),
    "amp_cl": ("bf16", True, False),
    "amp_cl_compile": ("bf16", True, True),
    # Not in the default set: separate the two effects of amp_cl (--modes eager,cl,amp).
    "cl": ("off", True, False),
    "amp": ("bf16", False, False),
}
DEFAULT_MODES = ("eager", "amp_cl", "amp_cl_compile")


PRESETS = {"paper": ("k400_1pct_r50", 400), "tiny": ("tiny", 10)}  # bench preset -> (cmpl preset, classes)


def config(preset: str):
    """The cmpl config a bench preset times: its models, clip shapes and batches (CMPL, threshold 0.5)."""
    name, classes = PRESETS[preset]
    cfg = presets.get(name)
    cfg.model.num_classes, cfg.method.name, cfg.method.scheme, cfg.method.threshold = classes, "cmpl", "cross", 0.5
    return cfg


def shapes(preset: str) -> dict:
    """Models and batch shapes of a bench preset (read from its cmpl config)."""
    cfg = config(preset)
    d = cfg.data
    return dict(primary=cfg.model.primary, aux=cfg.model.aux, classes=cfg.model.num_classes, pt=d.primary[0],
                at=d.aux[0], size=d.crop_size, bl=d.labeled_batch, bu=d.unlabeled_batch)


def bench_mode(mode: str, preset: str, device: torch.device, warmup: int, steps: int) -> dict:
    """Time `steps` CMPL steps after `warmup` ones; returns videos/s, s/step and peak memory."""
    amp, cl, comp = MODES[mode]
    cfg, s = config(preset), shapes(preset)
    torch.manual_seed(0)
    networks = build_networks(cfg.model, ("primary", "aux"), num_classes=s["classes"])
    nets = {n: runtime.prepare(m, device=device, channels_last=cl, compile=comp, distributed=False)
            for n, m in distinct(networks).items()}
    task = build_task(cfg.method, {n: wrapped for n, (_, wrapped) in nets.items()})
    params = [p for plain, _ in nets.values() for p in plain.parameters()]
    cfg.schedule.epochs, cfg.schedule.warmup_epochs = 10_000.0, 0.0
    opt, sched = build_optimizer(cfg.optim, cfg.schedule, params, lr=0.01, steps_per_epoch=1)
    step = make_step(task, opt, sched, runtime.make_scaler(amp, device), runtime.autocast_factory(amp, device))

    def clip(n: int, t: int) -> torch.Tensor:
        return runtime.to_channels_last(torch.randn(n, 3, t, s["size"], s["size"], device=device), cl)

    bl, bu, k = s["bl"], s["bu"], s["classes"]
    labeled = {"primary": clip(bl, s["pt"]), "aux": clip(bl, s["at"]),
               "label": torch.randint(k, (bl,), device=device)}
    unlabeled = {"primary_weak": clip(bu, s["pt"]), "primary_strong": clip(bu, s["pt"]),
                 "aux_weak": clip(bu, s["at"]), "aux_strong": clip(bu, s["at"]),
                 "label": torch.randint(k, (bu,), device=device)}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    for _ in range(warmup):
        step(labeled, unlabeled)
    sync()
    warm_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        out = step(labeled, unlabeled)
    sync()
    dt = time.perf_counter() - t0
    assert torch.isfinite(out["loss"]).item(), f"{mode}: non-finite loss"
    res = {"mode": mode, "amp": amp, "channels_last": cl, "compile": comp, "steps": steps,
           "s_per_step": dt / steps, "videos_per_s": (bl + bu) * steps / dt, "warmup_s": warm_s}
    if device.type == "cuda":
        res["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return res


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--preset", choices=("tiny", "paper"), default=None, help="default: paper on cuda, tiny on cpu")
    ap.add_argument("--modes", default=",".join(DEFAULT_MODES), help="comma-separated subset of " + ", ".join(MODES))
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps (default 5 on GPU, 2 on CPU)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 20 on GPU, 5 on CPU)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    a = ap.parse_args(argv)
    device = torch.device(a.device)
    preset = a.preset or ("paper" if device.type == "cuda" else "tiny")
    warmup = a.warmup if a.warmup is not None else (5 if device.type == "cuda" else 2)
    steps = a.steps if a.steps is not None else (20 if device.type == "cuda" else 5)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    s = shapes(preset)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU x{torch.get_num_threads()} threads"
    print(f"bench.train_step: {preset} ({s['primary']} {s['pt']}f + {s['aux']} {s['at']}f, {s['size']} px, "
          f"B_l={s['bl']} B_u={s['bu']}) on {name}, torch {torch.__version__}, {warmup} warmup + {steps} timed steps")
    rows = [bench_mode(m, preset, device, warmup, steps) for m in a.modes.split(",")]
    base = next((r["videos_per_s"] for r in rows if r["mode"] == "eager"), None)
    print(f"{'mode':<16}{'videos/s':>10}{'speedup':>9}{'s/step':>9}{'warmup s':>10}{'peak GiB':>10}")
    for r in rows:
        r["speedup"] = r["videos_per_s"] / base if base else None
        sp = f"{r['speedup']:.2f}x" if base else "-"
        mem = f"{r['peak_mem_gib']:.2f}" if "peak_mem_gib" in r else "-"
        print(f"{r['mode']:<16}{r['videos_per_s']:>10.2f}{sp:>9}{r['s_per_step']:>9.3f}{r['warmup_s']:>10.1f}{mem:>10}")
    if a.json:
        write_json(a.json, {"device": name, "preset": preset, "shapes": s, "torch": torch.__version__,
                            "results": rows})


if __name__ == "__main__":
    from preprocess.entry import run_main

    run_main(main)
