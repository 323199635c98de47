"""The project's one device vocabulary and its one resolver: "auto" | "cuda" | "cpu" (torch's names).

Used for the training device (cmpl.runtime) and for where the loaders decode; DALI's own names ("gpu",
"mixed") appear only inside pipelines/dali_pipelines.py.
"""
from __future__ import annotations

DEVICES = ("auto", "cuda", "cpu")


def resolve_device(name: str | None) -> str:
    """"auto" (or None) -> "cuda" when CUDA is available, else "cpu"; "cuda" | "cpu" as given, checked."""
    import torch

    if name in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for but CUDA is not available; use 'cpu'")
    return name


def dali_device(device: str) -> str:
    """A resolved device -> DALI's operator device for the pipeline graph ("gpu" | "cpu")."""
    return "gpu" if device == "cuda" else "cpu"
