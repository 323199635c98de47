"""Run the check's steps: each one time-boxed, its subprocesses in their own process group, one line each."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

REPO = Path(__file__).resolve().parents[2]


class CheckError(RuntimeError):
    """A step's own verdict of failure; the message is its result line."""


@dataclass
class Result:
    """One step's outcome: status ok | FAIL | timeout | skip, a one-line summary, numbers."""

    status: str
    summary: str
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def last_line(text: str) -> str:
    """The last non-empty line of a log tail, shortened: what a failing command said last."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else "(no output)")[:240]


@dataclass
class Context:
    """What every step gets: folders, mode, the shared log, the results so far, the global deadline."""

    work: Path
    out: Path
    dry_run: bool
    python: str
    log_path: Path
    deadline: float
    synthetic: Path | None
    results: dict[str, Result] = field(default_factory=dict)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHON"] = self.python  # for bench/gpu_wheels.sh
        env.setdefault("TQDM_DISABLE", "1")
        env.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")  # DALI's alias warnings flood the log
        if self.dry_run:
            env["CUDA_VISIBLE_DEVICES"] = ""  # the dry run must behave as on the CPU-only CI machine
        return env

    def run(self, args: Sequence[str], timeout: float, label: str) -> tuple[int | None, str]:
        """Run `args` (no shell) in its own process group, output appended to the log.

        Returns (exit code or None on timeout, last 1500 characters of its output). On timeout the whole
        group is killed: torch.compile's worker pool and DALI threads must not outlive the step.
        """
        with self.log_path.open("a") as log:
            log.write(f"\n===== {label}: {' '.join(args)}\n")
            log.flush()
            start = log.tell()
            proc = subprocess.Popen(list(args), cwd=REPO, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                rc: int | None = proc.wait(timeout=max(1.0, timeout))
            except subprocess.TimeoutExpired:
                rc = None
            finally:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        with self.log_path.open() as log:
            log.seek(start)
            tail = log.read()[-1500:]
        return rc, tail

    def worker(self, name: str, timeout: float, *extra: str) -> dict[str, Any]:
        """Run worker `name` (bench/gpu_check/workers.py) in a child process; return its JSON or raise CheckError."""
        out = self.work / f"{name}.json"
        out.unlink(missing_ok=True)
        args = [self.python, "-m", "bench.gpu_check", "--worker", name, "--work", str(self.work),
                "--json", str(out), *extra] + (["--dry-run"] if self.dry_run else [])
        return self.json_of(args, out, timeout, f"worker {name}")

    def json_of(self, args: Sequence[str], out: Path, timeout: float, label: str) -> dict[str, Any]:
        """Run `args`, which write the JSON file `out`; its content, or TimeoutError / CheckError."""
        rc, tail = self.run(args, timeout, label)
        if rc is None:
            raise TimeoutError(f"{label} exceeded {timeout:.0f} s")
        if rc != 0 or not out.is_file():
            raise CheckError(f"{label} exited {rc}: {last_line(tail)}")
        return json.loads(out.read_text())


class Step(NamedTuple):
    """One row of the step table; the dry run's boxes are loose (CI's 2 shared cores may be slow)."""

    number: int
    key: str
    title: str
    run: Callable[[Context, float], Result]
    box_gpu_s: float
    box_dry_s: float


class Done(NamedTuple):
    number: int
    title: str
    result: Result


def run_steps(ctx: Context, steps: Sequence[Step], selected: set[int], budget_s: float) -> list[Done]:
    """Run the selected steps in order, each within min(its box, what is left); one broken step never
    stops the others. Prints one line per step as it ends."""
    done = []
    for step in steps:
        if step.number not in selected:
            continue
        timeout = min(step.box_dry_s if ctx.dry_run else step.box_gpu_s, ctx.remaining())
        t0 = time.monotonic()
        if timeout < 5:
            res = Result("skip", f"no time left in the {budget_s:.0f} s budget")
        else:
            try:
                res = step.run(ctx, timeout)
            except TimeoutError as e:
                res = Result("timeout", str(e))
            except CheckError as e:
                res = Result("FAIL", str(e))
            except Exception as e:  # noqa: BLE001 - one broken step must not stop the others
                res = Result("FAIL", f"{type(e).__name__}: {e}"[:300])
        res.seconds = time.monotonic() - t0
        ctx.results[step.key] = res
        done.append(Done(step.number, step.title, res))
        print(f"[step {step.number}] {step.title}: {res.status} ({res.seconds:.1f} s) {res.summary}", flush=True)
    return done
