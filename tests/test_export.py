"""cmpl.export: the .pt2 program gives the eager logits, runs with torch alone; the sidecar; ONNX if installed."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from cmpl import export
from cmpl.evaluate import load_network
from pipelines.dali_pipelines import MEAN, STD

from test_predict import CLASSES, save_tiny

REPO = Path(__file__).resolve().parents[1]
HAS_ONNX = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxscript", "onnxruntime"))


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    """(checkpoint, export folder), written by the CLI as docs/USAGE.md shows it (ONNX only when installed)."""
    root = tmp_path_factory.mktemp("export")
    ckpt = save_tiny(root / "primary.pt", str(root / "no-data"), classes=list(CLASSES), fps="30")
    export.main(["--checkpoint", str(ckpt), "--out", str(root / "export")])
    return ckpt, root / "export"


def eager(ckpt: Path, x: torch.Tensor) -> torch.Tensor:
    net, _, _ = load_network(ckpt)
    with torch.no_grad():
        return net.eval()(x)


def test_sidecar_describes_the_input(exported):
    _, out = exported
    meta = json.loads((out / "primary.json").read_text())
    assert meta["program"] == "primary.pt2" and (out / "primary.pt2").is_file()
    assert meta["input_shape"] == ["N", 3, 4, 32, 32] and meta["layout"] == "NCTHW"  # tiny: F 4x2, 32-px crops
    assert (meta["frames"], meta["stride"], meta["fps"]) == (4, 2, 30.0)
    assert meta["mean"] == pytest.approx(MEAN) and meta["std"] == pytest.approx(STD)
    assert meta["classes"] == list(CLASSES) and meta["model"] == "resnet3d10_w1_8"
    assert (meta["clips"], meta["crops"], meta["short_side"]) == (2, 1, 32)
    assert meta["onnx"] == ("primary.onnx" if HAS_ONNX else None)


def test_program_matches_eager_for_any_batch(exported):
    ckpt, out = exported
    program = torch.export.load(out / "primary.pt2").module()
    for batch in (1, 3):  # the batch dimension is dynamic
        x = torch.randn(batch, 3, 4, 32, 32)
        with torch.no_grad():
            got = program(x)
        torch.testing.assert_close(got, eager(ckpt, x), atol=1e-4, rtol=0)


def test_program_runs_without_cmpl(exported, tmp_path):
    ckpt, out = exported
    x = torch.randn(2, 3, 4, 32, 32)
    np.save(tmp_path / "clip.npy", x.numpy())
    # docs/USAGE.md's three lines, in a fresh interpreter outside the repository.
    code = textwrap.dedent(f"""
        import sys, numpy, torch
        clip = torch.from_numpy(numpy.load({str(tmp_path / "clip.npy")!r}))
        program = torch.export.load({str(out / "primary.pt2")!r}).module()
        logits = program(clip)
        assert not any(m.split(".")[0] in ("cmpl", "pipelines", "preprocess") for m in sys.modules), sys.modules
        numpy.save({str(tmp_path / "logits.npy")!r}, logits.detach().numpy())
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    got = torch.from_numpy(np.load(tmp_path / "logits.npy"))
    torch.testing.assert_close(got, eager(ckpt, x), atol=1e-4, rtol=0)


@pytest.mark.skipif(not HAS_ONNX, reason="onnx/onnxscript/onnxruntime not installed (pip install -e '.[export]')")
def test_onnx_matches_eager(exported):
    import onnx
    import onnxruntime

    ckpt, out = exported
    onnx.checker.check_model(onnx.load(out / "primary.onnx"))
    session = onnxruntime.InferenceSession(str(out / "primary.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 3):
        x = torch.randn(batch, 3, 4, 32, 32)
        (got,) = session.run(None, {"clip": x.numpy()})
        torch.testing.assert_close(torch.from_numpy(got), eager(ckpt, x), atol=1e-4, rtol=0)


@pytest.mark.parametrize("args, words", [
    (["--out", "{tmp}/e"], ["--checkpoint"]),
    (["--checkpoint", "{tmp}/none.pt", "--out", "{tmp}/e"], ["checkpoint not found"]),
    (["--checkpoint", "{ckpt}", "--out", "{tmp}/e", "--network", "both"], ["--network"]),
])
def test_user_errors_are_one_line_exit_2(exported, tmp_path, capsys, args, words):
    ckpt, _ = exported
    with pytest.raises(SystemExit) as e:
        export.main([a.format(tmp=tmp_path, ckpt=ckpt) for a in args])
    assert e.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and all(w in lines[0] for w in words), lines
    assert not (tmp_path / "e").exists()
