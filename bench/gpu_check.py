"""The one-call GPU check: verify and measure the GPU path in under 8 minutes (issue 7).

    bench/gpu_check.sh                       # on the GPU machine, after the wheels arrived (bench/README.md)
    python -m bench.gpu_check --out DIR      # the same, once DALI & co. are importable
    python -m bench.gpu_check --dry-run      # CPU: every step that needs no GPU, at tiny sizes (CI)

Steps, each time-boxed in its own process group and printing one result line:
  0 wheels   GPU: how bench/gpu_check.sh installed the carried wheels; dry run: bench/gpu_wheels.sh selftest
  1 env      GPU, driver, torch, CUDA, cuDNN, DALI, PyAV versions; the measured bf16 matmul peak
  2 decode   the pipelines' frame-exactness tests on GPU (H.264, VP9), and GPU vs CPU weak views agree
  3 loader   unlabeled 4-clip samples/s, DALI GPU ('mixed') vs CPU backend, same machine and videos
  4 train    paper models (R50 8x8 + R50x1/4 16x4, B_l=2, B_u=10): eager fp32 / bf16+channels_last /
             +compile: videos/s, peak memory, MFU against step 1's measured bf16 peak
  5 loss     fused pseudo-label loss, compiled vs eager, B_u in {10, 80, 320}, 400 classes
  6 cmpl     50 CMPL steps of the real-size preset on the synthetic dataset: loss and stats finite
Writes OUT/gpu_check.json, OUT/gpu_check.md (the table, printed last) and OUT/gpu_check.log (every
subprocess's output). OUT: --out, else $OUT, else bench/out.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

REPO = Path(__file__).resolve().parents[1]
TOTAL_BUDGET_S = 470.0  # leaves ~10 s of the 8 minutes for startup and writing
PAPER_PRESET = "k400_1pct_r50"


class CheckError(RuntimeError):
    """A step's own verdict of failure; the message is its result line."""


@dataclass
class Result:
    """One step's outcome: status ok | FAIL | timeout | skip, a one-line summary, numbers."""

    status: str
    summary: str
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class Context:
    """What every step gets: folders, mode, the shared log, the results so far, the global deadline."""

    work: Path
    out: Path
    dry_run: bool
    python: str
    log_path: Path
    deadline: float
    synthetic: Path | None
    results: dict[str, Result] = field(default_factory=dict)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHON"] = self.python  # for bench/gpu_wheels.sh
        env.setdefault("TQDM_DISABLE", "1")
        env.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")  # DALI's alias warnings flood the log
        if self.dry_run:
            env["CUDA_VISIBLE_DEVICES"] = ""  # the dry run must behave as on the CPU-only CI machine
        return env

    def run(self, args: Sequence[str], timeout: float, label: str) -> tuple[int | None, str]:
        """Run `args` (no shell) in its own process group, output appended to the log.

        Returns (exit code or None on timeout, last 1500 characters of its output). On timeout the whole
        group is killed: torch.compile's worker pool and DALI threads must not outlive the step.
        """
        with self.log_path.open("a") as log:
            log.write(f"\n===== {label}: {' '.join(args)}\n")
            log.flush()
            start = log.tell()
            proc = subprocess.Popen(list(args), cwd=REPO, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                rc: int | None = proc.wait(timeout=max(1.0, timeout))
            except subprocess.TimeoutExpired:
                rc = None
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        with self.log_path.open() as log:
            log.seek(start)
            tail = log.read()[-1500:]
        return rc, tail

    def worker(self, name: str, timeout: float, *extra: str) -> dict[str, Any]:
        """Run one of this module's workers in a child process; return its JSON or raise CheckError."""
        out = self.work / f"{name}.json"
        out.unlink(missing_ok=True)
        args = [self.python, "-m", "bench.gpu_check", "--worker", name, "--work", str(self.work),
                "--json", str(out), *extra] + (["--dry-run"] if self.dry_run else [])
        return self.json_of(args, out, timeout, f"worker {name}")

    def json_of(self, args: Sequence[str], out: Path, timeout: float, label: str) -> dict[str, Any]:
        rc, tail = self.run(args, timeout, label)
        if rc is None:
            raise TimeoutError(f"{label} exceeded {timeout:.0f} s")
        if rc != 0 or not out.is_file():
            raise CheckError(f"{label} exited {rc}: {last_line(tail)}")
        return json.loads(out.read_text())


def last_line(text: str) -> str:
    """The last non-empty line of a log tail, shortened: what a failing command said last."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else "(no output)")[:240]


def fmt(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------- steps


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


# The pipelines' frame-exactness tests, as tests/test_pipelines*.py name them (`pytest -k`).
PIPELINE_TESTS_K = "exact"


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


TRAIN_MODES = ("eager", "amp_cl", "amp_cl_compile")  # bench.train_step's fp32 / bf16+channels_last / +compile


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
    return judge_cmpl(read_metrics(run_dir / "metrics.jsonl"), rc, last_line(tail))


# ------------------------------------------------------------------------------ parsing other tools


def pytest_counts(tail: str) -> dict[str, int]:
    """{'passed': 3, 'skipped': 1, ...} (or {'collected': 4, ...} for --collect-only) from pytest's summary."""
    import re

    for line in reversed(tail.splitlines()):
        found = re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)", line)
        collected = re.search(r"(\d+)(?:/\d+)? tests? collected", line)
        if collected:
            found.append((collected.group(1), "collected"))
        if found:
            return {k: int(v) for v, k in found}
    return {}


def _pipeline_test_files() -> list[str]:
    return sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_pipelines*.py"))


def train_rows(data: dict[str, Any], peak_tflops: float | None, flops_per_step: float | None
               ) -> list[dict[str, Any]]:
    """bench.train_step's results as rows; MFU = FLOPs per step / seconds per step / measured peak."""
    rows = []
    for r in data.get("results", []):
        step_s = r.get("s_per_step")
        mfu = (100.0 * flops_per_step / step_s / (peak_tflops * 1e12)
               if flops_per_step and step_s and peak_tflops else None)
        rows.append({"variant": r.get("mode"), "videos_per_s": r.get("videos_per_s"),
                     "peak_mem_gib": r.get("peak_mem_gib"), "step_s": step_s, "mfu_pct": mfu})
    return rows


def loss_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """bench.loss's rows: batch (B_u), eager_us, compiled_us, speedup."""
    rows = []
    for r in data.get("rows", []):
        e, c = r.get("eager_us"), r.get("compiled_us")
        rows.append({"batch": r.get("batch"), "eager_us": e, "compiled_us": c,
                     "speedup": r.get("speedup") or (e / c if e and c else None)})
    return rows


def cmpl_overrides(root: Path, run_dir: Path) -> list[str]:
    """The paper preset, shortened to 50 steps on the synthetic dataset."""
    return [f"--data.root={root}", f"--run.dir={run_dir}", "--schedule.max_steps=50", "--run.log_every=10",
            "--run.eval_every=0", "--run.checkpoint_every=50", "--run.progress=false",
            # Random networks are never 0.9-confident in 50 steps; 0 lets pseudo-labels flow through the
            # masked losses, as the tiny preset does (the rest stays the paper's size).
            "--method.threshold=0.0",
            # The synthetic videos last 3.2 s; K400's 10 s offset would pin every aux clip to an end.
            "--data.time_offset=1.0"]


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def judge_cmpl(records: list[dict[str, Any]], rc: int, last: str) -> Result:
    train = [r for r in records if r.get("kind") == "train"]
    if rc != 0 or not train:
        return Result("FAIL", f"cmpl.train exited {rc} with {len(train)} train records: {last}")
    keys = ("loss", "loss_s_f", "loss_s_a", "loss_u_f", "loss_u_a", "mask_f", "mask_a", "pl_acc_f", "pl_acc_a")
    bad = [f"{k}@{r['step']}" for r in train for k in keys
           if k in r and not (isinstance(r[k], (int, float)) and math.isfinite(r[k]))]
    missing = [k for k in keys if k not in train[-1]]
    last_rec = train[-1]
    text = (f"{last_rec['step']} steps, loss {fmt(train[0].get('loss'), 3)} -> {fmt(last_rec.get('loss'), 3)}, "
            f"mask_f {fmt(last_rec.get('mask_f'), 2)}, mask_a {fmt(last_rec.get('mask_a'), 2)}, "
            f"pl_acc_f {fmt(last_rec.get('pl_acc_f'), 2)}, {fmt(last_rec.get('videos_per_s'))} videos/s")
    ok = not bad and not missing and last_rec["step"] >= 50
    if bad:
        text += f"; NON-FINITE: {', '.join(bad[:6])}"
    if missing:
        text += f"; missing stats: {', '.join(missing)}"
    return Result("ok" if ok else "FAIL", text, {"last": last_rec, "records": len(train)})


# --------------------------------------------------------------------------------------------- workers


def worker_env(args: argparse.Namespace) -> dict[str, Any]:
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


def _h264_copy(src: Path, dst: Path) -> Path:
    """The same dataset as `src` (indexed VP9 fixtures), every video re-written as H.264 .mp4."""
    import csv

    from pipelines.testing import write_indexed_video

    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.webm"))
    for subset in ("train", "val"):
        rows = list(csv.DictReader((src / f"{subset}.csv").open()))
        for r in rows:
            r["path"] = r["path"].replace(".webm", ".mp4")
            write_indexed_video(dst / r["path"], int(r["num_frames"]), (int(r["height"]), int(r["width"])),
                                float(r["fps"]), codec="libx264")
        with (dst / f"{subset}.csv").open("w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    for split in (dst / "splits").glob("*.txt"):
        split.write_text(split.read_text().replace(".webm", ".mp4"))
    return dst


def _count_frames(root: Path) -> bool:
    """Every video of train.csv/val.csv exists and PyAV decodes exactly its num_frames frames."""
    import csv

    import av

    for subset in ("train", "val"):
        for r in csv.DictReader((root / f"{subset}.csv").open()):
            with av.open(str(root / r["path"])) as c:
                if sum(1 for _ in c.decode(video=0)) != int(r["num_frames"]):
                    return False
    return True


def _weak_batches(root: Path, device: str, batches: int, seed: int = 0) -> list[dict[str, Any]]:
    import pipelines

    loader = pipelines.unlabeled_loader(str(root), split="1pct_seed0", batch_size=4, device=device, seed=seed,
                                        primary=(8, 2), aux=(16, 1), time_offset=0.5, crop_size=48,
                                        short_side=56, with_indices=True, num_threads=2)
    it = iter(loader)
    out = []
    for _ in range(batches):
        b = next(it)
        out.append({k: v.cpu() for k, v in b.items() if k in ("primary_weak", "aux_weak", "primary_indices",
                                                                "aux_indices")})
    return out


def _frame_exact(batches: list[dict[str, Any]]) -> tuple[int, int]:
    """(clips whose decoded frames are the sampled indices, clips checked) over the weak views."""
    from pipelines.testing import read_indices

    good = total = 0
    for b in batches:
        for view, idx in (("primary_weak", "primary_indices"), ("aux_weak", "aux_indices")):
            for clip, want in zip(b[view], b[idx]):
                total += 1
                good += read_indices(clip) == [int(i) for i in want]
    return good, total


def _pixel_diff(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> dict[str, float]:
    """Weak-view differences in 0..255 units (mean, 99th percentile, max) and whether indices match."""
    import torch

    from pipelines.testing import STD

    std = STD.view(1, 3, 1, 1, 1)
    diffs, same_idx = [], True
    for x, y in zip(a, b):
        same_idx &= all(torch.equal(x[k], y[k]) for k in ("primary_indices", "aux_indices"))
        for v in ("primary_weak", "aux_weak"):
            diffs.append(((x[v] - y[v]).abs() * std).flatten())
    d = torch.cat(diffs)
    sample = d[torch.randperm(d.numel())[:1_000_000]] if d.numel() > 1_000_000 else d
    return {"same_indices": bool(same_idx), "mean": float(d.mean()), "p99": float(sample.quantile(0.99)),
            "max": float(d.max())}


# GPU (NVDEC + GPU color conversion/resize) vs CPU (libavcodec + CPU kernels) may round differently; a
# wrong frame or crop differs by tens of levels over whole regions, far beyond these.
AGREE_MEAN, AGREE_P99 = 2.0, 16.0


def worker_decode(args: argparse.Namespace) -> dict[str, Any]:
    from pipelines.testing import make_dataset

    work = Path(args.work)
    vp9 = make_dataset(work / "fix_vp9", classes=("a", "b"), train_per_class=4, val_per_class=1,
                       num_frames=[40, 64], size=(64, 88))
    cpu = _weak_batches(vp9, "cpu", 2)
    res: dict[str, Any] = {}
    good, total = _frame_exact(cpu)
    res["cpu_vp9_exact"] = [good, total]
    h264_root = _h264_copy(vp9, work / "fix_h264")
    if args.dry_run:
        # The H.264 copy decodes only on the GPU; here check it is a complete, readable dataset folder.
        counted = _count_frames(h264_root)
        res["h264_fixture_frames_ok"] = counted
        res["ok"] = good == total and counted
        res["summary"] = (f"cpu vp9 frame-exact {good}/{total} clips; h264 fixture copy "
                          f"{'complete' if counted else 'BROKEN'} (decodes on the GPU only)")
        return res
    gpu = _weak_batches(vp9, "gpu", 2)
    g_good, g_total = _frame_exact(gpu)
    h264 = _weak_batches(h264_root, "gpu", 2)
    h_good, h_total = _frame_exact(h264)
    agree = _pixel_diff(gpu, cpu)
    res.update(gpu_vp9_exact=[g_good, g_total], gpu_h264_exact=[h_good, h_total], gpu_vs_cpu=agree)
    agree_ok = agree["same_indices"] and agree["mean"] <= AGREE_MEAN and agree["p99"] <= AGREE_P99
    res["ok"] = agree_ok and good == total and g_good == g_total and h_good == h_total
    res["summary"] = (f"frame-exact clips gpu h264 {h_good}/{h_total}, gpu vp9 {g_good}/{g_total}, cpu vp9 "
                      f"{good}/{total}; gpu vs cpu weak views: indices {'equal' if agree['same_indices'] else 'DIFFER'}"
                      f", |diff| mean {agree['mean']:.2f} p99 {agree['p99']:.1f} max {agree['max']:.0f} /255 "
                      f"(limits {AGREE_MEAN}, {AGREE_P99})")
    return res


# preprocess/encode.py's settings (that module drives the ffmpeg CLI, absent on the GPU machine; PyAV
# links the same libx264/libvpx): GOP 16, no B-frames, VP9 CRF 32 realtime, H.264 CRF 23 veryfast.
ENCODE_OPTIONS = {
    "libvpx-vp9": {"g": "16", "bf": "0", "crf": "32", "b:v": "0", "deadline": "realtime", "cpu-used": "8",
                   "lag-in-frames": "0", "auto-alt-ref": "0"},
    "libx264": {"g": "16", "bf": "0", "crf": "23", "preset": "veryfast"},
}


def _encode_one(job: tuple[str, int, int, int, str, int]) -> int:
    """Render synthetic video `index` (preprocess.synthetic's content: panning texture, noise, a moving
    shape) at (h, w) and encode it like the real datasets; returns the file size in bytes."""
    import av

    from preprocess.synthetic import VideoSpec, render_video

    path, frames, h, w, codec, index = job
    video = render_video(VideoSpec(label=index % 10, subset="train", index=index, seed=0, frames=frames,
                                   width=w, height=h))
    with av.open(path, "w") as out:
        stream = out.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = ENCODE_OPTIONS[codec]
        for img in video:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(stream.encode())
    return os.path.getsize(path)


def _throughput_dataset(root: Path, codec: str, videos: int, frames: int, size: tuple[int, int]
                        ) -> tuple[Path, float]:
    """A dataset folder of `videos` synthetic videos at `size` = (H, W), encoded in parallel; returns it
    and the mean bitrate in kbit/s."""
    import multiprocessing as mp

    from pipelines.testing import make_dataset

    make_dataset(root, classes=("x",), train_per_class=2, val_per_class=0, num_frames=8, size=(32, 32))
    ext = ".webm" if codec.startswith("libvpx") else ".mp4"
    rels = [f"videos/train/x/x_{i:04d}{ext}" for i in range(videos)]
    (root / "videos" / "train" / "x").mkdir(parents=True, exist_ok=True)
    # fork: no re-import of torch per process; nothing has touched CUDA or DALI in this process yet.
    with mp.get_context("fork").Pool(min(16, os.cpu_count() or 1)) as pool:
        sizes = pool.map(_encode_one, [(str(root / r), frames, size[0], size[1], codec, i)
                                       for i, r in enumerate(rels)])
    rows = "".join(f"{r},0,{frames},25,{size[1]},{size[0]}\n" for r in rels)
    (root / "train.csv").write_text("path,label,num_frames,fps,width,height\n" + rows)
    (root / "splits" / "1pct_seed0.txt").write_text(f"{rels[0]}\n")
    return root, sum(sizes) * 8 / 1000 / (videos * frames / 25)


def _samples_per_s(root: Path, device: str, batch: int, warmup: int, timed: int, threads: int,
                   sizes: dict[str, Any]) -> float:
    """Unlabeled samples (4 clips each) per second over `timed` batches after `warmup` batches."""
    import torch

    import pipelines

    loader = pipelines.unlabeled_loader(str(root), split="1pct_seed0", batch_size=batch, device=device, seed=0,
                                        num_threads=threads, **sizes)
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    if device == "gpu":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(timed):
        b = next(it)
    if device == "gpu":
        torch.cuda.synchronize()
    assert set(b) >= {"primary_weak", "primary_strong", "aux_weak", "aux_strong"}
    return batch * timed / (time.perf_counter() - t0)


PAPER_SIZES = {"primary": (8, 8), "aux": (16, 4), "crop_size": 224, "short_side": 256, "time_offset": 1.0}
TINY_SIZES = {"primary": (4, 2), "aux": (8, 1), "crop_size": 32, "short_side": 40, "time_offset": 0.5}


def worker_loader(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(args.work)
    cores = os.cpu_count() or 1
    if args.dry_run:
        root, kbps = _throughput_dataset(work / "tp_vp9", "libvpx-vp9", 6, 24, (40, 56))
        sps = _samples_per_s(root, "cpu", 2, 1, 2, 2, TINY_SIZES)
        return {"rows": [{"backend": "cpu", "codec": "vp9", "samples_per_s": sps, "threads": 2}],
                "setup": f"dry run: 6 synthetic VP9 videos 56x40 ({kbps:.0f} kbit/s), 4x2/8x1 clips, 32 px "
                         f"crops, batch 2, 2 timed batches"}
    # Short side 256 (the preprocessed datasets'), 4:3, 5 s at 25 fps: the window plus offsets fits.
    size, frames, videos, batch = (256, 340), 125, 48, 16
    rows = []
    t0 = time.monotonic()
    vp9, vp9_kbps = _throughput_dataset(work / "tp_vp9", "libvpx-vp9", videos, frames, size)
    h264, h264_kbps = _throughput_dataset(work / "tp_h264", "libx264", videos, frames, size)
    made = time.monotonic() - t0
    # Warm-up 3 > DALI's prefetch depth 2: the timed batches are produced at the steady rate, not
    # handed out from a queue filled during the build.
    for backend, codec, root, threads, timed in (("gpu", "h264", h264, 8, 20), ("gpu", "vp9", vp9, 8, 20),
                                                 ("cpu", "vp9", vp9, cores, 8)):
        rows.append({"backend": backend, "codec": codec, "threads": threads, "batches": timed,
                     "samples_per_s": _samples_per_s(root, backend, batch, 3, timed, threads, PAPER_SIZES)})
    return {"rows": rows, "setup": f"{videos} synthetic videos {size[1]}x{size[0]} x {frames} frames, GOP 16 "
                                   f"(H.264 {h264_kbps:.0f}, VP9 {vp9_kbps:.0f} kbit/s), batch {batch}, 8x8 + 16x4 "
                                   f"clips, 224 crops (datasets made in {made:.0f} s)"}


def step_flops(shapes: dict[str, Any]) -> dict[str, float]:
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
    return step_flops(json.loads(args.shapes))


WORKERS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "env": worker_env, "decode": worker_decode, "loader": worker_loader, "flops": worker_flops}

# (number, key, title, function, time box on GPU s, time box in the dry run s). The dry run's boxes are
# loose: CI's 2 shared cores may be several times slower than an idle machine.
STEPS: list[tuple[int, str, str, Callable[[Context, float], Result], float, float]] = [
    (0, "wheels", "wheel install", step_wheels, 5, 30),
    (1, "env", "environment", step_env, 40, 45),
    (2, "decode", "DALI decode correctness", step_decode, 70, 90),
    (3, "loader", "loader throughput", step_loader, 60, 75),
    (4, "train", "training step", step_train, 150, 90),
    (5, "loss", "fused loss", step_loss, 50, 120),
    (6, "cmpl", "50-step CMPL run", step_cmpl, 100, 30),
]


# ---------------------------------------------------------------------------------------------- report


def table(results: list[tuple[int, str, Result]], header: str) -> str:
    lines = [header, "", "| # | step | status | time (s) | result |", "|---|---|---|---|---|"]
    for num, title, r in results:
        lines.append(f"| {num} | {title} | {r.status} | {r.seconds:.1f} | {r.summary.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def run_steps(ctx: Context, selected: set[int]) -> list[tuple[int, str, Result]]:
    done = []
    for num, key, title, fn, cap_gpu, cap_dry in STEPS:
        if num not in selected:
            continue
        cap = cap_dry if ctx.dry_run else cap_gpu
        timeout = min(cap, ctx.remaining())
        t0 = time.monotonic()
        if timeout < 5:
            res = Result("skip", f"no time left in the {TOTAL_BUDGET_S:.0f} s budget")
        else:
            try:
                res = fn(ctx, timeout)
            except TimeoutError as e:
                res = Result("timeout", str(e))
            except CheckError as e:
                res = Result("FAIL", str(e))
            except Exception as e:  # noqa: BLE001 - one broken step must not stop the others
                res = Result("FAIL", f"{type(e).__name__}: {e}"[:300])
        res.seconds = time.monotonic() - t0
        ctx.results[key] = res
        done.append((num, title, res))
        print(f"[step {num}] {title}: {res.status} ({res.seconds:.1f} s) {res.summary}", flush=True)
    return done


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=None, help="folder for the JSON, table and log ($OUT, else bench/out)")
    p.add_argument("--dry-run", action="store_true", help="CPU only: the steps that need no GPU, tiny sizes")
    p.add_argument("--steps", default="0,1,2,3,4,5,6", help="comma-separated step numbers (default: all)")
    p.add_argument("--synthetic", type=Path, default=None,
                   help="a synthetic dataset folder made beforehand (the GPU machine has no ffmpeg CLI)")
    p.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    p.add_argument("--budget", type=float, default=TOTAL_BUDGET_S, help="seconds for all steps together")
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--shapes", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        args.step_set = {int(s) for s in args.steps.split(",") if s.strip()}
    except ValueError:
        p.error(f"--steps must be comma-separated numbers, got {args.steps!r}")
    if not args.step_set <= {s[0] for s in STEPS}:
        p.error(f"--steps: valid steps are 0-{len(STEPS) - 1}")
    if args.synthetic is not None and not (args.synthetic / "train.csv").is_file():
        p.error(f"--synthetic {args.synthetic}: no train.csv there")
    if args.worker and not (args.json and args.work):
        p.error("--worker needs --json and --work")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        res = WORKERS[args.worker](args)
        write_atomic(args.json, json.dumps(res, indent=1))
        return 0
    out = args.out or Path(os.environ.get("OUT") or REPO / "bench" / "out")
    out.mkdir(parents=True, exist_ok=True)
    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="gpu_check_")
    work = Path(args.work or tmp.name)  # type: ignore[union-attr]
    work.mkdir(parents=True, exist_ok=True)
    log_path = out / "gpu_check.log"
    log_path.write_text("")
    ctx = Context(work=work, out=out, dry_run=args.dry_run, python=sys.executable, log_path=log_path,
                  deadline=time.monotonic() + args.budget, synthetic=args.synthetic)
    t0 = time.monotonic()
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    print(f"gpu_check{' --dry-run' if args.dry_run else ''}: steps {sorted(args.step_set)}, budget "
          f"{args.budget:.0f} s, out {out}", flush=True)
    done = run_steps(ctx, args.step_set)
    total = time.monotonic() - t0
    env = ctx.results.get("env")
    card = (env.metrics.get("gpu") if env else None) or ("CPU dry run" if args.dry_run else "unknown device")
    header = f"GPU check on {card}, {started}, {total:.0f} s{' (dry run)' if args.dry_run else ''}"
    report = {"started": started, "dry_run": args.dry_run, "device": card, "total_s": total,
              "host": platform.node(), "steps": [{"step": n, "title": t, **asdict(r)} for n, t, r in done]}
    write_atomic(out / "gpu_check.json", json.dumps(report, indent=1, default=str))
    md = table(done, header)
    write_atomic(out / "gpu_check.md", md)
    if tmp is not None:
        tmp.cleanup()
    print("\n" + md, flush=True)
    failed = [r for _, _, r in done if r.status in ("FAIL", "timeout")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
