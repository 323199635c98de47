"""Run the check's steps: each one time-boxed, made of rows (one child process each, in its own process
group), every row written to OUT/rows.jsonl as soon as it ends."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

REPO = Path(__file__).resolve().parents[2]
STATUS_ORDER = ("FAIL", "timeout", "ok", "skip")  # a step's status: the first of these among its rows


class CheckError(RuntimeError):
    """A row's own verdict of failure; the message is its result line."""


class Skip(RuntimeError):
    """A row that cannot run here (no GPU, no NVDEC, ...); the message says why, in one line."""


@dataclass
class Result:
    """One row's or one step's outcome: status ok | FAIL | timeout | skip, a one-line summary, numbers."""

    status: str
    summary: str
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class Row:
    step: int
    name: str
    status: str
    summary: str
    seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)


def last_line(text: str) -> str:
    """The last non-empty line of a log tail, shortened: what a failing command said last."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else "(no output)")[:240]


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


@dataclass
class Context:
    """What every step gets: folders, mode, the shared log, the probe's facts, rows so far, the deadline."""

    work: Path
    out: Path
    dry_run: bool
    python: str
    log_path: Path
    deadline: float
    facts: dict[str, Any] = field(default_factory=dict)  # step 0's probe and step 1's versions
    rows: list[Row] = field(default_factory=list)
    step: int = -1  # the step now running (rows are filed under it)
    step_deadline: float = 0.0
    background: dict[str, subprocess.Popen] = field(default_factory=dict)

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def left(self) -> float:
        """Seconds left in the current step's box."""
        return self.step_deadline - time.monotonic()

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

    # ---- rows ----------------------------------------------------------------------------------------
    def row(self, name: str, result: Result) -> Row:
        """File one finished row: appended to OUT/rows.jsonl at once (flushed, synced), printed as a line."""
        r = Row(self.step, name, result.status, result.summary, round(result.seconds, 2), result.metrics)
        self.rows.append(r)
        with (self.out / "rows.jsonl").open("a") as f:
            f.write(json.dumps(asdict(r), default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
        print(f"  [{self.step}] {name}: {r.status} ({r.seconds:.1f} s) {r.summary}", flush=True)
        return r

    def measure(self, name: str, fn: Callable[[float], Result], share: float = 1.0,
                floor: float = 5.0) -> Row:
        """Run one row: `fn(timeout)` within `share` of what is left of the step's box (at least `floor` s,
        never past the box). TimeoutError -> timeout, Skip -> skip, CheckError / any error -> FAIL."""
        t0 = time.monotonic()
        timeout = min(max(floor, self.left() * share), self.left())
        if timeout < 1:
            res = Result("skip", "no time left in this step's box")
        else:
            try:
                res = fn(timeout)
            except Skip as e:
                res = Result("skip", str(e))
            except TimeoutError as e:
                res = Result("timeout", str(e))
            except CheckError as e:
                res = Result("FAIL", str(e))
            except Exception as e:  # noqa: BLE001 - one broken row must not stop the others
                res = Result("FAIL", f"{type(e).__name__}: {e}"[:300])
        res.seconds = time.monotonic() - t0
        return self.row(name, res)

    # ---- child processes -----------------------------------------------------------------------------
    def run(self, args: Sequence[str], timeout: float, label: str, env: dict[str, str] | None = None
            ) -> tuple[int | None, str]:
        """Run `args` (no shell) in its own process group, output appended to the log.

        Returns (exit code or None on timeout, last 1500 characters of its output). On timeout the whole
        group is killed: torch.compile's worker pool and DALI threads must not outlive the row.
        """
        with self.log_path.open("a") as log:
            log.write(f"\n===== [{self.step}] {label}: {' '.join(args)}\n")
            log.flush()
            start = log.tell()
            proc = subprocess.Popen(list(args), cwd=REPO, env=env or self.env(), stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            try:
                rc: int | None = proc.wait(timeout=max(1.0, timeout))
            except subprocess.TimeoutExpired:
                rc = None
            finally:
                _kill_group(proc)
        with self.log_path.open() as log:
            log.seek(start)
            tail = log.read()[-1500:]
        return rc, tail

    def worker(self, name: str, timeout: float, *extra: str) -> dict[str, Any]:
        """Run worker `name` (workers.WORKERS) in a child process; its JSON, or TimeoutError / CheckError /
        Skip (a worker that returns {"skip": reason})."""
        out = self.work / f"{name}_{len(self.rows)}_{time.monotonic_ns()}.json"
        args = [self.python, "-m", "bench.gpu_check", "--worker", name, "--work", str(self.work),
                "--json", str(out), *extra] + (["--dry-run"] if self.dry_run else [])
        got = self.json_of(args, out, timeout, f"worker {name} {' '.join(extra)}".strip())
        if got.get("skip"):
            raise Skip(got["skip"])
        return got

    def json_of(self, args: Sequence[str], out: Path, timeout: float, label: str) -> dict[str, Any]:
        """Run `args`, which write the JSON file `out`; its content, or TimeoutError / CheckError."""
        rc, tail = self.run(args, timeout, label)
        if rc is None:
            raise TimeoutError(f"{label} exceeded {timeout:.0f} s")
        if rc != 0 or not out.is_file():
            raise CheckError(f"{label} exited {rc}: {last_line(tail)}")
        return json.loads(out.read_text())

    # ---- background jobs (the test videos, encoded while the first steps run) --------------------------
    def spawn(self, name: str, args: Sequence[str]) -> None:
        log = (self.work / f"bg_{name}.log").open("w")
        self.background[name] = subprocess.Popen(list(args), cwd=REPO, env=self.env(), stdout=log,
                                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                 start_new_session=True)
        log.close()

    def wait_for(self, name: str, timeout: float) -> None:
        """Wait for background job `name`; TimeoutError past `timeout`, CheckError if it failed."""
        proc = self.background.get(name)
        if proc is None:
            if (self.work / f"{name}.json").is_file():
                return  # made by an earlier run in the same --work folder
            raise CheckError(f"background job {name} was never started")
        try:
            rc = proc.wait(timeout=max(0.1, timeout))
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"background job {name} not done after another {timeout:.0f} s") from None
        if rc != 0:
            raise CheckError(f"background job {name} exited {rc}: "
                             f"{last_line((self.work / f'bg_{name}.log').read_text()[-1500:])}")

    def stop_background(self) -> None:
        """Kill what is still running and append every background log to the main log."""
        for name, proc in self.background.items():
            if proc.poll() is None:
                _kill_group(proc)
            with self.log_path.open("a") as log:
                path = self.work / f"bg_{name}.log"
                log.write(f"\n===== background {name} (exit {proc.returncode})\n")
                log.write(path.read_text()[-20000:] if path.is_file() else "(no log)\n")


class Step(NamedTuple):
    """One row of the step table. `box_s`: its time box, the same on the GPU and in the CPU dry run."""

    number: int
    key: str
    title: str
    run: Callable[[Context], None]
    box_s: float


class Done(NamedTuple):
    number: int
    title: str
    result: Result


def step_result(rows: Sequence[Row], seconds: float, box: float) -> Result:
    """A step's status from its rows (FAIL > timeout > ok > skip); over its box counts as timeout."""
    statuses = {r.status for r in rows}
    status = next((s for s in STATUS_ORDER if s in statuses), "skip")
    summary = f"{len(rows)} rows: " + ", ".join(f"{sum(r.status == s for r in rows)} {s}"
                                                 for s in STATUS_ORDER if s in statuses)
    if seconds > box + 3:
        status = "timeout"
        summary += f"; the step took {seconds:.0f} s, over its {box:.0f} s box"
    return Result(status, summary, seconds=seconds)


def run_steps(ctx: Context, steps: Sequence[Step], selected: set[int], budget_s: float) -> list[Done]:
    """Run the selected steps in order, each within min(its box, what is left); one broken step never
    stops the others. Rows print as they end; one summary line per step."""
    done = []
    for step in steps:
        if step.number not in selected:
            continue
        box = min(step.box_s, max(0.0, ctx.remaining()))
        ctx.step, ctx.step_deadline = step.number, time.monotonic() + box
        t0 = time.monotonic()
        first = len(ctx.rows)
        print(f"[step {step.number}] {step.title} (box {box:.0f} s)", flush=True)
        if box < 5:
            ctx.row(step.key, Result("skip", f"no time left in the {budget_s:.0f} s budget"))
        else:
            try:
                step.run(ctx)
            except Exception as e:  # noqa: BLE001 - a step's own bug is a FAIL row, the others still run
                ctx.row(step.key, Result("FAIL", f"{type(e).__name__}: {e}"[:300]))
        seconds = time.monotonic() - t0
        res = step_result(ctx.rows[first:], seconds, step.box_s)
        done.append(Done(step.number, step.title, res))
        print(f"[step {step.number}] {step.title}: {res.status} ({seconds:.1f} s) {res.summary}", flush=True)
    return done
