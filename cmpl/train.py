r"""Train CMPL (or the FixMatch / supervised baselines). Rerunning the same command resumes the run.

Single process (CPU or one GPU):
    python -m cmpl.train                                   # digits preset on data/digits (made on first use)
    python -m cmpl.train --preset tiny --data.root data/synthetic --run.dir runs/tiny
    python -m cmpl.train --preset k400_1pct_r50 --data.root data/k400 --run.dir runs/k400_1pct_r50
    python -m cmpl.train --config runs/X/config.toml --schedule.max_steps=100 --runtime.compile

One node, N GPUs (DDP, nccl; gloo on CPU):
    torchrun --nproc_per_node=N -m cmpl.train --preset ucf101_1pct_r50 --data.root data/ucf101 --run.dir runs/u1

Several nodes: torchrun's usual rendezvous flags, e.g.
    torchrun --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 -m cmpl.train ...

Presets: `python -m cmpl.config --list`; any `--section.key=value` overrides a field
(`python -m cmpl.config --preset NAME` prints them all). Run folder: RUN/config.toml,
RUN/checkpoints/{last,best,primary}.pt, RUN/metrics.jsonl, TensorBoard events (`tensorboard --logdir RUN`).
Evaluate afterwards with `python -m cmpl.evaluate --checkpoint RUN/checkpoints/last.pt` (best.pt is chosen on
the same val set it would report).

Clusters (SLURM: preemption, requeue, dead nodes; docs/CLUSTERS.md):
    SIGTERM or SIGUSR1 (`sbatch --signal=USR1@90`) -> every rank finishes its step, rank 0 saves last.pt, all
    ranks exit 3. `run.keep_last` (2) checkpoints are kept (last.pt, last.1.pt); an unreadable last.pt falls back
    to the previous one. RUN/trainer.lock keeps a second trainer off a live run folder (a dead holder's lock is
    taken over). Elastic restarts resume from last.pt. torchrun's agent dies on SIGUSR1 unless told to forward it:
    torchrun --nproc_per_node=N --max-restarts=3 --signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1 \
        --shutdown-timeout=80 -m cmpl.train --config runs/X/config.toml

Ctrl-C (SIGINT) is a stop request too: the step in flight finishes, last.pt is saved, exit 130; a second
Ctrl-C stops at once (exit 130; the previous checkpoint stays the one to resume from).

Exit codes: 0 done; 1 training failed (non-finite loss); 2 user error (config, data, checkpoint, run folder
locked by another trainer); 3 (EXIT_PREEMPTED) preempted; 130 (EXIT_INTERRUPTED) Ctrl-C; rerun the same
command to resume after 3 or 130.
"""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Sequence

from cmpl import cli
from cmpl.datasets import ensure_preset_data, require_dataset
from cmpl.preemption import EXIT_INTERRUPTED  # 130: Ctrl-C twice; rerun the same command to resume


def _run(argv: list[str]) -> None:
    # Config and data-folder errors are reported before the heavy imports (torch, DALI).
    cfg, opts = cli.resolve(argv)
    from cmpl import presets

    preset = opts.get("preset") or cli.DEFAULT_PRESET
    if not opts.get("config"):
        try:
            ensure_preset_data(preset, cfg.data.root, presets.get(preset).data.root)
        except subprocess.CalledProcessError as e:
            print(f"error: generating the dataset failed ({e})", file=sys.stderr)
            raise SystemExit(1) from None
    require_dataset(cfg.data.root)

    from pipelines.dataset import DatasetError

    from cmpl import preemption
    from cmpl.checkpoint import CheckpointError
    from cmpl.run_lock import RunLockError
    from cmpl.trainer import TrainError, train

    preemption.install()  # from here a stop signal is a request, answered after the current step
    try:
        train(cfg)
    except (DatasetError, CheckpointError, RunLockError) as e:
        cli.fail(str(e))
    except TrainError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None
    except preemption.Preempted as e:
        raise SystemExit(e.exit_code) from None
    except KeyboardInterrupt:  # a second Ctrl-C: no wait for the step, no new checkpoint
        print(f"cmpl.train: interrupted at once (second Ctrl-C), nothing saved since the last checkpoint; rerun "
              f"the same command to resume from {cfg.run.dir}/checkpoints/last.pt if it exists", file=sys.stderr)
        # Leave now: the interpreter's shutdown (joining the loader's threads) can meet the interrupt again and
        # end the process by SIGINT (-2) instead of 130 (seen once in CI on 2 cores).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)


def main(argv: Sequence[str] | None = None) -> None:
    cli.run_cli(__doc__, argv, _run)


if __name__ == "__main__":
    from preprocess.entry import run_main

    run_main(main)
