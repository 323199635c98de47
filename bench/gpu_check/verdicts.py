"""Other tools' output read into rows and verdicts: pytest's summary, bench.train_step, bench.loss, a CMPL run."""
from __future__ import annotations

import math
import re
from typing import Any

from .report import fmt
from .runner import Result

# What a CMPL run must log on every train record, finite (cmpl/trainer.py's statistics).
CMPL_STATS = ("loss", "loss_s_f", "loss_s_a", "loss_u_f", "loss_u_a", "mask_f", "mask_a", "pl_acc_f", "pl_acc_a")
CMPL_STEPS = 50


def pytest_counts(tail: str) -> dict[str, int]:
    """{'passed': 3, 'skipped': 1, ...} (or {'collected': 4, ...} for --collect-only) from pytest's summary."""
    for line in reversed(tail.splitlines()):
        found = re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)", line)
        collected = re.search(r"(\d+)(?:/\d+)? tests? collected", line)
        if collected:
            found.append((collected.group(1), "collected"))
        if found:
            return {k: int(v) for v, k in found}
    return {}


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


def judge_cmpl(records: list[dict[str, Any]], rc: int, last: str) -> Result:
    """ok iff cmpl.train exited 0 after >= 50 steps, every train record's statistics present and finite."""
    train = [r for r in records if r.get("kind") == "train"]
    if rc != 0 or not train:
        return Result("FAIL", f"cmpl.train exited {rc} with {len(train)} train records: {last}")
    bad = [f"{k}@{r['step']}" for r in train for k in CMPL_STATS
           if k in r and not (isinstance(r[k], (int, float)) and math.isfinite(r[k]))]
    missing = [k for k in CMPL_STATS if k not in train[-1]]
    last_rec = train[-1]
    text = (f"{last_rec['step']} steps, loss {fmt(train[0].get('loss'), 3)} -> {fmt(last_rec.get('loss'), 3)}, "
            f"mask_f {fmt(last_rec.get('mask_f'), 2)}, mask_a {fmt(last_rec.get('mask_a'), 2)}, "
            f"pl_acc_f {fmt(last_rec.get('pl_acc_f'), 2)}, {fmt(last_rec.get('videos_per_s'))} videos/s")
    ok = not bad and not missing and last_rec["step"] >= CMPL_STEPS
    if bad:
        text += f"; NON-FINITE: {', '.join(bad[:6])}"
    if missing:
        text += f"; missing stats: {', '.join(missing)}"
    return Result("ok" if ok else "FAIL", text, {"last": last_rec, "records": len(train)})
