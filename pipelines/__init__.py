"""DALI data pipelines: dataset folder -> dicts of clip tensors (docs/ARCHITECTURE.md section 2).

The loaders are imported on first use, so `pipelines.device`, `pipelines.sampling` and `pipelines.dataset`
load without DALI.
"""
from __future__ import annotations

from typing import Any

from pipelines.dataset import DatasetError

_LOADERS = ("eval_loader", "labeled_loader", "unlabeled_loader", "train_loader")
__all__ = ["DatasetError", *_LOADERS]


def __getattr__(name: str) -> Any:
    if name in _LOADERS:
        from pipelines import loaders

        return getattr(loaders, name)
    raise AttributeError(f"module 'pipelines' has no attribute {name!r}")
