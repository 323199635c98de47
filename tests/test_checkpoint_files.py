"""A file that is not a cmpl checkpoint, given to any command, is named as such in one line (exit 2), never
with PyTorch's advice to load it with weights_only=False (which would run code from the file)."""
from __future__ import annotations

import pickle
import zipfile

import numpy as np
import pytest
import torch

from cmpl import checkpoint as ckpt_io


def _write(kind: str, path):
    if kind == "text":
        path.write_text("not a checkpoint\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "pickle":
        path.write_bytes(pickle.dumps({"a": 1}))
    elif kind == "zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("a.txt", "x")
    elif kind == "objects":
        torch.save({"a": np.zeros(3)}, path)  # numpy arrays: weights_only refuses them
    elif kind == "torn":
        torch.save({"a": torch.zeros(1000)}, path)
        path.write_bytes(path.read_bytes()[:500])
    elif kind == "list":
        torch.save([torch.zeros(1)], path)
    return path


@pytest.mark.parametrize("kind, reason", [
    ("text", "not a file written by torch.save"), ("empty", "empty"), ("pickle", "not a file written by torch.save"),
    ("zip", "zip archive torch.load cannot read"), ("objects", "Python objects other than tensors"),
    ("torn", "cut short"), ("list", "holds a list"),
])
def test_load_names_the_file_and_why_in_one_line(tmp_path, kind, reason, recwarn):
    path = _write(kind, tmp_path / "model.pt")
    with pytest.raises(ckpt_io.CheckpointError) as e:
        ckpt_io.load(path)
    msg = str(e.value)
    assert msg.startswith(f"{path} is not a cmpl checkpoint") and reason in msg, msg
    assert "\n" not in msg and "weights_only" not in msg
    assert not [w for w in recwarn if "torch" in str(w.filename)]  # no warning of torch's on the way


@pytest.mark.parametrize("command", ["evaluate", "predict", "export"])
def test_every_command_names_a_non_checkpoint_in_one_line(tmp_path, capsys, command):
    import importlib

    junk = _write("text", tmp_path / "primary.pt")
    clip = tmp_path / "clip.webm"
    clip.write_bytes(b"\0" * 64)
    args = {"evaluate": ["--checkpoint", str(junk)],
            "predict": [str(clip), "--checkpoint", str(junk)],
            "export": ["--checkpoint", str(junk), "--out", str(tmp_path / "e")]}[command]
    with pytest.raises(SystemExit) as e:
        importlib.import_module(f"cmpl.{command}").main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {junk} is not a cmpl checkpoint: not a file written by torch.save, or one cut short"]
