"""One trainer per run folder: RUN/trainer.lock, taken by rank 0 with O_CREAT|O_EXCL and removed on exit
(also on the preempted exit and on errors; only a SIGKILL or a dead node leaves it behind).

The lock is a small JSON file naming its holder: {"pid", "host", "started" (the process's start time, so a
reused pid is not mistaken for the holder), "slurm_job", "slurm_restart", "elastic_run", "elastic_restart"}.
An existing lock is stale, and taken over with one warning line, when
- it is on this host and its process is gone (an elastic restart after a killed rank 0 lands here);
- it was written by an earlier incarnation of this torchrun group (same TORCHELASTIC_RUN_ID, not "none", lower
  TORCHELASTIC_RESTART_COUNT): torchrun stops every old worker before it starts the new ones, on every node;
- it was written by an earlier run of this SLURM job (same SLURM_JOB_ID, lower SLURM_RESTART_COUNT): SLURM
  runs one instance of a job at a time, so a requeued job may take its own lock from a node that died.
Otherwise the folder is live and the second trainer stops with RunLockError (one line, exit 2). A lock left
on another host by a dead node under a new job id cannot be checked from here; the message says to delete it.
"""
from __future__ import annotations

import json
import os
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import psutil

LOCK_NAME = "trainer.lock"


class RunLockError(RuntimeError):
    """The run folder is held by another live trainer (one-line message)."""


def holder_identity() -> dict[str, Any]:
    """Who this process is, as written into the lock."""
    env = os.environ
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": psutil.Process().create_time(),
            "slurm_job": env.get("SLURM_JOB_ID"), "slurm_restart": int(env.get("SLURM_RESTART_COUNT", "0")),
            "elastic_run": env.get("TORCHELASTIC_RUN_ID"),
            "elastic_restart": int(env.get("TORCHELASTIC_RESTART_COUNT", "0"))}


def stale_reason(holder: dict[str, Any], me: dict[str, Any]) -> str | None:
    """Why the lock of `holder` may be taken over by `me`, or None if its holder may still be running."""
    if holder.get("host") == me["host"] and not _alive(holder.get("pid"), holder.get("started")):
        return f"pid {holder.get('pid')} on {me['host']} is not running"
    if me["elastic_run"] not in (None, "none") and holder.get("elastic_run") == me["elastic_run"] \
            and int(holder.get("elastic_restart") or 0) < me["elastic_restart"]:
        return f"written before restart {me['elastic_restart']} of this torchrun group"
    if me["slurm_job"] and holder.get("slurm_job") == me["slurm_job"] \
            and int(holder.get("slurm_restart") or 0) < me["slurm_restart"]:
        return f"written by an earlier run of SLURM job {me['slurm_job']}"
    return None


def acquire(run_dir: str | Path, warn: Callable[[str], None]) -> Path:
    """Create RUN/trainer.lock for this process (taking over a stale one); RunLockError if it is live."""
    path = Path(run_dir) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    me = holder_identity()
    for _ in range(20):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read(path)
            if holder is None:  # being written right now, or left empty by a kill: wait, then call it stale
                if _age(path) < 5.0:
                    time.sleep(0.25)
                    continue
                holder, reason = {}, "the lock file is empty or unreadable"
            else:
                reason = stale_reason(holder, me)
            if reason is None:
                raise RunLockError(
                    f"run folder {run_dir} is in use by pid {holder.get('pid')} on {holder.get('host')} "
                    f"(lock {path}); wait for that trainer to end, or delete the lock if it is gone") from None
            warn(f"warning: taking over the stale lock {path} ({reason})")
            _remove_if_unchanged(path, holder)
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump(me, fh)
            fh.flush()
            os.fsync(fh.fileno())
        return path
    raise RunLockError(f"could not take the lock {path}: it keeps changing (another trainer is starting?)")


def release(path: Path) -> None:
    """Remove the lock if it is still this process's (a trainer that took it over keeps its own)."""
    holder = _read(path)
    me = holder_identity()
    if holder is not None and (holder.get("pid"), holder.get("host")) == (me["pid"], me["host"]):
        path.unlink(missing_ok=True)


@contextmanager
def hold(run_dir: str | Path, *, enabled: bool = True, warn: Callable[[str], None] = print) -> Iterator[None]:
    """Hold RUN/trainer.lock for the body (a no-op when not `enabled`: ranks other than 0)."""
    if not enabled:
        yield
        return
    path = acquire(run_dir, warn)
    try:
        yield
    finally:
        release(path)


def _alive(pid: Any, started: Any) -> bool:
    try:
        proc = psutil.Process(int(pid))
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or abs(proc.create_time() - float(started)) < 1.0
    except (psutil.NoSuchProcess, ValueError, TypeError):
        return False
    except psutil.AccessDenied:  # another user's live process
        return True


def _read(path: Path) -> dict[str, Any] | None:
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _remove_if_unchanged(path: Path, holder: dict[str, Any]) -> None:
    """Move the stale lock aside and delete it, unless a racing trainer replaced it meanwhile (then put its
    lock back)."""
    aside = path.with_name(f".{path.name}.stale{os.getpid()}")
    try:
        os.replace(path, aside)
    except FileNotFoundError:  # another trainer removed it first; the O_EXCL create decides
        return
    if (_read(aside) or {}) != holder:
        try:
            os.link(aside, path)
        except OSError:
            pass
    aside.unlink(missing_ok=True)
