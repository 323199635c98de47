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
                    "--frames", str(frames)], check=True, capture_output=True, cwd=REPO_ROOT)
    return root
