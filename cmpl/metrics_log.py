"""Loggers behind one small interface: `log(record)` and `close()`. Only rank 0 writes.

`record` is a flat dict with "kind" ("train" | "val"), "step" and float scalars. `NullLogger` is the
default (other ranks, library use); `RunLogger` writes the console line, TensorBoard scalars
(`<kind>/<key>`) and one JSON line per record in RUN/metrics.jsonl.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

from cmpl.atomic import write_text


class NullLogger:
    """Logs nothing."""

    def log(self, record: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class RunLogger(NullLogger):
    """Console + TensorBoard + RUN/metrics.jsonl.

    On resume from step S, lines of metrics.jsonl with step > S (written by the killed process after its
    last checkpoint) are dropped, and TensorBoard purges its events after S, so curves have no duplicates.
    """

    def __init__(self, run_dir: str | Path, *, resume_step: int = 0,
                 console: Callable[[str], None] = print, tensorboard: bool = True) -> None:
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "metrics.jsonl"
        self._truncate_after(resume_step)
        self._fh = self.path.open("a")
        self._console = console
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(self.dir), purge_step=resume_step or None)

    def _truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        keep = [ln for ln in self.path.read_text().splitlines() if ln.strip() and _step(ln) <= step]
        write_text(self.path, "".join(ln + "\n" for ln in keep))

    def log(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()
        kind, step = record["kind"], record["step"]
        if self._tb is not None:
            for k, v in record.items():
                if k not in ("kind", "step") and isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(f"{kind}/{k}", v, step)
            self._tb.flush()
        self._console(format_record(record))

    def close(self) -> None:
        self._fh.close()
        if self._tb is not None:
            self._tb.close()


def _step(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return 0


def format_record(record: dict[str, Any]) -> str:
    """One console line: `[train] step 120 ep 3.00 | loss 1.234 lr 0.01 ...`."""
    parts = [f"[{record['kind']}] step {record['step']}"]
    for k, v in record.items():
        if k in ("kind", "step"):
            continue
        parts.append(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}")
    return " ".join(parts)
