"""Shared fixtures. Tests write their own tiny videos; nothing is downloaded."""
import os

# Keep CPU tests predictable on the 2-core CI machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def write_synthetic(root: Path, *, classes: int = 3, per_class: int = 2, val_per_class: int = 2,
                    frames: int = 24) -> Path:
    """A tiny synthetic dataset folder at `root`, written by the project's own generator."""
    subprocess.run([sys.executable, "-m", "preprocess.synthetic", "--out", str(root), "--classes", str(classes),
                    "--per-class", str(per_class), "--val-per-class", str(val_per_class),
                    "--frames", str(frames), "--short-side", "64"],  # 80x64 files: CPU tests stay small
                   check=True, capture_output=True, cwd=REPO_ROOT)
    return root


def cpu_step(task, optimizer, scheduler):
    """make_step of `task` on CPU without AMP (fp32), as the tiny tests run it."""
    import torch

    from cmpl import runtime
    from cmpl.trainer import make_step

    cpu = torch.device("cpu")
    return make_step(task, optimizer, scheduler, runtime.make_scaler("off", cpu), runtime.autocast_factory("off", cpu))


def random_clip_batches(size: int = 32, t_primary: int = 4, t_aux: int = 8):
    """(labeled, unlabeled) dicts of random clips in the loaders' keys: B_l = 2, B_u = 4, 3 classes."""
    import torch

    def clip(n, t):
        return torch.randn(n, 3, t, size, size)

    labeled = {"primary": clip(2, t_primary), "aux": clip(2, t_aux), "label": torch.tensor([0, 1])}
    unlabeled = {"primary_weak": clip(4, t_primary), "primary_strong": clip(4, t_primary),
                 "aux_weak": clip(4, t_aux), "aux_strong": clip(4, t_aux), "label": torch.tensor([0, 1, 2, 0])}
    return labeled, unlabeled
