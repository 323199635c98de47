"""Atomic checkpoint files and RNG state capture; everything loads with torch.load(weights_only=True).

A checkpoint is written to a temp file in the same folder, fsynced, then os.replace'd over the target,
so a kill -9 at any moment leaves either the old or the new file, never a torn one.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cmpl.atomic import atomic_path


class CheckpointError(RuntimeError):
    """A checkpoint file that is missing, unreadable or not of the expected kind (one-line message)."""


def save_atomic(obj: Any, path: str | Path) -> None:
    """torch.save `obj` to `path` atomically (temp file + fsync + os.replace)."""
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """torch.load(weights_only=True); CheckpointError with the path on any failure."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    try:
        obj = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file for the user
        raise CheckpointError(f"cannot read checkpoint {p}: {type(e).__name__}: {e}".splitlines()[0]) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{p} is not a cmpl checkpoint (got {type(obj).__name__})")
    return obj


def remove_stale_temps(folder: str | Path) -> None:
    """Delete temp files left by a process killed mid-save."""
    for tmp in Path(folder).glob(".*.tmp*"):
        tmp.unlink(missing_ok=True)


def rng_state() -> dict[str, Any]:
    """python, numpy, torch (CPU) and CUDA generator states, as weights_only-loadable values."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        # numpy's state holds an ndarray, which weights_only refuses; store its parts as tensors/ints.
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` captured."""
    random.setstate(_tuplify(state["python"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuplify(x: Any) -> Any:
    # random.setstate needs tuples; a round trip through some pickle paths may give lists.
    return tuple(_tuplify(v) for v in x) if isinstance(x, (list, tuple)) else x
