"""Cluster life: stop signals, kept checkpoints, the run-folder lock and elastic restarts (CPU, gloo).

Trainers run as subprocesses on the tiny dataset; every signal and kill is sent by the test, and every wait
is bounded. The supervised method (no unlabeled DALI pipeline) keeps each start near 10 s, and independent
runs are started in parallel.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
from conftest import write_synthetic
from test_train import REPO, _assert_same_tensors, _env, _finish, _load, _start, _train_cmd

from cmpl import checkpoint as ckpt_io
from cmpl import preemption, run_lock
from cmpl.distributed import DistInfo

EXIT_PREEMPTED = 3
SUPERVISED = ("--method.name=supervised", "--runtime.seed=5", "--run.log_every=1")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("data") / "synthetic", per_class=4)


def _wait_for(what: str, ready: Callable[[], bool], procs: list[subprocess.Popen], timeout: float = 120) -> None:
    """Poll `ready` every 50 ms; fail (and kill `procs`) if a process ended first or `timeout` passed."""
    end = time.monotonic() + timeout
    while not ready():
        ended = [p for p in procs if p.poll() is not None]
        if ended or time.monotonic() > end:
            logs = [p.communicate()[0][-2000:] for p in ended]
            _kill_all(procs)
            pytest.fail(f"{what}: {'a process ended first' if ended else 'timed out'}\n" + "\n".join(logs))
        time.sleep(0.05)


def _kill_all(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.communicate()


def _exit_within(p: subprocess.Popen, seconds: float) -> tuple[int, str, float]:
    """(returncode, output, seconds it took to exit)."""
    t0 = time.monotonic()
    try:
        out, _ = p.communicate(timeout=seconds)
    except subprocess.TimeoutExpired:
        _kill_all([p])
        pytest.fail(f"pid {p.pid} did not exit within {seconds} s")
    return p.returncode, out, time.monotonic() - t0


def _train_records(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    return [r for r in map(json.loads, filter(None, lines)) if r["kind"] == "train"]


def _lock_pid(run: Path) -> int | None:
    try:
        return int(json.loads((run / run_lock.LOCK_NAME).read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _same_models(a: Path, b: Path) -> None:
    sa, sb = _load(a), _load(b)
    assert sa["step"] == sb["step"]
    _assert_same_tensors(sa["models"]["primary"], sb["models"]["primary"])


# ---- in-process units -------------------------------------------------------------------------------------
def test_save_rotating_keeps_k_and_load_newest_falls_back(tmp_path):
    last, warnings = tmp_path / "last.pt", []
    for step in range(1, 5):
        ckpt_io.save_rotating({"step": step}, last, keep=3)
    assert sorted(f.name for f in tmp_path.iterdir()) == ["last.1.pt", "last.2.pt", "last.pt"]
    assert [_load(tmp_path / n)["step"] for n in ("last.pt", "last.1.pt", "last.2.pt")] == [4, 3, 2]
    ckpt_io.save_rotating({"step": 5}, last, keep=2)  # a lower keep drops the extra file
    assert sorted(f.name for f in tmp_path.iterdir()) == ["last.1.pt", "last.pt"]

    last.write_bytes(last.read_bytes()[:100])  # torn
    path, state = ckpt_io.load_newest(last, warn=warnings.append)
    assert path.name == "last.1.pt" and state["step"] == 4
    assert len(warnings) == 1 and str(last) in warnings[0] and "last.1.pt" in warnings[0]
    last.unlink()  # cut between the shift and the final rename
    warnings.clear()
    assert ckpt_io.load_newest(last, warn=warnings.append)[1]["step"] == 4 and "missing" in warnings[0]
    (tmp_path / "last.1.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ckpt_io.CheckpointError, match="no readable checkpoint"):
        ckpt_io.load_newest(last, warn=warnings.append)
    assert ckpt_io.load_newest(tmp_path / "none.pt", warn=warnings.append) is None


def test_stop_signal_only_sets_a_flag(monkeypatch):
    monkeypatch.setattr(preemption, "_received", [])
    before = {s: signal.getsignal(s) for s in preemption.SIGNALS}
    try:
        preemption.install()
        check = preemption.StopCheck(DistInfo())
        assert not check.check() and preemption.requested() is None
        os.kill(os.getpid(), signal.SIGUSR1)  # the default action would end this process
        time.sleep(0.01)
        assert check.check() and preemption.requested() == "SIGUSR1"
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def test_lock_refuses_live_holder_and_takes_over_dead_ones(tmp_path, monkeypatch):
    for var in ("SLURM_JOB_ID", "SLURM_RESTART_COUNT", "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT"):
        monkeypatch.delenv(var, raising=False)
    lock, warnings = tmp_path / run_lock.LOCK_NAME, []
    me = run_lock.holder_identity()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import psutil

        live = {**me, "pid": sleeper.pid, "started": psutil.Process(sleeper.pid).create_time()}
        lock.write_text(json.dumps(live))
        with pytest.raises(run_lock.RunLockError, match=f"in use by pid {sleeper.pid}"):
            run_lock.acquire(tmp_path, warnings.append)
        assert json.loads(lock.read_text()) == live and not warnings  # untouched
        # The same pid with another start time is a reused pid, not the holder.
        lock.write_text(json.dumps({**live, "started": live["started"] - 100}))
        run_lock.release(run_lock.acquire(tmp_path, warnings.append))
        assert len(warnings) == 1 and not lock.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    lock.write_text(json.dumps({**me, "pid": sleeper.pid}))  # now dead
    path = run_lock.acquire(tmp_path, warnings.append)
    assert f"pid {sleeper.pid}" in warnings[-1] and json.loads(lock.read_text())["pid"] == os.getpid()
    run_lock.release(path)

    # Another host: only an earlier incarnation of this torchrun group / SLURM job may take it over.
    other = {**me, "host": "elsewhere", "pid": 1, "elastic_run": "job7", "elastic_restart": 0, "slurm_job": "42"}
    lock.write_text(json.dumps(other))
    with pytest.raises(run_lock.RunLockError, match="elsewhere"):
        run_lock.acquire(tmp_path, warnings.append)
    for env in ({"TORCHELASTIC_RUN_ID": "job7", "TORCHELASTIC_RESTART_COUNT": "1"},
                {"SLURM_JOB_ID": "42", "SLURM_RESTART_COUNT": "1"}):
        lock.write_text(json.dumps(other))
        with monkeypatch.context() as m:
            for k, v in env.items():
                m.setenv(k, v)
            run_lock.release(run_lock.acquire(tmp_path, warnings.append))
        assert not lock.exists()
    # release never removes a lock that another trainer holds
    lock.write_text(json.dumps(other))
    run_lock.release(lock)
    assert lock.exists()


def test_keep_last_below_one_is_a_config_error(dataset, tmp_path):
    from cmpl import config, presets
    from cmpl.trainer import Trainer

    cfg = config.apply_overrides(presets.get("tiny"), [("data.root", str(dataset)), ("run.keep_last", "0"),
                                                       ("run.dir", str(tmp_path / "run"))])
    with pytest.raises(config.ConfigError, match="run.keep_last"):
        Trainer(cfg, echo=lambda s: None)


# ---- trainers in subprocesses ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def preempted_run(dataset, tmp_path_factory):
    """A straight 4-step run and the same command SIGTERMed before its first step (as soon as it holds the lock),
    then rerun. Returns (folder of the straight run, folder of the preempted one, {what: output or value})."""
    root = tmp_path_factory.mktemp("preempt")
    straight, run = root / "straight", root / "preempted"
    steps = ("--schedule.max_steps=4", "--run.checkpoint_every=1000")  # saves: the preempted one and the final
    cmd = _train_cmd(dataset, run, *SUPERVISED, *steps)
    p_straight = _start(_train_cmd(dataset, straight, *SUPERVISED, *steps))
    p = _start(cmd)
    _wait_for("lock of the run", lambda: _lock_pid(run) == p.pid, [p, p_straight])
    p.send_signal(signal.SIGTERM)
    code, out, took = _exit_within(p, 60)
    info = {"code": code, "out": out, "took": took, "step": _load(run / "checkpoints/last.pt")["step"],
            "lock_left": (run / run_lock.LOCK_NAME).exists(), "cmd": cmd}
    info["rerun"] = _finish(_start(cmd))
    _finish(p_straight)
    return straight, run, info


def test_sigterm_saves_exits_3_and_the_same_command_resumes(preempted_run):
    straight, run, info = preempted_run
    assert info["code"] == EXIT_PREEMPTED, info["out"][-3000:]
    assert info["took"] < 60
    # The signal came during start-up: the handler only noted it, and the run stopped after step 1.
    assert info["step"] == 1 and "preempted (SIGTERM) at step 1" in info["out"]
    assert "Traceback" not in info["out"] and not info["lock_left"]
    assert "resumed from" in info["rerun"] and "at step 1" in info["rerun"]
    _same_models(run / "checkpoints/last.pt", straight / "checkpoints/last.pt")
    assert [r["step"] for r in _train_records(run)] == [1, 2, 3, 4]


def test_ctrl_c_saves_and_exits_130_and_a_second_ctrl_c_stops_at_once(dataset, tmp_path):
    """Ctrl-C is a stop request like SIGTERM (one line, last.pt, exit 130); a second one does not wait."""
    once, twice = tmp_path / "once", tmp_path / "twice"
    steps = ("--schedule.max_steps=4", "--run.checkpoint_every=1000")
    p_once, p_twice = _start(_train_cmd(dataset, once, *SUPERVISED, *steps)), _start(_train_cmd(dataset, twice,
                                                                                              *SUPERVISED, *steps))
    _wait_for("locks of both runs", lambda: _lock_pid(once) == p_once.pid and _lock_pid(twice) == p_twice.pid,
              [p_once, p_twice])
    p_once.send_signal(signal.SIGINT)
    p_twice.send_signal(signal.SIGINT)
    time.sleep(0.2)
    p_twice.send_signal(signal.SIGINT)
    code, out, _ = _exit_within(p_once, 60)
    assert code == preemption.EXIT_INTERRUPTED == 130, out[-3000:]
    assert "interrupted (SIGINT) at step 1" in out and "rerun the same command to resume" in out
    assert "Traceback" not in out and "KeyboardInterrupt" not in out and not (once / run_lock.LOCK_NAME).exists()
    assert _load(once / "checkpoints/last.pt")["step"] == 1

    code, out, took = _exit_within(p_twice, 60)
    assert code == 130 and "interrupted at once (second Ctrl-C)" in out, out[-3000:]
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out[-3000:]
    assert not twice.exists()  # stopped before its first step, in a folder it created: nothing left


def test_unreadable_last_resumes_from_the_previous_then_exit_2(preempted_run, tmp_path):
    straight, run, info = preempted_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    ckpts = copy / "checkpoints"
    assert _load(ckpts / "last.1.pt")["step"] == 1  # run.keep_last = 2: the preempted save is kept
    (ckpts / "last.pt").write_bytes((ckpts / "last.pt").read_bytes()[:4096])  # torn
    cmd = [str(copy) if a == str(run) else a for a in info["cmd"]]
    out = _finish(_start(cmd))
    warnings = [ln for ln in out.splitlines() if "warning" in ln]
    assert len(warnings) == 1 and str(ckpts / "last.pt") in warnings[0], out[-3000:]
    assert f"resumed from {ckpts / 'last.1.pt'} at step 1" in out
    _same_models(ckpts / "last.pt", straight / "checkpoints/last.pt")

    for f in ("last.pt", "last.1.pt"):
        (ckpts / f).write_bytes(b"\0" * 64)
    r = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "no readable checkpoint" in errors[0] and str(ckpts / "last.pt") in errors[0]


def test_one_rank_signalled_all_stop_at_one_step_and_second_trainer_refused(dataset, tmp_path):
    run = tmp_path / "ddp"
    cmd = _train_cmd(dataset, run, *SUPERVISED, "--schedule.epochs=1000", "--run.checkpoint_every=1000")
    port = str(_free_port())
    ranks = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**_env(), "RANK": str(r), "LOCAL_RANK": str(r), "WORLD_SIZE": "2",
                                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port})
             for r in range(2)]
    _wait_for("first train record", lambda: len(_train_records(run)) >= 1, ranks, timeout=150)
    assert _lock_pid(run) == ranks[0].pid

    second = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    errors = [ln for ln in second.stderr.splitlines() if ln.startswith("error:")]
    assert second.returncode == 2 and len(errors) == 1 and "Traceback" not in second.stderr, second.stderr
    assert f"in use by pid {ranks[0].pid}" in errors[0] and str(run / run_lock.LOCK_NAME) in errors[0]
    assert all(p.poll() is None for p in ranks)  # the live run went on

    ranks[1].send_signal(signal.SIGUSR1)  # only rank 1: rank 0 learns it from the per-step agreement
    signalled = time.monotonic()
    results = [_exit_within(p, 60) for p in ranks]
    assert time.monotonic() - signalled < 60
    assert [code for code, _, _ in results] == [EXIT_PREEMPTED] * 2, [out[-2000:] for _, out, _ in results]
    step = _load(run / "checkpoints/last.pt")["step"]
    assert f"preempted (a signal to another rank) at step {step}" in results[0][1]  # rank 0 prints
    assert _train_records(run)[-1]["step"] == step and not (run / run_lock.LOCK_NAME).exists()


ELASTIC_STEPS = 20  # the tiny preset's whole schedule


def _torchrun(dataset: Path, run: Path, *extra: str) -> subprocess.Popen:
    return _start([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", *extra,
                   "-m", "cmpl.train", *_train_cmd(dataset, run, *SUPERVISED, "--run.checkpoint_every=1")[3:]])


def test_elastic_restart_after_sigkill_resumes_to_the_straight_weights(dataset, tmp_path):
    straight, run = tmp_path / "straight", tmp_path / "elastic"
    p_straight = _torchrun(dataset, straight)
    p = _torchrun(dataset, run, "--max-restarts=1")
    _wait_for("a checkpoint of the elastic run", lambda: (run / "checkpoints/last.pt").exists(), [p, p_straight],
              timeout=150)
    rank0 = _lock_pid(run)
    assert rank0 is not None and _train_records(run)[-1]["step"] < ELASTIC_STEPS
    os.kill(rank0, signal.SIGKILL)
    out = _finish(p, timeout=240)
    _finish(p_straight, timeout=240)
    assert "taking over the stale lock" in out and f"pid {rank0}" in out  # the restarted rank 0, same host
    assert "resumed from" in out
    _same_models(run / "checkpoints/last.pt", straight / "checkpoints/last.pt")
    assert _load(run / "checkpoints/last.pt")["step"] == ELASTIC_STEPS and not (run / run_lock.LOCK_NAME).exists()
