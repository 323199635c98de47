"""Shared fixtures. Tests write their own tiny videos; nothing is downloaded."""
import os

# Keep CPU tests predictable on the 2-core CI machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")
