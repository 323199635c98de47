"""A run that fails before its first step leaves no run folder behind, and nothing else is ever deleted.

`cmpl.train` with a typo'd split or a broken dataset used to leave an empty RUN/ (created for the lock), which
the next command then treated as a run. `NewFolder.note(run_dir)` records, before anything is written, which
folder this invocation is about to create (the highest missing ancestor of RUN); `remove_unstarted()` deletes
that folder only when all of these hold:
- this invocation created it (a resumed run's folder existed before, so it is never a candidate);
- it holds nothing but what a trainer writes before its first step (config.toml, metrics.jsonl, TensorBoard
  events, an empty checkpoints/), all written since this invocation started: no checkpoint, no lock of another
  trainer, no file of anyone else.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

# What a trainer may have written into RUN before its first step; anything else keeps the folder.
UNSTARTED_FILES = ("config.toml", "metrics.jsonl")
UNSTARTED_PREFIXES = ("events.out.tfevents.",)
_CLOCK_SLACK_S = 2.0  # coarse file-system timestamps


@dataclass(frozen=True)
class NewFolder:
    """The folder this invocation creates for `run_dir` (None: RUN already exists), and when it started."""

    root: Path | None
    run_dir: Path
    since: float

    @classmethod
    def note(cls, run_dir: str | Path) -> NewFolder:
        run = Path(run_dir).absolute()
        root, p = None, run
        while not p.exists() and p != p.parent:
            root, p = p, p.parent
        return cls(root, run, time.time())

    def remove_unstarted(self) -> bool:
        """Delete `root` when it holds only what this invocation wrote before a first step; True if deleted."""
        if self.root is None or not self.root.is_dir() or not self._only_unstarted_files():
            return False
        shutil.rmtree(self.root, ignore_errors=True)
        return True

    def _only_unstarted_files(self) -> bool:
        assert self.root is not None
        dirs = {self.run_dir / "checkpoints"} | {p for p in (self.run_dir, *self.run_dir.parents)
                                                  if p == self.root or self.root in p.parents}
        for p in self.root.rglob("*"):
            if p.is_symlink():
                return False
            if p.is_dir():
                if p not in dirs:
                    return False
                continue
            ours = p.parent == self.run_dir and (p.name in UNSTARTED_FILES or p.name.startswith(UNSTARTED_PREFIXES))
            if not ours or p.stat().st_mtime < self.since - _CLOCK_SLACK_S:
                return False
        return True


__all__ = ["NewFolder", "UNSTARTED_FILES"]
