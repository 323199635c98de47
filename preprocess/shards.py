"""Split one dataset build over N runs that may go at once (a cluster job array), then join their results.

    python -m preprocess.kinetics400 SRC --annotations ANN --out OUT --shard K/N   # K = 0..N-1, one per task
    python -m preprocess.kinetics400 SRC --annotations ANN --out OUT --merge       # once all N have finished
    python -m preprocess.kinetics400 SRC --annotations ANN --out OUT               # or: join + finish the rest

(the same for `preprocess.ucf101`). K counts from 0, as SLURM_ARRAY_TASK_ID does for `--array=0-(N-1)`.

Partition: video -> shard int(sha256(output path)[:8]) mod N, where the output path is the manifest path
(`videos/...`). It depends on nothing but the video's own name, so it is the same on every machine and
for any order of the source listing, and shards are disjoint: no video is encoded twice.

Files (all under OUT): every shard run holds a shared lock on `OUT/.lock` (an unsharded run holds it
exclusively, so the two kinds never overlap) and an exclusive one on `OUT/.shards/K-of-N.lock` (so one
shard cannot run twice, e.g. a requeued task next to its old self). It records its finished and failed
videos in `OUT/.shards/K-of-N.state.jsonl` and reads `OUT/.state.jsonl` only to skip videos an earlier
unsharded run finished. A shard writes no manifest. Shards of another N on the same OUT are refused until
those are joined: their videos would overlap.

Join: `--merge` (or a plain rerun) takes the exclusive lock, reads every shard's records, writes
train.csv, val.csv, splits/, failures.csv, classes.txt, meta.json exactly as one unsharded run would,
folds the records into `OUT/.state.jsonl` and deletes `OUT/.shards/`. Shards' failures are taken as they
are (not retried; a later plain rerun retries them, as always). `--merge` encodes nothing and stops with
exit 2, writing nothing, if a video is in no shard's records; a plain rerun encodes those itself.
"""
from __future__ import annotations

import hashlib
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from preprocess import PreprocessError
from preprocess.fsutil import file_lock, folder_lock

SHARD_DIR = ".shards"
_FILE = re.compile(r"^(\d+)-of-(\d+)\.(lock|state\.jsonl)$")


def shard_of(key: str, count: int) -> int:
    """The shard (0..count-1) of the video whose output path is `key`."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % count


@dataclass(frozen=True)
class Shard:
    """Shard `index` of `count` (0 <= index < count)."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """'3/8' -> Shard(3, 8); PreprocessError naming the option otherwise."""
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not m:
            raise PreprocessError(f"--shard {text!r}: expected K/N with whole numbers, e.g. 0/4")
        index, count = int(m[1]), int(m[2])
        if count < 1:
            raise PreprocessError(f"--shard {text}: N must be at least 1")
        if index >= count:
            raise PreprocessError(f"--shard {text}: K must be in 0..{count - 1} (shards count from 0, "
                                  f"like SLURM_ARRAY_TASK_ID with --array=0-{count - 1})")
        return cls(index, count)

    def owns(self, rel: str) -> bool:
        return shard_of(rel, self.count) == self.index

    @property
    def stem(self) -> str:
        return f"{self.index}-of-{self.count}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def state_path(out: Path, shard: Shard) -> Path:
    return out / SHARD_DIR / f"{shard.stem}.state.jsonl"


def _files(out: Path) -> list[tuple[Path, Shard, str]]:
    folder = out / SHARD_DIR
    if not folder.is_dir():
        return []
    found = []
    for p in sorted(folder.iterdir()):
        m = _FILE.match(p.name)
        if m:
            found.append((p, Shard(int(m[1]), int(m[2])), m[3]))
    return found


def state_files(out: Path) -> list[Path]:
    """The record files of every shard that ran on OUT and has not been joined yet."""
    return [p for p, _, kind in _files(out) if kind == "state.jsonl"]


def counts(out: Path) -> set[int]:
    """The N of every shard that ran (or runs) on OUT and has not been joined yet."""
    return {s.count for _, s, _ in _files(out)}


def missing_shards(out: Path, rels: list[str]) -> list[str]:
    """'K/N' of the shards that own `rels`, for the shard counts found on OUT."""
    return sorted({str(Shard(shard_of(r, n), n)) for n in counts(out) for r in rels})


@contextmanager
def shard_lock(out: Path, shard: Shard) -> Iterator[None]:
    """Hold the locks of one shard run (module docstring); PreprocessError if it may not run now."""
    with folder_lock(out, shared=True):
        (out / SHARD_DIR).mkdir(exist_ok=True)
        own = out / SHARD_DIR / f"{shard.stem}.lock"
        with file_lock(own, busy=f"shard {shard} is already running on {out}"):
            # Checked after taking our own lock: of two shards with different N starting together, at
            # least the later one sees the other's lock file.
            other = sorted(counts(out) - {shard.count})
            if other:
                raise PreprocessError(
                    f"{out} holds shards of N={other[0]}: finish them and join them (--merge) before "
                    f"starting --shard {shard}")
            yield


def remove_files(out: Path) -> None:
    """Delete OUT/.shards after a join (the caller holds OUT's exclusive lock, so no shard is running)."""
    for p, _, _ in _files(out):
        p.unlink(missing_ok=True)
    try:
        (out / SHARD_DIR).rmdir()
    except OSError:
        pass  # absent, or holds a stranger's file: leave it
