"""examples/slurm: both sbatch files parse; the job array script runs shards + join with the real CLI; the
training script's USR1/TERM handling, run against stand-ins for srun/scancel/scontrol (no SLURM here).

The stand-ins only do what SLURM documents: `scancel --signal=TERM JOB` signals the job's step tasks,
`scontrol requeue JOB` requeues it, `srun CMD` runs CMD. What is tested is the script's own logic.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from preprocess.testing import TEST_SHORT_SIDE, make_k400_layout, read_csv

REPO = Path(__file__).resolve().parents[1]
SLURM = REPO / "examples" / "slurm"
BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None, reason="bash is not installed")


@pytest.mark.parametrize("script", ["train.sbatch", "preprocess_array.sbatch"])
def test_sbatch_file_parses(script):
    done = subprocess.run([BASH, "-n", str(SLURM / script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    text = (SLURM / script).read_text()
    assert "#SBATCH --requeue" in text
    if script == "train.sbatch":
        assert "#SBATCH --signal=B:USR1@90" in text


def run_array_task(env: dict[str, str], **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([BASH, str(SLURM / "preprocess_array.sbatch")], env={**env, **extra}, cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_preprocess_array_tasks_and_join_run_the_real_cli(tmp_path):
    src, ann = make_k400_layout(tmp_path / "k400")
    out = tmp_path / "out"
    env = {"PATH": os.environ["PATH"], "PYTHON": sys.executable, "SRC": str(src), "ANN": str(ann),
           "OUT": str(out), "EXTRA_ARGS": f"--short-side {TEST_SHORT_SIDE}", "SLURM_CPUS_PER_TASK": "1",
           "SLURM_ARRAY_TASK_COUNT": "2"}
    for task in ("0", "1"):
        done = run_array_task(env, SLURM_ARRAY_TASK_ID=task)
        assert done.returncode in (0, 1), done.stderr  # 1: this shard has broken videos
        assert f"--shard {task}/2" in done.stdout and f"shard {task}/2:" in done.stderr
    assert not (out / "train.csv").exists()
    done = run_array_task(env, JOIN="1")
    assert done.returncode == 1, done.stderr  # the layout holds broken videos: listed in failures.csv
    assert "converted 0, skipped 5, failed 3" in done.stdout
    assert len(read_csv(out / "train.csv")) == 3 and len(read_csv(out / "val.csv")) == 2
    assert len(read_csv(out / "failures.csv")) == 3

    # SHARDS overrides the count of a partial resubmission; the CLI's own check refuses a wrong one.
    done = run_array_task(env, SLURM_ARRAY_TASK_ID="1", SHARDS="1")
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith("error: --shard 1/1")
    done = run_array_task({k: v for k, v in env.items() if k != "ANN"}, SLURM_ARRAY_TASK_ID="0")
    assert done.returncode != 0 and "ANN" in done.stderr


FAKE_TRAINER = """
import os, signal, sys, time
log, pid_file = sys.argv[1], sys.argv[2]
def on_term(signum, frame):
    with open(log, "a") as f:
        f.write("trainer: SIGTERM, wrote last.pt\\n")
    sys.exit(3)
signal.signal(signal.SIGTERM, on_term)
with open(pid_file + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.replace(pid_file + ".tmp", pid_file)
while True:
    time.sleep(0.05)
"""


@pytest.fixture
def fake_slurm(tmp_path) -> dict[str, Path]:
    """Stand-ins for srun / scancel / scontrol on PATH; they log what they are asked to do."""
    bin_dir, log, pid_file, argv = tmp_path / "bin", tmp_path / "log", tmp_path / "trainer.pid", tmp_path / "argv"
    bin_dir.mkdir()
    (tmp_path / "trainer.py").write_text(FAKE_TRAINER)
    stubs = {
        "srun": f'printf "%s\\0" "$@" > "{argv}"\nexec "{sys.executable}" "{tmp_path / "trainer.py"}" '
                f'"{log}" "{pid_file}"',
        "scancel": f'echo "scancel $*" >> "{log}"\n[[ "$1" == --signal=TERM ]] && kill -TERM "$(cat "{pid_file}")"',
        "scontrol": f'if [[ "$1" == show ]]; then echo node-a; echo node-b; else echo "scontrol $*" >> "{log}"; fi',
    }
    for name, body in stubs.items():
        (bin_dir / name).write_text(f"#!/bin/bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    return {"bin": bin_dir, "log": log, "pid": pid_file, "argv": argv, "root": tmp_path}


def start_train_job(fake: dict[str, Path]) -> subprocess.Popen:
    env = {"PATH": f"{fake['bin']}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242",
           "SLURM_JOB_NODELIST": "node-[a-b]", "SLURM_JOB_NUM_NODES": "2", "GPUS_PER_NODE": "8",
           "PYTHON": sys.executable, "EXTRA": "--runtime.compile=true --schedule.max_steps=100"}
    proc = subprocess.Popen([BASH, str(SLURM / "train.sbatch")], env=env, cwd=fake["root"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 30
    while not fake["pid"].exists():  # the traps are set before srun starts
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.05)
    return proc


def test_train_sbatch_usr1_checkpoints_then_requeues(fake_slurm):
    proc = start_train_job(fake_slurm)
    proc.send_signal(signal.SIGUSR1)
    output = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, output
    assert fake_slurm["log"].read_text().splitlines() == [
        "scancel --signal=TERM 4242", "trainer: SIGTERM, wrote last.pt", "scontrol requeue 4242"]
    assert "training step ended with status 3" in output


def test_train_sbatch_term_waits_for_the_checkpoint_and_does_not_requeue(fake_slurm):
    proc = start_train_job(fake_slurm)
    proc.send_signal(signal.SIGTERM)  # a preemption: SLURM signals the shell and the training processes
    time.sleep(0.2)
    assert proc.poll() is None  # the shell keeps waiting for the step
    os.kill(int(fake_slurm["pid"].read_text()), signal.SIGTERM)
    output = proc.communicate(timeout=30)[0]
    assert proc.returncode == 3, output  # the trainer's "preempted; rerun to resume"
    assert fake_slurm["log"].read_text().splitlines() == ["trainer: SIGTERM, wrote last.pt"]


def test_train_sbatch_command_parses_with_torchrun_and_cmpl_config(fake_slurm):
    proc = start_train_job(fake_slurm)
    proc.send_signal(signal.SIGUSR1)
    proc.communicate(timeout=30)
    argv = fake_slurm["argv"].read_text().split("\0")[:-1]
    assert argv[:2] == ["--kill-on-bad-exit=1", sys.executable]  # srun's own option, then the command
    assert argv[2:4] == ["-m", "torch.distributed.run"]
    from torch.distributed.run import get_args_parser

    torchrun = get_args_parser().parse_args(argv[4:])
    assert (torchrun.nnodes, torchrun.nproc_per_node, torchrun.rdzv_backend) == ("2", "8", "c10d")
    assert (torchrun.rdzv_endpoint, torchrun.rdzv_id) == ("node-a:29500", "4242")
    assert torchrun.module and torchrun.training_script == "cmpl.train"
    train_args = torchrun.training_script_args
    assert train_args[:6] == ["--preset", "k400_1pct_r50", "--data.root", "data/k400", "--run.dir",
                              "runs/k400_1pct_r50"]
    # The same arguments resolve to a config with the real CLI (cmpl.config prints the TOML).
    done = subprocess.run([sys.executable, "-m", "cmpl.config", *train_args], cwd=REPO, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert 'dir = "runs/k400_1pct_r50"' in done.stdout and "max_steps = 100" in done.stdout
