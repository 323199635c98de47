"""Train CMPL (or the FixMatch / supervised baselines). Rerunning the same command resumes the run.

Single process (CPU or one GPU):
    python -m cmpl.train                                   # demo preset on data/synthetic (made on first use)
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
Evaluate afterwards with `python -m cmpl.evaluate --checkpoint RUN/checkpoints/best.pt`.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Sequence

from cmpl import config as cfg_mod


def ensure_synthetic(root: str) -> None:
    """Generate the synthetic demo dataset at `root` if it is not there yet."""
    if Path(root).is_dir():
        return
    print(f"cmpl.train: generating the synthetic dataset in {root} (first use)", flush=True)
    subprocess.run([sys.executable, "-m", "preprocess.synthetic", "--out", root], check=True)


def _run(argv: list[str]) -> None:
    # Config and data-folder errors are reported before the heavy imports (torch, DALI).
    cfg, opts = cfg_mod.resolve(argv, default_preset="demo")
    from cmpl.presets import demo

    if (opts.get("preset") or "demo") == "demo" and not opts.get("config") \
            and cfg.data.root == demo().data.root:
        try:
            ensure_synthetic(cfg.data.root)
        except subprocess.CalledProcessError as e:
            print(f"error: generating the synthetic dataset failed ({e})", file=sys.stderr)
            raise SystemExit(1) from None
    if not Path(cfg.data.root).is_dir():
        raise cfg_mod.ConfigError(f"data folder not found: {cfg.data.root} (set --data.root DIR)")

    from pipelines.dataset import DatasetError

    from cmpl.checkpoint import CheckpointError
    from cmpl.trainer import TrainError, train

    try:
        train(cfg)
    except (DatasetError, CheckpointError) as e:
        cfg_mod.fail(str(e))
    except TrainError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None


def main(argv: Sequence[str] | None = None) -> None:
    cfg_mod.run_cli(__doc__, argv, _run)


if __name__ == "__main__":
    from cmpl import train as _train  # one module object, so error classes match

    _train.main()
