"""The dataset-folder checks every entry point shares, and the synthetic set's first-use bootstrap."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Callable, Sequence

from cmpl.config import ConfigError

MANIFESTS = ("classes.txt", "train.csv", "val.csv")


def require_dataset(root: str | Path) -> Path:
    """`root` as a Path if it is a folder, else ConfigError (one line, exit 2 in the CLIs)."""
    path = Path(root)
    if not path.is_dir():
        raise ConfigError(f"data folder not found: {root} (set --data.root DIR)")
    return path


def is_complete(root: str | Path) -> bool:
    """Whether `root` holds a finished dataset (its manifests are written last, atomically)."""
    return all((Path(root) / name).is_file() for name in MANIFESTS)


# Presets whose default data folder is generated on first use: preset -> (generator module, its arguments).
# The digits benchmark is written at the recipe's 32-px short side on the CPU (no resize per clip), at NVDEC's
# 128-px minimum where a GPU decodes it.
FIRST_USE = {"digits": ("preprocess.digits", {"cpu": ("--short-side", "32"), "cuda": ()}),
             "demo": ("preprocess.synthetic", {"cpu": (), "cuda": ()})}


def ensure_preset_data(preset: str, root: str | Path, default_root: str) -> bool:
    """Generate the data of a FIRST_USE preset when `root` is that preset's default folder and incomplete."""
    if preset not in FIRST_USE or str(root) != default_root:
        return False
    import torch

    generator, args = FIRST_USE[preset]
    return ensure_synthetic(root, args["cuda" if torch.cuda.is_available() else "cpu"], generator=generator)


def ensure_synthetic(root: str | Path, extra_args: Sequence[str] = (),
                     run: Callable[[list[str]], object] | None = None, generator: str = "preprocess.synthetic",
                     ) -> bool:
    """Generate a synthetic dataset at `root` (`generator` + `extra_args`) unless it is complete.

    `run` executes the command (default: subprocess.run(check=True)); returns whether it generated.
    """
    if is_complete(root):
        return False
    print(f"generating the dataset in {root} (first use: python -m {generator}) ...", flush=True)
    cmd = [sys.executable, "-m", generator, "--out", str(root), *extra_args]
    (run or (lambda c: subprocess.run(c, check=True)))(cmd)
    return True
