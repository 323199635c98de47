"""The GPU check's CPU rehearsal (bench/gpu_check.sh --dry-run, what CI runs), its rows and its verdicts."""
from __future__ import annotations

import ctypes
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.gpu_check import probe, runner, steps, verdicts, workers

REPO = Path(__file__).resolve().parents[1]


def test_dry_run_rehearses_every_step_within_the_gpu_boxes(tmp_path):
    """Every step's code path that needs no CUDA runs, each inside the box the GPU run gets; GPU rows say
    why they skip; rows are in rows.jsonl; the table is printed last."""
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), "--dry-run", "--out", str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)  # hang guard only
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    late = [s for s in report["steps"] if s["status"] == "timeout"]
    if late and load > 3 * cores and all(s["status"] in ("ok", "timeout") for s in report["steps"]):
        # The boxes are the GPU run's: on a CPU shared 3x over they measure the neighbours, not the check.
        pytest.skip(f"steps {[s['step'] for s in late]} outran their boxes with load {load:.0f} on {cores} cores")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    status = {s["step"]: s["status"] for s in report["steps"]}
    assert status == {s.number: "ok" for s in steps.STEPS}, report["steps"]
    boxes = {s.number: s.box_s for s in steps.STEPS}
    assert all(s["seconds"] <= boxes[s["step"]] + 3 for s in report["steps"])  # the dry run's own verdict too
    assert report["total_s"] <= steps.TOTAL_BUDGET_S + 10
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert [r["name"] for r in rows] == [r["name"] for s in report["steps"] for r in s["rows"]]
    by_name = {r["name"]: r for r in rows}
    assert "selftest ok" in by_name["carried packages"]["summary"]
    assert by_name["driver + NVDEC"]["status"] == "skip" and "libcuda" in by_name["driver + NVDEC"]["summary"]
    for name in ("decode gpu h264", "decode gpu vp9", "loader gpu h264", "loader gpu vp9"):
        assert by_name[name]["status"] == "skip" and "no GPU" in by_name[name]["summary"]
    good, total = by_name["decode cpu vp9"]["metrics"]["exact"]
    assert total > 0 and good == total
    assert by_name["luma agreement vp9"]["metrics"]["mean"] == 0  # the dry run compares CPU with itself
    assert by_name["loader cpu vp9"]["metrics"]["samples_per_s"] > 0
    assert by_name["train step eager fp32"]["metrics"]["videos_per_s"] > 0
    assert by_name["train step eager fp32"]["metrics"]["flops_per_step"] > 0
    assert by_name["bf16 vs fp32 forward (R50-3D)"]["status"] == "ok"
    e2e = by_name["cmpl.train --preset tiny"]
    assert e2e["status"] == "ok" and e2e["metrics"]["paper_overrides_ok"], e2e
    assert 0 <= e2e["metrics"]["data_wait"] <= 1 and e2e["metrics"]["videos_per_s"] > 0
    assert by_name["train step bf16 + channels_last + compile"]["status"] == "ok"
    table = (tmp_path / "gpu_check.md").read_text()
    assert table.count("\n| ") == 1 + len(report["steps"]) + len(rows)  # header, step lines, row lines
    assert proc.stdout.rstrip().endswith(table.rstrip().splitlines()[-1])  # the table is printed last
    assert (tmp_path / "gpu_check.log").stat().st_size > 0


def test_bad_steps_argument_exits_2_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--steps", "1,9", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "valid steps are 0-6" in proc.stderr


def _ctx(tmp_path: Path) -> runner.Context:
    import time

    (tmp_path / "out").mkdir()
    ctx = runner.Context(work=tmp_path, out=tmp_path / "out", dry_run=True, python=sys.executable,
                         log_path=tmp_path / "out" / "log", deadline=time.monotonic() + 60)
    ctx.step, ctx.step_deadline = 2, time.monotonic() + 30
    return ctx


def test_rows_are_written_as_each_finishes_and_errors_become_one_line(tmp_path):
    ctx = _ctx(tmp_path)
    rows = tmp_path / "out" / "rows.jsonl"
    ctx.measure("first", lambda t: runner.Result("ok", "fine"))
    assert [json.loads(x)["name"] for x in rows.read_text().splitlines()] == ["first"]  # before the next row

    def boom(t):
        raise RuntimeError("no NVDEC\nsecond line")

    def skip(t):
        raise runner.Skip("this GPU's NVDEC does not decode av1")

    def slow(t):
        raise TimeoutError(f"exceeded {t:.0f} s")

    ctx.measure("boom", boom)
    ctx.measure("skip", skip)
    ctx.measure("slow", slow)
    got = [json.loads(x) for x in rows.read_text().splitlines()]
    assert [(r["name"], r["status"], r["step"]) for r in got] == [
        ("first", "ok", 2), ("boom", "FAIL", 2), ("skip", "skip", 2), ("slow", "timeout", 2)]
    assert got[1]["summary"].startswith("RuntimeError: no NVDEC")
    rc, _ = ctx.run([sys.executable, "-c", "import time; time.sleep(30)"], 1.0, "sleeper")
    assert rc is None  # killed at its timeout, with its process group


def test_step_status_is_its_worst_row_and_over_the_box_is_a_timeout():
    rows = [runner.Row(3, n, s, "", 1.0) for n, s in (("a", "skip"), ("b", "ok"))]
    assert runner.step_result(rows, 10.0, 45.0).status == "ok"
    assert runner.step_result(rows + [runner.Row(3, "c", "FAIL", "", 1.0)], 10.0, 45.0).status == "FAIL"
    assert runner.step_result(rows[:1], 1.0, 45.0).status == "skip"
    over = runner.step_result(rows, 50.0, 45.0)
    assert over.status == "timeout" and "over its 45 s box" in over.summary


def test_nvdec_caps_struct_and_the_probe_on_a_machine_without_a_driver():
    assert ctypes.sizeof(probe.DecodeCaps) == 88  # cuviddec.h's CUVIDDECODECAPS
    assert probe.CODECS == {"h264": 4, "hevc": 8, "vp8": 9, "vp9": 10, "av1": 11}
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        got = probe.probe_nvdec()
        assert "libcuda.so.1 not found" in got["cuda_why"] and got["decoders"] == {}


def test_rows_that_cannot_run_on_this_gpu_say_why():
    dec = {"h264": {"supported": True, "min": [48, 16], "max": [4096, 4096], "nvdecs": 7},
           "vp9": {"supported": True, "min": [128, 128], "max": [8192, 8192], "nvdecs": 7},
           "av1": {"supported": False, "min": [0, 0], "max": [0, 0], "nvdecs": 0}}
    facts = {"probe": {"decoders": dec}}
    assert probe.codec_ok(facts, "h264", (88, 64)) is None
    assert "below NVDEC's minimum 128x128 for vp9" in probe.codec_ok(facts, "vp9", (88, 64))
    assert "does not decode av1" in probe.codec_ok(facts, "av1")
    no_video = {"probe": {"nvdec_why": "libnvcuvid.so.1 not found; NVIDIA_DRIVER_CAPABILITIES=compute,utility "
                                       "lacks 'video'", "decoders": {}}}
    assert "lacks 'video'" in probe.codec_ok(no_video, "h264")
    assert probe.codec_ok({}, "vp9", (1, 1)) is None  # no probe: the GPU row is attempted
    assert probe.decoder_line(dec) == "h264 48x16..4096x4096 (x7), vp9 128x128..8192x8192 (x7), av1 no"


def _train(step: int, **stats: float) -> dict:
    base = dict(kind="train", step=step, loss=1.0, loss_s_f=1.0, loss_s_a=1.0, loss_u_f=0.5, loss_u_a=0.5,
                mask_f=1.0, mask_a=1.0, pl_acc_f=0.1, pl_acc_a=0.1, videos_per_s=30.0, data_wait=0.1)
    return {**base, **stats}


def test_cmpl_verdict_needs_the_steps_with_all_statistics_finite():
    ok = verdicts.judge_cmpl([_train(10), {"kind": "val", "step": 40}, _train(40)], 0, "", 40)
    assert ok.status == "ok" and "40 steps" in ok.summary
    nan = verdicts.judge_cmpl([_train(10), _train(40, loss_u_a=math.nan)], 0, "", 40)
    assert nan.status == "FAIL" and "loss_u_a@40" in nan.summary
    assert verdicts.judge_cmpl([_train(10)], 0, "", 40).status == "FAIL"
    missing = verdicts.judge_cmpl([{k: v for k, v in _train(40).items() if k != "mask_a"}], 0, "", 40)
    assert missing.status == "FAIL" and "mask_a" in missing.summary
    crashed = verdicts.judge_cmpl([], 1, "error: boom", 40)
    assert crashed.status == "FAIL" and "boom" in crashed.summary


def test_e2e_row_reports_videos_per_s_data_wait_and_memory_of_torch_and_dali():
    res = {"records": [_train(10), _train(20)], "rc": 0, "steps_wanted": 20, "codec": "vp9", "seconds": 30.0,
           "videos_per_s": 25.0, "data_wait": 0.12,
           "memory": {"device_peak_used_gib": 30.0, "torch_peak_allocated_gib": 20.0, "torch_peak_reserved_gib": 24.0,
                      "dali_peak_gib": 5.5, "cuda_context_gib": 0.5}}
    row = verdicts.e2e_row(res, "")
    assert row.status == "ok"
    assert "25.0 videos/s, data wait 12.0%" in row.summary and "DALI ~5.50 GiB" in row.summary
    assert "torch 24.00 GiB reserved" in row.summary


def test_mfu_uses_counted_flops_and_the_measured_peak():
    res = {"mode": "eager", "videos_per_s": 12.0, "s_per_step": 1.0, "peak_mem_gib": 20.0, "flops_per_step": 4e14,
           "warmup_s": 3.0, "shapes": {}}
    assert verdicts.train_row(res, peak_tflops=800.0).metrics["mfu_pct"] == pytest.approx(50.0)
    assert verdicts.train_row(res, peak_tflops=None).metrics["mfu_pct"] is None


def test_bf16_agreement_verdict():
    good = dict(model="resnet3d50", input=[4, 3, 8, 224, 224], rel_l2=0.02, cosine=0.9998, argmax_agree=1.0,
                fp32_ms=30.0, bf16_ms=10.0, finite=True)
    assert verdicts.bf16_row(good).status == "ok"
    assert verdicts.bf16_row({**good, "rel_l2": 0.5, "cosine": 0.8}).status == "FAIL"
    slow = verdicts.bf16_row({**good, "bf16_ms": 60.0})
    assert slow.status == "ok" and "bf16 SLOWER than fp32" in slow.summary


def test_cmpl_step_flops_counts_train_and_weak_passes_of_both_networks():
    shapes = dict(primary="resnet3d10_w1_8", aux="resnet3d10_w1_8", classes=10, pt=4, at=8, size=32, bl=2, bu=4)
    f = workers.cmpl_step_flops(shapes)
    assert f["total"] == pytest.approx(f["primary"] + f["aux"])
    # Same network, twice the frames: about twice the FLOPs (the classifier head is a rounding error).
    assert f["aux"] / f["primary"] == pytest.approx(2.0, rel=0.05)
