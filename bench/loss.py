"""Fused, compiled (`runtime.compile_loss`) vs eager `cmpl.losses.pseudo_label_losses`: forward + backward
w.r.t. the strong logits.

    python -m bench.loss [--device cpu|cuda] [--dtype float32|bfloat16] [--json OUT]
    python -m bench.loss --device cpu --threads 1 --clock thread     # on a shared, loaded CPU machine

B_u in {10, 80, 320}, K = 400 classes (Kinetics-400), scheme cross, tau = 0.9; about half the clips have
a confident weak prediction so the masks are mixed. Timed with torch.utils.benchmark (median of
blocked_autorange, CUDA-synchronized; eager and compiled alternate in rounds) after the compile and a
warm-up.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.utils.benchmark as benchmark

from cmpl.losses import compiled_pseudo_label_losses, pseudo_label_losses
from cmpl.atomic import write_json

SIZES = (10, 80, 320)
NUM_CLASSES = 400
THRESHOLD = 0.9


def make_inputs(b: int, k: int, device: str, dtype: torch.dtype, seed: int = 0) -> list[torch.Tensor]:
    """f_weak, a_weak (B, K) with half the rows peaked; f_strong, a_strong (B, K) leaves needing grad."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(4):
        x = torch.randn(b, k, generator=g) * 2.0
        if i < 2:
            rows = torch.rand(b, generator=g) < 0.5
            x[rows, torch.randint(0, k, (b,), generator=g)[rows]] += 12.0
        out.append(x.to(device=device, dtype=dtype).requires_grad_(i >= 2))
    return out


def step_fn(fn, inputs: list[torch.Tensor]):
    def step() -> None:
        out = fn(*inputs, threshold=THRESHOLD, scheme="cross")
        torch.autograd.grad(out.loss_f + out.loss_a, inputs[2:])
    return step


def time_pair(eager_step, comp_step, min_run_time: float, rounds: int, clock) -> tuple[float, float]:
    """Median seconds per call of each step. Eager and compiled alternate over `rounds` rounds, so load from
    other processes on a shared machine hits both alike; the result is the median of the rounds' medians."""
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    for _ in range(rounds):
        for name, step in (("eager", eager_step), ("compiled", comp_step)):
            timer = benchmark.Timer(stmt="step()", globals={"step": step}, timer=clock,
                                    num_threads=torch.get_num_threads())
            times[name].append(timer.blocked_autorange(min_run_time=min_run_time / rounds).median)
    return statistics.median(times["eager"]), statistics.median(times["compiled"])


def run(device: str, dtype: torch.dtype, min_run_time: float, rounds: int, clock=time.perf_counter,
        ) -> list[dict]:
    compiled = compiled_pseudo_label_losses()
    rows = []
    for b in SIZES:
        inputs = make_inputs(b, NUM_CLASSES, device, dtype)
        eager_step, comp_step = step_fn(pseudo_label_losses, inputs), step_fn(compiled, inputs)
        t0 = time.perf_counter()
        comp_step()  # compiles (forward and backward graphs) for this B_u
        if device == "cuda":
            torch.cuda.synchronize()
        compile_s = time.perf_counter() - t0
        for _ in range(5):
            eager_step()
            comp_step()
        eager, comp = time_pair(eager_step, comp_step, min_run_time, rounds, clock)
        rows.append({"batch": b, "classes": NUM_CLASSES, "eager_us": eager * 1e6, "compiled_us": comp * 1e6,
                     "speedup": eager / comp, "compile_s": compile_s})
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.loss",
                                     description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="dtype of the logits (bfloat16: what the models give under bf16 autocast)")
    parser.add_argument("--min-run-time", type=float, default=2.0,
                        help="seconds of timing per implementation and size, split over the rounds")
    parser.add_argument("--rounds", type=int, default=5, help="alternating eager/compiled timing rounds")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(),
                        help="CPU threads (1 gives stable numbers on a shared machine)")
    parser.add_argument("--clock", choices=("wall", "thread"), default="wall",
                        help="thread: CPU time of this thread, which other processes' load does not inflate "
                             "(CPU with --threads 1 only)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.clock == "thread" and (args.device != "cpu" or args.threads != 1):
        parser.exit(2, "bench.loss: --clock thread needs --device cpu --threads 1\n")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.exit(2, "bench.loss: --device cuda but CUDA is not available\n")
    dtype = getattr(torch, args.dtype)
    device_name = (torch.cuda.get_device_name() if args.device == "cuda"
                   else f"cpu ({torch.get_num_threads()} threads)")
    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    rows = run(args.device, dtype, args.min_run_time, args.rounds, clock)
    print(f"pseudo_label_losses fwd+bwd, scheme cross, K={NUM_CLASSES}, {args.dtype}, {device_name}, "
          f"{args.clock} clock, torch {torch.__version__}")
    print(f"{'B_u':>5} {'eager us':>10} {'compiled us':>12} {'speedup':>8} {'compile s':>10}")
    for r in rows:
        print(f"{r['batch']:>5} {r['eager_us']:>10.1f} {r['compiled_us']:>12.1f} {r['speedup']:>7.2f}x "
              f"{r['compile_s']:>10.1f}")
    if args.json:
        write_json(args.json, {"bench": "loss", "device": device_name, "dtype": args.dtype, "clock": args.clock,
                               "torch": torch.__version__, "rows": rows})


if __name__ == "__main__":
    from preprocess.entry import run_main

    run_main(main)
