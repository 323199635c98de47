"""What each step of the check runs, and the step table with its time boxes (bench/README.md)."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from cmpl.analysis.runs import AnalysisError, read_metrics

from . import PAPER_PRESET
from .report import fmt
from .runner import REPO, CheckError, Context, Result, Step, last_line
from .verdicts import CMPL_STEPS, judge_cmpl, loss_rows, pytest_counts, train_rows

TOTAL_BUDGET_S = 470.0  # leaves ~10 s of the 8 minutes for startup and writing
# The pipelines' frame-exactness tests, as tests/test_pipelines*.py name them (`pytest -k`).
PIPELINE_TESTS_K = "exact"
TRAIN_MODES = ("eager", "amp_cl", "amp_cl_compile")  # bench.train_step's fp32 / bf16+channels_last / +compile


def step_wheels(ctx: Context, timeout: float) -> Result:
    if not ctx.dry_run:
        return Result("ok", os.environ.get("GPU_CHECK_INSTALL", "not started through bench/gpu_check.sh"))
    rc, tail = ctx.run(["bash", str(REPO / "bench" / "gpu_wheels.sh"), "selftest"], timeout, "gpu_wheels selftest")
    if rc is None:
        raise TimeoutError(f"gpu_wheels.sh selftest exceeded {timeout:.0f} s")
    return Result("ok" if rc == 0 else "FAIL", last_line(tail))


def step_env(ctx: Context, timeout: float) -> Result:
    info = ctx.worker("env", timeout)
    gpu = info.get("gpu") or "no GPU"
    parts = [gpu, f"driver {info.get('driver') or 'n/a'}", f"torch {info['torch']} (CUDA {info.get('cuda')})",
             f"cuDNN {info.get('cudnn')}", f"DALI {info.get('dali') or 'MISSING'}", f"PyAV {info.get('av') or 'MISSING'}"]
    if info.get("bf16_peak_tflops"):
        parts.append(f"bf16 matmul peak {info['bf16_peak_tflops']:.0f} TFLOP/s")
    missing = [k for k in ("dali", "av") if not info.get(k)]
    if missing or (not ctx.dry_run and not info.get("gpu")):
        return Result("FAIL", "; ".join(parts) + f" -- missing: {', '.join(missing) or 'GPU'}", info)
    return Result("ok", ", ".join(parts), info)


def _pipeline_test_files() -> list[str]:
    return sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_pipelines*.py"))


def step_decode(ctx: Context, timeout: float) -> Result:
    t0 = time.monotonic()
    tests = _pipeline_test_files()
    counts: dict[str, int] = {}
    if not tests:
        test_line, test_ok = "tests/test_pipelines*.py not found", False
    else:
        # Dry run: the selection exists (collected, not run: CI runs those tests in their own right).
        mode = ["--collect-only"] if ctx.dry_run else []
        rc, tail = ctx.run([ctx.python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *mode, "-k", PIPELINE_TESTS_K,
                            *tests], timeout * 0.6, "pytest pipelines")
        counts = pytest_counts(tail)
        if rc is None:
            test_line, test_ok = "timed out", False
        elif ctx.dry_run:
            test_ok = rc == 0 and counts.get("collected", 0) > 0
            test_line = f"{counts.get('collected', 0)} frame-exactness tests collected (-k {PIPELINE_TESTS_K!r})"
        else:
            test_ok = rc == 0 and counts.get("passed", 0) > 0
            test_line = ", ".join(f"{v} {k}" for k, v in counts.items()) or last_line(tail)
    agree = ctx.worker("decode", max(5.0, timeout - (time.monotonic() - t0)))
    ok = test_ok and agree["ok"]
    summary = f"pipelines tests: {test_line}; loader: {agree['summary']}"
    return Result("ok" if ok else "FAIL", summary, {"pytest": counts, **agree})


def step_loader(ctx: Context, timeout: float) -> Result:
    m = ctx.worker("loader", timeout)
    rows = m["rows"]
    text = ", ".join(f"{r['backend']} {r['codec']} {fmt(r['samples_per_s'])} samples/s" for r in rows)
    gpu = [r for r in rows if r["backend"] == "gpu"]
    cpu = [r for r in rows if r["backend"] == "cpu" and r["codec"] == "vp9"]
    if gpu and cpu:
        same = [g for g in gpu if g["codec"] == "vp9"]
        if same and cpu[0]["samples_per_s"]:
            text += f" (GPU/CPU on VP9: {same[0]['samples_per_s'] / cpu[0]['samples_per_s']:.1f}x)"
    return Result("ok", f"{text}; {m['setup']}", m)


def step_train(ctx: Context, timeout: float) -> Result:
    """One bench.train_step process per mode, so a compile that overruns the box keeps the other rows."""
    t0 = time.monotonic()
    # Dry run: the same CLI and JSON on CPU with bench.train_step's tiny preset, eager only.
    common = (["--device", "cpu", "--preset", "tiny", "--warmup", "1", "--steps", "2"] if ctx.dry_run
              else ["--device", "cuda", "--preset", "paper"])
    data: dict[str, Any] = {}
    failed: list[str] = []
    for mode in TRAIN_MODES[:1] if ctx.dry_run else TRAIN_MODES:
        out = ctx.work / f"train_step_{mode}.json"
        left = timeout - (time.monotonic() - t0) - 15  # 15 s kept for the FLOP count
        try:
            got = ctx.json_of([ctx.python, "-m", "bench.train_step", *common, "--modes", mode, "--json", str(out)],
                              out, left, f"bench.train_step {mode}")
        except (TimeoutError, CheckError) as e:
            failed.append(f"{mode}: {e}")
            continue
        data.setdefault("shapes", got["shapes"])
        data.setdefault("results", []).extend(got["results"])
    if not data:
        return Result("FAIL", "; ".join(failed))
    # FLOPs of exactly the timed shapes, counted apart from the timing (FlopCounterMode slows a step).
    flops = ctx.worker("flops", max(5.0, timeout - (time.monotonic() - t0)), "--shapes",
                       json.dumps(data["shapes"]))["total"]
    peak = None if ctx.dry_run else ctx.results.get("env", Result("", "")).metrics.get("bf16_peak_tflops")
    rows = train_rows(data, peak, flops)
    text = "; ".join(f"{r['variant']}: {fmt(r['videos_per_s'])} videos/s, {fmt(r['peak_mem_gib'])} GiB, "
                     f"MFU {fmt(r['mfu_pct'])}%" for r in rows)
    base = next((r["videos_per_s"] for r in rows if r["variant"] == "eager"), None)
    best = max(rows, key=lambda r: r["videos_per_s"] or 0)
    if base and len(rows) > 1:
        ratio = best["videos_per_s"] / base
        text += f"; {best['variant']}/eager fp32 {ratio:.2f}x (target >= 2x: {'met' if ratio >= 2 else 'NOT met'})"
    sh = data["shapes"]
    text += (f"; {sh['primary']} {sh['pt']}f + {sh['aux']} {sh['at']}f {sh['size']} px, B_l={sh['bl']} "
             f"B_u={sh['bu']}: {flops / 1e12:.3f} TFLOP/step, peak {fmt(peak, 0)} TFLOP/s")
    if failed:
        text += "; FAILED " + "; ".join(failed)
    return Result("FAIL" if failed else "ok", text, {"rows": rows, "flops_per_step": flops, "raw": data,
                                                     "failed": failed})


def step_loss(ctx: Context, timeout: float) -> Result:
    out = ctx.work / "loss.json"
    # Dry run: CPU, short timing; the compile of every size still runs (bench.loss has no size option).
    device = ["--device", "cpu", "--min-run-time", "0.05"] if ctx.dry_run else ["--device", "cuda"]
    data = ctx.json_of([ctx.python, "-m", "bench.loss", *device, "--json", str(out)], out, timeout, "bench.loss")
    rows = loss_rows(data)
    text = "; ".join(f"B_u={r['batch']}: eager {fmt(r['eager_us'])} us, compiled {fmt(r['compiled_us'])} us "
                     f"({fmt(r['speedup'], 2)}x)" for r in rows)
    if not rows:
        return Result("FAIL", "no rows in bench.loss output", {"raw": data})
    big = max(rows, key=lambda r: r["batch"] or 0)
    if not ctx.dry_run:
        text += f" (target >= 3x at B_u=320: {'met' if (big['speedup'] or 0) >= 3 else 'NOT met'})"
    return Result("ok", f"{data.get('device', '')}, {data.get('dtype', '')}: {text}", {"rows": rows, "raw": data})


def cmpl_overrides(root: Path, run_dir: Path) -> list[str]:
    """The paper preset, shortened to 50 steps on the synthetic dataset."""
    return [f"--data.root={root}", f"--run.dir={run_dir}", f"--schedule.max_steps={CMPL_STEPS}",
            "--run.log_every=10", "--run.eval_every=0", f"--run.checkpoint_every={CMPL_STEPS}",
            "--run.progress=false",
            # Random networks are never 0.9-confident in 50 steps; 0 lets pseudo-labels flow through the
            # masked losses, as the tiny preset does (the rest stays the paper's size).
            "--method.threshold=0.0",
            # The synthetic videos last 3.2 s; K400's 10 s offset would pin every aux clip to an end.
            "--data.time_offset=1.0"]


def step_cmpl(ctx: Context, timeout: float) -> Result:
    run_dir = ctx.work / "cmpl_run"
    shutil.rmtree(run_dir, ignore_errors=True)
    root = ctx.synthetic or ctx.work / "synthetic"
    overrides = cmpl_overrides(root, run_dir)
    if ctx.dry_run:
        # Validates the exact override keys against the config (exit 2 on an unknown key), no GPU needed.
        rc, tail = ctx.run([ctx.python, "-m", "cmpl.config", "--preset", PAPER_PRESET, *overrides],
                           timeout, "cmpl.config (dry run)")
        if rc != 0:
            return Result("FAIL", f"cmpl.config rejected the step's overrides: {last_line(tail)}")
        return Result("skip", f"needs a GPU; its {len(overrides)} overrides of {PAPER_PRESET} validated by cmpl.config")
    t0 = time.monotonic()
    if not (root / "train.csv").is_file():
        rc, tail = ctx.run([ctx.python, "-m", "preprocess.synthetic", "--out", str(root), "--per-class", "12",
                            "--val-per-class", "2"], timeout * 0.4, "preprocess.synthetic")
        if rc != 0:
            return Result("FAIL", f"no synthetic dataset (carry bench/wheels/synthetic, bench/README.md): "
                                  f"{last_line(tail)}")
    rc, tail = ctx.run([ctx.python, "-m", "cmpl.train", "--preset", PAPER_PRESET, *overrides],
                       timeout - (time.monotonic() - t0), "cmpl.train")
    if rc is None:
        raise TimeoutError(f"cmpl.train exceeded its time box: {last_line(tail)}")
    why = last_line(tail)
    try:
        records = read_metrics(run_dir)
    except AnalysisError as e:  # no metrics.jsonl, or a bad line in it: judged as a run without records
        records, why = [], f"{e}; {why}"
    return judge_cmpl(records, rc, why)


STEPS: list[Step] = [  # number, key, title, function, time box on GPU (s), time box in the dry run (s)
    Step(0, "wheels", "wheel install", step_wheels, 5, 30),
    Step(1, "env", "environment", step_env, 40, 45),
    Step(2, "decode", "DALI decode correctness", step_decode, 70, 90),
    Step(3, "loader", "loader throughput", step_loader, 60, 75),
    Step(4, "train", "training step", step_train, 150, 90),
    Step(5, "loss", "fused loss", step_loss, 50, 120),
    Step(6, "cmpl", "50-step CMPL run", step_cmpl, 100, 30),
]
