"""DALI data pipelines: dataset folder -> dicts of clip tensors (docs/ARCHITECTURE.md section 2)."""
from pipelines.dataset import DatasetError
from pipelines.loaders import eval_loader, labeled_loader, unlabeled_loader

__all__ = ["DatasetError", "eval_loader", "labeled_loader", "unlabeled_loader"]
