"""Preemption and Ctrl-C: SIGTERM / SIGUSR1 / SIGINT stop the run at a step all ranks agree on, after a
checkpoint.

The signal handler only records the signal. At the end of every optimizer step `StopCheck` asks whether
any rank got one; then every rank skips validation, rank 0 writes RUN/checkpoints/last.pt, all ranks meet
in a barrier and raise `Preempted`, which `cmpl.train` turns into exit code `EXIT_PREEMPTED` (3) after
SIGTERM / SIGUSR1, or `EXIT_INTERRUPTED` (130, the shell's code for Ctrl-C) after SIGINT: rerun the same
command to resume. A second SIGINT does not wait for the step: it raises KeyboardInterrupt at once (the
last checkpoint written stays the one to resume from).

The cost of asking, per step:
- one process: a Python attribute read (no sync of any kind);
- DDP: one all-reduce (MAX) of a 1-element int32 CPU tensor over gloo (the default group on CPU; a gloo
  side group next to nccl on GPUs). It waits for the other ranks' hosts, never for a device, so the
  "no host-device sync in the hot loop" rule holds; on GPUs the hosts run ahead of the devices as before.
Because the check runs every step, no rank can overrun: all ranks stop after the first step whose check
follows the signal on any rank (the step in flight when it arrived, or the next one if it arrived between
that step's check and its end). A signal during validation is seen after the following step.
"""
from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any, Callable

from preprocess.entry import EXIT_INTERRUPTED  # 130: Ctrl-C (after saving last.pt; at once on a second one)

EXIT_PREEMPTED = 3  # the process was preempted after saving last.pt; rerun the same command to resume
# SLURM: SIGTERM on preemption/scancel, --signal=USR1@SECONDS; SIGINT: Ctrl-C in a terminal.
SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class Preempted(Exception):
    """Raised on every rank once the agreed stop step's checkpoint is written."""

    def __init__(self, step: int, signal_name: str) -> None:
        super().__init__(f"preempted ({signal_name}) at step {step}")
        self.step, self.signal_name = step, signal_name

    @property
    def exit_code(self) -> int:
        """130 when this process's stop request was Ctrl-C (SIGINT), else 3."""
        return EXIT_INTERRUPTED if self.signal_name == "SIGINT" else EXIT_PREEMPTED


_received: list[int] = []  # signal numbers seen by this process, in order


def install() -> None:
    """Make SIGTERM, SIGUSR1 and a first SIGINT only record themselves (main thread only; idempotent)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in SIGNALS:
        signal.signal(sig, _record)


def requested() -> str | None:
    """The name of the first stop signal this process got, or None."""
    return signal.Signals(_received[0]).name if _received else None


def _record(signum: int, frame: FrameType | None) -> None:
    if signum == signal.SIGINT and signal.SIGINT in _received:
        # The second Ctrl-C: the user does not want to wait for the step; a third one is Python's default.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        raise KeyboardInterrupt
    _received.append(signum)


class StopCheck:
    """`check()` -> True on every rank once any rank got a stop signal (a collective under DDP: call it at
    the same step on every rank)."""

    def __init__(self, dist: Any) -> None:
        from cmpl import distributed as dist_mod

        self.dist, self._dist_mod = dist, dist_mod
        self.group = dist_mod.host_group(dist)

    def check(self) -> bool:
        return self._dist_mod.any_rank_on_host(requested() is not None, self.dist, self.group)

    def stopped(self, step: int, saved: Path, echo: Callable[[str], None]) -> Preempted:
        """After rank 0 saved `saved`: wait for every rank (the file is on disk before any rank exits), say so,
        and return the exception to raise."""
        self._dist_mod.barrier(self.dist)
        signal_name = requested() or "a signal to another rank"
        what = "interrupted" if signal_name == "SIGINT" else "preempted"
        echo(f"cmpl.train: {what} ({signal_name}) at step {step}, saved {saved}; rerun the same command to "
             "resume")
        return Preempted(step, signal_name)


__all__ = ["EXIT_INTERRUPTED", "EXIT_PREEMPTED", "Preempted", "SIGNALS", "StopCheck", "install", "requested"]
