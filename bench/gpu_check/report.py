"""The check's outputs: the markdown table (printed last) and the JSON, both written atomically. The rows
themselves are in OUT/rows.jsonl, written as each ends (runner.Context.row)."""
from __future__ import annotations

import json
import math
import platform
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from cmpl.atomic import write_text

if TYPE_CHECKING:
    from .runner import Done, Row


def fmt(x: float | None, digits: int = 1) -> str:
    """`x` with `digits` decimals; "n/a" for a missing or NaN number."""
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def table(done: Sequence[Done], rows: Sequence[Row], header: str) -> str:
    """The markdown table: `header`, then per step its summary line and one line per row."""
    lines = [header, "", "| # | step / row | status | time (s) | result |", "|---|---|---|---|---|"]
    for num, title, r in done:
        lines.append(f"| **{num}** | **{title}** | **{r.status}** | {r.seconds:.1f} | {r.summary.replace('|', '/')} |")
        for row in rows:
            if row.step == num:
                lines.append(f"| {num} | {row.name} | {row.status} | {row.seconds:.1f} | "
                             f"{row.summary.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def write_report(out: Path, done: Sequence[Done], rows: Sequence[Row], *, started: str, total_s: float,
                 device: str, dry_run: bool, budget: float) -> str:
    """Write OUT/gpu_check.json and OUT/gpu_check.md; returns the table."""
    report = {"started": started, "dry_run": dry_run, "device": device, "total_s": total_s, "budget_s": budget,
              "host": platform.node(),
              "steps": [{"step": n, "title": t, **asdict(r),
                         "rows": [asdict(row) for row in rows if row.step == n]} for n, t, r in done]}
    write_text(out / "gpu_check.json", json.dumps(report, indent=1, default=str))
    header = (f"GPU check on {device}, {started}, {total_s:.0f} s of a {budget:.0f} s budget"
              f"{' (CPU dry run: same boxes, rehearsal sizes)' if dry_run else ''}")
    md = table(done, rows, header)
    write_text(out / "gpu_check.md", md)
    return md
