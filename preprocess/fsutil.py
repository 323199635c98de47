"""Small file-system helpers: atomic writes and file locks on the output folder."""
from __future__ import annotations

import csv
import errno
import fcntl
import io
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from preprocess import PreprocessError


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` so that readers see either the old file or the complete new one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_csv(path: Path, header: list[str], rows: Iterable[Iterable[object]]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())


@contextmanager
def file_lock(path: Path, *, shared: bool = False, busy: str) -> Iterator[None]:
    """Hold a flock on `path` (created if absent) or raise PreprocessError(`busy`) if another process has it.

    The lock ends when the file closes, also on kill -9. "a+" opens for reading and writing: NFS emulates
    flock with byte-range locks, which need a readable file for a shared lock and a writable one otherwise.
    """
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PreprocessError(busy) from None
        except OSError as e:
            if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise PreprocessError(f"the file system of {path.parent} does not support file locks "
                                      f"({e.strerror}; on Lustre mount with -o flock)") from None
            raise
        yield


@contextmanager
def folder_lock(folder: Path, *, shared: bool = False) -> Iterator[None]:
    """Lock `folder` for one writer (two runs writing one folder would delete each other's temps), or, with
    `shared`, for any number of shard runs, which write disjoint videos; the two kinds exclude each other."""
    folder.mkdir(parents=True, exist_ok=True)
    busy = (f"an unsharded preprocess run (or a join) is writing {folder}" if shared else
            f"another preprocess run is writing {folder} (a --shard run may still be going)")
    with file_lock(folder / ".lock", shared=shared, busy=busy):
        yield
