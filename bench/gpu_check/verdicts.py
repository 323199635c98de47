"""Rows and verdicts from the workers' output: training-step rows with MFU, the bf16 agreement, a CMPL run."""
from __future__ import annotations

import math
from typing import Any

from .report import fmt
from .runner import Result

# What a CMPL run must log on every train record, finite (cmpl/trainer.py's statistics).
CMPL_STATS = ("loss", "loss_s_f", "loss_s_a", "loss_u_f", "loss_u_a", "mask_f", "mask_a", "pl_acc_f", "pl_acc_a")
# bf16 vs fp32 logits of one forward: relative L2 error and cosine (bf16 keeps 8 bits of mantissa; through
# 50 layers a few percent is normal, a wrong kernel or layout is O(1)).
BF16_MAX_REL, BF16_MIN_COS = 0.1, 0.99


def mfu(flops_per_step: float | None, step_s: float | None, peak_tflops: float | None) -> float | None:
    """Model FLOPs utilisation (%) = FLOPs per step / seconds per step / the measured bf16 peak."""
    if not (flops_per_step and step_s and peak_tflops):
        return None
    return 100.0 * flops_per_step / step_s / (peak_tflops * 1e12)


def train_row(res: dict[str, Any], peak_tflops: float | None) -> Result:
    """A bench.train_step mode's result as a row: videos/s, s/step, peak GiB, MFU, warm-up (compile) time."""
    m = mfu(res.get("flops_per_step"), res.get("s_per_step"), peak_tflops)
    sh = res.get("shapes", {})
    text = (f"{fmt(res.get('videos_per_s'))} videos/s, {fmt(res.get('s_per_step'), 3)} s/step, "
            f"peak {fmt(res.get('peak_mem_gib'), 2)} GiB, MFU {fmt(m)}%, warm-up {fmt(res.get('warmup_s'))} s"
            f" ({sh.get('primary')} {sh.get('pt')}f + {sh.get('aux')} {sh.get('at')}f, {sh.get('size')} px, "
            f"B_l={sh.get('bl')} B_u={sh.get('bu')}, {fmt((res.get('flops_per_step') or 0) / 1e12, 3)} TFLOP/step)")
    return Result("ok", text, {**res, "mfu_pct": m})


def bf16_row(res: dict[str, Any]) -> Result:
    ok = res["finite"] and res["rel_l2"] <= BF16_MAX_REL and res["cosine"] >= BF16_MIN_COS
    slow = res["bf16_ms"] > res["fp32_ms"]
    text = (f"{res['model']} {'x'.join(map(str, res['input']))}: logits rel. L2 {res['rel_l2']:.4f}, cosine "
            f"{res['cosine']:.5f}, argmax agree {res['argmax_agree']:.2f} (limits {BF16_MAX_REL}, {BF16_MIN_COS}); "
            f"forward fp32 {res['fp32_ms']:.1f} ms, bf16+channels_last {res['bf16_ms']:.1f} ms"
            + (" -- bf16 SLOWER than fp32: cuDNN's bf16 Conv3d fallback?" if slow else ""))
    return Result("ok" if ok else "FAIL", text, res)


def judge_cmpl(records: list[dict[str, Any]], rc: int, last: str, steps: int) -> Result:
    """ok iff cmpl.train exited 0 after >= `steps` steps, every train record's statistics present and finite."""
    train = [r for r in records if r.get("kind") == "train"]
    if rc != 0 or not train:
        return Result("FAIL", f"cmpl.train exited {rc} with {len(train)} train records: {last}")
    bad = [f"{k}@{r['step']}" for r in train for k in CMPL_STATS
           if k in r and not (isinstance(r[k], (int, float)) and math.isfinite(r[k]))]
    missing = [k for k in CMPL_STATS if k not in train[-1]]
    last_rec = train[-1]
    text = (f"{last_rec['step']} steps, loss {fmt(train[0].get('loss'), 3)} -> {fmt(last_rec.get('loss'), 3)}, "
            f"mask_f {fmt(last_rec.get('mask_f'), 2)}, mask_a {fmt(last_rec.get('mask_a'), 2)}, "
            f"pl_acc_f {fmt(last_rec.get('pl_acc_f'), 2)}")
    ok = not bad and not missing and last_rec["step"] >= steps
    if bad:
        text += f"; NON-FINITE: {', '.join(bad[:6])}"
    if missing:
        text += f"; missing stats: {', '.join(missing)}"
    return Result("ok" if ok else "FAIL", text, {"last": last_rec, "records": len(train)})


def e2e_row(res: dict[str, Any], last: str) -> Result:
    """Step 5's row: judge_cmpl's verdict, then the figure: steady videos/s, data-wait fraction, memory."""
    verdict = judge_cmpl(res.get("records", []), res.get("rc", 1), last or res.get("records_error", ""),
                         res.get("steps_wanted", 1))
    mem = res.get("memory")
    wait = 100 * res["data_wait"] if "data_wait" in res else None
    figure = (f"{fmt(res.get('videos_per_s'))} videos/s, data wait {fmt(wait)}% of the time (records after "
              f"the first), {res.get('codec')} on "
              f"{'the GPU' if mem else 'the CPU'}, {fmt(res.get('seconds'))} s in all")
    if mem:
        figure += (f"; peak GPU memory: torch {mem['torch_peak_reserved_gib']:.2f} GiB reserved "
                   f"({mem['torch_peak_allocated_gib']:.2f} allocated), DALI ~{mem['dali_peak_gib']:.2f} GiB, "
                   f"device {mem['device_peak_used_gib']:.2f} GiB (CUDA context {mem['cuda_context_gib']:.2f})")
    metrics = {**verdict.metrics, **{k: v for k, v in res.items() if k != "records"}}
    return Result(verdict.status, f"{figure}; {verdict.summary}", metrics)
