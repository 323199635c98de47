"""Atomic file writes: a reader (or a kill -9) never sees half a file.

Every output of cmpl (config.toml, checkpoints, metrics, eval JSON, plots, bench JSON) goes through
`atomic_path`: write a hidden temp file beside the target, then os.replace it over the target.
"""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path beside `path` (`.NAME.tmpPID`); on success it replaces `path`, else it is removed."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, p)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, data: object) -> None:
    """Write `data` as indented JSON atomically."""
    write_text(path, json.dumps(data, indent=2) + "\n")
