"""What each step of the check runs, and the step table with its time boxes (bench/README.md).

The boxes are the same on the GPU and in the CPU dry run: the dry run at its rehearsal scale must fit them
(tests/test_gpu_check.py), which keeps every step's fixed costs -- child processes, imports, pipeline
builds, dataset encoding -- inside what the GPU run can afford.
"""
from __future__ import annotations

import os
import time

from . import PAPER_PRESET
from .probe import codec_ok, decoder_line
from .report import fmt
from .runner import REPO, CheckError, Context, Result, Skip, Step, last_line
from .throughput import SIZES
from .verdicts import bf16_row, e2e_row, train_row

TOTAL_BUDGET_S = 280.0  # the sum of the boxes: ~4.7 of the 8 minutes (bench/README.md, "Time budget")
GPU_ROWS = (("gpu", "h264"), ("gpu", "vp9"), ("cpu", "vp9"))  # H.264 first: NVDEC's surest codec


def _no_gpu(ctx: Context) -> str | None:
    """Why GPU rows cannot run at all (dry run, no driver), or None."""
    if ctx.dry_run:
        return "no GPU in the dry run (CUDA_VISIBLE_DEVICES=''): the CPU rows exercise this code"
    probe = ctx.facts.get("probe") or {}
    return probe.get("cuda_why")


def _gpu_codec_skip(ctx: Context, codec: str, size: tuple[int, int] | None) -> str | None:
    return _no_gpu(ctx) or codec_ok(ctx.facts, codec, size)


def _runnable(ctx: Context, kind: str, size: tuple[int, int]) -> list[tuple[str, str]]:
    """GPU_ROWS that can run here; the others are filed at once as skip rows, each with its reason."""
    rows = []
    for backend, codec in GPU_ROWS:
        why = _gpu_codec_skip(ctx, codec, size) if backend == "gpu" else None
        if why:
            ctx.row(f"{kind} {backend} {codec}", Result("skip", why))
        else:
            rows.append((backend, codec))
    return rows


BACKGROUND = {"fixtures": {2}, "datasets": {3, 5}}  # background job -> the steps that need it


def start_background(ctx: Context, selected: set[int]) -> None:
    """Encode the test videos in the background (PyAV, a process pool) while the first steps run; a job
    whose output is already in the work folder (a rerun with the same --work) is not run again."""
    common = ["--work", str(ctx.work)] + (["--dry-run"] if ctx.dry_run else [])
    for job, needed_by in BACKGROUND.items():
        if needed_by & selected and not (ctx.work / f"{job}.json").is_file():
            ctx.spawn(job, [ctx.python, "-m", "bench.gpu_check", "--worker", job, "--json",
                            str(ctx.work / f"{job}.json"), *common])


# ---- step 0 --------------------------------------------------------------------------------------------
def step_probe(ctx: Context) -> None:
    def wheels(timeout: float) -> Result:
        if not ctx.dry_run:
            return Result("ok", os.environ.get("GPU_CHECK_INSTALL", "not started through bench/gpu_check.sh"))
        rc, tail = ctx.run(["bash", str(REPO / "bench" / "gpu_wheels.sh"), "selftest"], timeout,
                           "gpu_wheels selftest")
        if rc is None:
            raise TimeoutError(f"gpu_wheels.sh selftest exceeded {timeout:.0f} s")
        return Result("ok" if rc == 0 else "FAIL", last_line(tail))

    ctx.measure("carried packages", wheels, share=0.5)

    def probe(timeout: float) -> Result:
        p = ctx.worker("probe", timeout)
        ctx.facts["probe"] = p
        caps = f"NVIDIA_DRIVER_CAPABILITIES={p.get('capabilities')}"
        if p.get("cuda_why"):
            return Result("skip" if ctx.dry_run else "FAIL", f"{p['cuda_why']}; {caps}", p)
        head = (f"{p.get('gpu')}, driver {p.get('driver')} (CUDA {p.get('cuda_driver')}), {caps}, "
                f"libnvcuvid {'present' if p.get('nvcuvid') else 'MISSING'}")
        if p.get("nvdec_why") and not p.get("decoders"):
            return Result("FAIL", f"{head}: {p['nvdec_why']}", p)
        text = f"{head}; NVDEC 8-bit 4:2:0 min..max: {decoder_line(p['decoders'])}"
        return Result("FAIL" if p.get("nvdec_why") else "ok", text, p)

    ctx.measure("driver + NVDEC", probe)

    def cudnn(timeout: float) -> Result:
        p = ctx.facts.get("probe")
        if p is None:
            raise Skip("the probe did not run")
        if p.get("torch_error"):
            return Result("FAIL", f"torch does not import: {p['torch_error']}")
        v = p.get("cudnn")
        text = f"cuDNN {v // 10000}.{v // 100 % 100}.{v % 100} (torch {p.get('torch')})" if v else "no cuDNN"
        if p.get("cudnn_warning"):
            return Result("ok", f"{text}; WARNING: {p['cudnn_warning']}", p)
        return Result("ok", f"{text}: not in 9.8-9.14, no bf16 Conv3d slow path", p)

    ctx.measure("cuDNN", cudnn)


# ---- step 1 --------------------------------------------------------------------------------------------
def step_env(ctx: Context) -> None:
    def env(timeout: float) -> Result:
        info = ctx.worker("env", timeout)
        ctx.facts["env"] = info
        parts = [info.get("gpu") or "no GPU", f"torch {info['torch']} (CUDA {info.get('cuda')})",
                 f"DALI {info.get('dali') or 'MISSING'}", f"PyAV {info.get('av') or 'MISSING'}",
                 f"numpy {info.get('numpy') or 'MISSING'}", f"{info.get('cpus')} CPUs"]
        if info.get("bf16_peak_tflops"):
            parts.append(f"bf16 matmul peak {info['bf16_peak_tflops']:.0f} TFLOP/s")
        missing = [k for k in ("dali", "av", "numpy", "tomli_w") if not info.get(k)]
        errors = "; ".join(info[f"{k}_error"] for k in missing if info.get(f"{k}_error"))
        if missing or (not ctx.dry_run and not info.get("gpu")):
            return Result("FAIL", ", ".join(parts) + f" -- missing: {', '.join(missing) or 'GPU'} {errors}", info)
        return Result("ok", ", ".join(parts), info)

    ctx.measure("versions + matmul peak", env)


# ---- step 2 --------------------------------------------------------------------------------------------
def step_decode(ctx: Context) -> None:
    from .decode import FIXTURE_SIZE

    size = (FIXTURE_SIZE[1], FIXTURE_SIZE[0])

    def fixtures(timeout: float) -> Result:
        ctx.wait_for("fixtures", timeout)
        import json

        got = json.loads((ctx.work / "fixtures.json").read_text())
        if not got.get("h264_frames_ok"):
            return Result("FAIL", "the H.264 copy of the fixtures does not decode to its frame counts (PyAV)")
        return Result("ok", f"indexed fixtures {size[0]}x{size[1]}, VP9 + H.264 copy (frame counts checked with "
                            f"PyAV)", got)

    ctx.measure("fixtures", fixtures, share=0.5)
    files: dict[tuple[str, str], str] = {}
    rows = _runnable(ctx, "decode", size)
    for i, (backend, codec) in enumerate(rows):
        def row(timeout: float, backend: str = backend, codec: str = codec) -> Result:
            got = ctx.worker("decode", timeout, "--shapes", f"{backend} {codec}")
            files[(backend, codec)] = got["file"]
            good, total = got["exact"]
            return Result("ok" if got["ok"] else "FAIL", f"frame-exact weak clips {good}/{total} "
                          f"(8x2 + 16x1 clips, 128-px crops, RandAugment off)", got)

        ctx.measure(f"decode {backend} {codec}", row, share=1 / (len(rows) + 1 - i))

    def agree(timeout: float) -> Result:
        from .decode import AGREE_MEAN, AGREE_P99

        pair = (files.get(("gpu", "vp9")), files.get(("cpu", "vp9")))
        label = "gpu vs cpu"
        if ctx.dry_run and pair[1]:
            pair, label = (pair[1], pair[1]), "dry run: cpu vs itself (exercises the comparison)"
        if not all(pair):
            raise Skip("needs both the GPU and the CPU VP9 rows")
        got = ctx.worker("agree", timeout, "--shapes", " ".join(pair))  # type: ignore[arg-type]
        text = (f"{label}, same weak views of VP9: indices {'equal' if got['same_indices'] else 'DIFFER'}, "
                f"luma |diff| mean {got['mean']:.2f} p99 {got['p99']:.1f} max {got['max']:.0f} /255 "
                f"(limits {AGREE_MEAN}, {AGREE_P99})")
        return Result("ok" if got["ok"] else "FAIL", text, got)

    ctx.measure("luma agreement vp9", agree)


# ---- step 3 --------------------------------------------------------------------------------------------
def step_loader(ctx: Context) -> None:
    videos, frames, (h, w) = SIZES["dry" if ctx.dry_run else "gpu"]

    def datasets(timeout: float) -> Result:
        ctx.wait_for("datasets", timeout)
        import json

        got = json.loads((ctx.work / "datasets.json").read_text())
        text = ", ".join(f"{c} {d['kbps']:.0f} kbit/s" for c, d in got.items())
        return Result("ok", f"{videos} synthetic videos {w}x{h} x {frames} frames per codec, 10 classes ({text}; "
                            f"encoded in the background from step 0)", got)

    ctx.measure("datasets", datasets, share=0.5)
    rates: dict[tuple[str, str], float] = {}
    rows = _runnable(ctx, "loader", (w, h))
    for i, (backend, codec) in enumerate(rows):
        def row(timeout: float, backend: str = backend, codec: str = codec) -> Result:
            got = ctx.worker("loader", timeout, "--shapes", f"{backend} {codec}")
            rates[(backend, codec)] = got["samples_per_s"]
            text = (f"{fmt(got['samples_per_s'])} samples/s (weak views of {got['clips']} clips, "
                    f"{got['crop']} crops of {got['short_side']}, batch {got['batch']}, {got['threads']} DALI threads)")
            if backend == "cpu" and ("gpu", "vp9") in rates and got["samples_per_s"]:
                text += f"; GPU/CPU on VP9: {rates[('gpu', 'vp9')] / got['samples_per_s']:.1f}x"
            return Result("ok", text, got)

        ctx.measure(f"loader {backend} {codec}", row, share=1 / (len(rows) - i))


# ---- step 4 --------------------------------------------------------------------------------------------
def _peak(ctx: Context) -> float | None:
    return None if ctx.dry_run else (ctx.facts.get("env") or {}).get("bf16_peak_tflops")


def _train_mode(ctx: Context, mode: str, timeout: float) -> Result:
    if (why := _no_gpu(ctx)) and not ctx.dry_run:
        raise Skip(why)
    return train_row(ctx.worker("train", timeout, "--shapes", mode), _peak(ctx))


def step_train(ctx: Context) -> None:
    ctx.measure("train step eager fp32", lambda t: _train_mode(ctx, "eager", t), share=0.4)
    ctx.measure("train step bf16 + channels_last", lambda t: _train_mode(ctx, "amp_cl", t), share=0.6)

    def bf16(timeout: float) -> Result:
        if (why := _no_gpu(ctx)) and not ctx.dry_run:
            raise Skip(why)
        return bf16_row(ctx.worker("bf16", timeout))

    ctx.measure("bf16 vs fp32 forward (R50-3D)", bf16)


# ---- step 5 --------------------------------------------------------------------------------------------
def step_cmpl(ctx: Context) -> None:
    _, _, (h, w) = SIZES["dry" if ctx.dry_run else "gpu"]

    def run(timeout: float) -> Result:
        t0 = time.monotonic()
        if ctx.dry_run:
            codec = "vp9"  # the CPU backend's codec
        elif why := _no_gpu(ctx):
            raise Skip(why)
        else:  # the datasets' codec the probe says this GPU decodes, VP9 (preprocess's) first
            ok = [c for c in ("vp9", "h264") if codec_ok(ctx.facts, c, (w, h)) is None]
            if not ok:
                raise Skip(f"neither VP9 nor H.264 decodes on this GPU: {codec_ok(ctx.facts, 'vp9', (w, h))}")
            codec = ok[0]
        ctx.wait_for("datasets", timeout)
        try:
            got = ctx.worker("e2e", timeout - (time.monotonic() - t0), "--shapes", codec)
        except CheckError as e:
            return Result("FAIL", str(e))
        return e2e_row(got, "")

    preset = "tiny" if ctx.dry_run else PAPER_PRESET
    ctx.measure(f"cmpl.train --preset {preset}", run)


# ---- step 6 --------------------------------------------------------------------------------------------
def step_compile(ctx: Context) -> None:
    ctx.measure("train step bf16 + channels_last + compile",
                lambda t: _train_mode(ctx, "amp_cl_compile", t))


STEPS: list[Step] = [  # number, key, title, function, time box (s): the same on the GPU and in the dry run
    Step(0, "probe", "driver, NVDEC, cuDNN", step_probe, 20),
    Step(1, "env", "environment", step_env, 20),
    Step(2, "decode", "DALI decode correctness", step_decode, 35),
    Step(3, "loader", "loader throughput", step_loader, 40),
    Step(4, "train", "training step", step_train, 55),  # cuDNN's autotuner runs in each of its rows
    Step(5, "cmpl", "cmpl.train end to end", step_cmpl, 60),
    Step(6, "compile", "torch.compile", step_compile, 50),
]
assert sum(s.box_s for s in STEPS) == TOTAL_BUDGET_S
