"""The GPU check's CPU dry run (bench/gpu_check.sh --dry-run) and its result parsing."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.gpu_check import verdicts, workers

REPO = Path(__file__).resolve().parents[1]


def test_dry_run_runs_every_cpu_step_and_prints_the_table_last(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu_check.sh"), "--dry-run", "--out", str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)  # hang guard only
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    status = {s["step"]: s["status"] for s in report["steps"]}
    # Only the CMPL run needs a GPU (its overrides are validated); every other step runs at a tiny size.
    assert status == {0: "ok", 1: "ok", 2: "ok", 3: "ok", 4: "ok", 5: "ok", 6: "skip"}, report["steps"]
    steps = {s["step"]: s for s in report["steps"]}
    assert "selftest ok" in steps[0]["summary"]
    good, total = steps[2]["metrics"]["cpu_vp9_exact"]
    assert total > 0 and good == total
    assert steps[3]["metrics"]["rows"][0]["samples_per_s"] > 0
    assert steps[4]["metrics"]["rows"][0]["videos_per_s"] > 0 and steps[4]["metrics"]["flops_per_step"] > 0
    assert [r["batch"] for r in steps[5]["metrics"]["rows"]] == [10, 80, 320]
    table = (tmp_path / "gpu_check.md").read_text()
    assert table.count("\n| ") == 1 + len(steps)  # header row + one per step
    assert proc.stdout.rstrip().endswith(table.rstrip().splitlines()[-1])  # the table is printed last
    assert (tmp_path / "gpu_check.log").stat().st_size > 0


def test_bad_steps_argument_exits_2_with_one_line(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--steps", "1,9", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "valid steps are 0-6" in proc.stderr


def _train(step: int, **stats: float) -> dict:
    base = dict(kind="train", step=step, loss=1.0, loss_s_f=1.0, loss_s_a=1.0, loss_u_f=0.5, loss_u_a=0.5,
                mask_f=1.0, mask_a=1.0, pl_acc_f=0.1, pl_acc_a=0.1, videos_per_s=30.0)
    return {**base, **stats}


def test_cmpl_verdict_needs_50_finite_steps_with_all_statistics():
    ok = verdicts.judge_cmpl([_train(10), {"kind": "val", "step": 50}, _train(50)], 0, "")
    assert ok.status == "ok" and "50 steps" in ok.summary
    nan = verdicts.judge_cmpl([_train(10), _train(50, loss_u_a=math.nan)], 0, "")
    assert nan.status == "FAIL" and "loss_u_a@50" in nan.summary
    short = verdicts.judge_cmpl([_train(10)], 0, "")
    assert short.status == "FAIL"
    missing = verdicts.judge_cmpl([{k: v for k, v in _train(50).items() if k != "mask_a"}], 0, "")
    assert missing.status == "FAIL" and "mask_a" in missing.summary
    crashed = verdicts.judge_cmpl([], 1, "error: boom")
    assert crashed.status == "FAIL" and "boom" in crashed.summary


def test_mfu_uses_counted_flops_and_the_measured_peak():
    data = {"results": [{"mode": "eager", "videos_per_s": 12.0, "s_per_step": 1.0, "peak_mem_gib": 20.0}]}
    (row,) = verdicts.train_rows(data, peak_tflops=800.0, flops_per_step=4e14)
    assert row["mfu_pct"] == pytest.approx(50.0) and row["variant"] == "eager"
    (row,) = verdicts.train_rows(data, peak_tflops=None, flops_per_step=4e14)
    assert row["mfu_pct"] is None


def test_cmpl_step_flops_counts_train_and_weak_passes_of_both_networks():
    shapes = dict(primary="resnet3d10_w1_8", aux="resnet3d10_w1_8", classes=10, pt=4, at=8, size=32, bl=2, bu=4)
    f = workers.cmpl_step_flops(shapes)
    assert f["total"] == pytest.approx(f["primary"] + f["aux"])
    # Same network, twice the frames: about twice the FLOPs (the classifier head is a rounding error).
    assert f["aux"] / f["primary"] == pytest.approx(2.0, rel=0.05)


def test_pytest_summary_parsing():
    assert verdicts.pytest_counts("..\n== 2 passed, 1 skipped in 3.1s ==\n") == {"passed": 2, "skipped": 1}
    assert verdicts.pytest_counts("a\n3/10 tests collected (7 deselected) in 1.2s") == {"deselected": 7,
                                                                                         "collected": 3}
    assert verdicts.pytest_counts("no summary") == {}
