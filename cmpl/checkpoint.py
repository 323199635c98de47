"""Atomic checkpoint files, the kept previous ones, and RNG state capture; everything loads with
torch.load(weights_only=True).

A checkpoint is written to a temp file in the same folder, fsynced, then os.replace'd over the target,
so a kill -9 at any moment leaves either the old or the new file, never a torn one.

`save_rotating` keeps the K newest: `last.pt` (newest), `last.1.pt`, ..., `last.{K-1}.pt`. A file can still be
torn by what atomic renames do not cover (a node crash on a filesystem that lost the data, a copy cut short):
`load_newest` then warns and falls back to the next one.
"""
from __future__ import annotations

import os
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from cmpl.atomic import atomic_path


class CheckpointError(RuntimeError):
    """A checkpoint file that is missing, unreadable or not of the expected kind (one-line message)."""


def save_atomic(obj: Any, path: str | Path) -> None:
    """torch.save `obj` to `path` atomically (temp file + fsync + os.replace)."""
    with atomic_path(path) as tmp:
        _save_synced(obj, tmp)


def _save_synced(obj: Any, path: Path) -> None:
    with path.open("wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """torch.load(weights_only=True); CheckpointError with the path and one line on any failure.

    A file torch.load cannot read is named as what it is (empty, not a torch.save file, damaged, holding
    objects a cmpl checkpoint never holds); PyTorch's own message is not passed on, because it advises
    `weights_only=False`, which would run code from the file and cannot make a non-checkpoint one.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint not found: {p}")
    if p.stat().st_size == 0:
        raise CheckpointError(f"{p} is not a cmpl checkpoint: the file is empty")
    if not zipfile.is_zipfile(p):  # torch.save has written zip archives since PyTorch 1.6; torch.load not asked
        raise CheckpointError(f"{p} is not a cmpl checkpoint: not a file written by torch.save, or one cut short")
    try:
        obj = torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file for the user
        reason = ("it holds Python objects other than tensors and plain values, which cmpl checkpoints never hold; "
                  "it was not loaded" if isinstance(e, pickle.UnpicklingError)
                  else "a zip archive torch.load cannot read (damaged, or not written by torch.save)")
        raise CheckpointError(f"{p} is not a cmpl checkpoint: {reason}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{p} is not a cmpl checkpoint (it holds a {type(obj).__name__}, not a dict)")
    return obj


def previous(path: Path, n: int) -> Path:
    """The n-th kept predecessor of `path`: last.pt -> last.1.pt, last.2.pt, ..."""
    return path.with_name(f"{path.stem}.{n}{path.suffix}")


def save_rotating(obj: Any, path: str | Path, keep: int) -> None:
    """save_atomic `obj` to `path`, first shifting the older files so that the `keep` newest remain.

    The new file is complete (fsynced temp) before anything is renamed; a kill between the shifts and the
    last rename leaves no `path` for a moment but `previous(path, 1)` readable, which `load_newest` takes.
    """
    p = Path(path)
    with atomic_path(p) as tmp:
        _save_synced(obj, tmp)
        chain = [p] + [previous(p, n) for n in range(1, keep)]
        for older, newer in zip(reversed(chain[1:]), reversed(chain[:-1])):
            if newer.exists():
                os.replace(newer, older)
        for n, extra in _numbered(p):  # left from a run with a larger keep
            if n >= keep:
                extra.unlink(missing_ok=True)


def load_newest(path: str | Path, warn: Callable[[str], None], map_location: str | torch.device = "cpu"
                ) -> tuple[Path, dict[str, Any]] | None:
    """The newest readable of `path`, `previous(path, 1)`, ... as (file, dict); None when none exists.

    Each unreadable or missing-but-superseded file costs one `warn` line naming it; CheckpointError (one line)
    when files exist and none of them can be read.
    """
    p = Path(path)
    candidates = _kept(p)
    errors: list[str] = []
    for i, candidate in enumerate(candidates):
        try:
            state = load(candidate, map_location)
        except CheckpointError as e:
            errors.append(str(e))
            if i + 1 < len(candidates):
                warn(f"warning: {e}; trying {candidates[i + 1]}")
            continue
        if candidate != p and not errors:
            warn(f"warning: {p} is missing (a save was cut short); resuming from {candidate}")
        return candidate, state
    if errors:
        raise CheckpointError(f"no readable checkpoint among {', '.join(str(c) for c in candidates)} "
                              f"({errors[-1]}); delete them to start over")
    return None


def _kept(path: Path) -> list[Path]:
    """`path` (if present) and its numbered predecessors on disk, newest first."""
    return ([path] if path.is_file() else []) + [f for _, f in _numbered(path)]


def _numbered(path: Path) -> list[tuple[int, Path]]:
    found = [(f.name[len(path.stem) + 1:-len(path.suffix)], f)
             for f in path.parent.glob(f"{path.stem}.*{path.suffix}")]
    return sorted((int(n), f) for n, f in found if n.isdigit())


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
