"""The check's outputs: the markdown table (printed last) and the JSON, both written atomically."""
from __future__ import annotations

import json
import math
import platform
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from cmpl.atomic import write_text

from .runner import Done


def fmt(x: float | None, digits: int = 1) -> str:
    """`x` with `digits` decimals; "n/a" for a missing or NaN number."""
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def table(done: Sequence[Done], header: str) -> str:
    """The markdown table: `header`, then one row per step (number, title, status, seconds, result)."""
    lines = [header, "", "| # | step | status | time (s) | result |", "|---|---|---|---|---|"]
    for num, title, r in done:
        lines.append(f"| {num} | {title} | {r.status} | {r.seconds:.1f} | {r.summary.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def write_report(out: Path, done: Sequence[Done], *, started: str, total_s: float, device: str,
                 dry_run: bool) -> str:
    """Write OUT/gpu_check.json and OUT/gpu_check.md; returns the table."""
    report = {"started": started, "dry_run": dry_run, "device": device, "total_s": total_s,
              "host": platform.node(), "steps": [{"step": n, "title": t, **asdict(r)} for n, t, r in done]}
    write_text(out / "gpu_check.json", json.dumps(report, indent=1, default=str))
    header = f"GPU check on {device}, {started}, {total_s:.0f} s{' (dry run)' if dry_run else ''}"
    md = table(done, header)
    write_text(out / "gpu_check.md", md)
    return md
