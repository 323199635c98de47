"""cmpl.evaluate: softmax averaged over views, top-1/top-5/per-class, the CLI's JSON and its errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_synthetic
import torch
from torch import nn

from cmpl import checkpoint, config, models, presets
from cmpl.evaluate import evaluate_network

REPO = Path(__file__).resolve().parents[1]


class _LogitsFromInput(nn.Module):
    """A 'network' whose logits are the input's channels at (t, h, w) = 0: (N, K, T, H, W) -> (N, K)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, 0, 0, 0]


def _video(view_logits: list[list[float]]) -> torch.Tensor:
    """(V, K) logits -> one video (1, V, K, 1, 1, 1) for _LogitsFromInput."""
    return torch.tensor(view_logits).view(1, len(view_logits), -1, 1, 1, 1)


def test_prediction_averages_softmax_not_logits():
    # Video 0: mean logits favour class 1 (3.33 vs 2), mean softmax favours class 0 (0.64 vs 0.36).
    v0 = _video([[0.0, 10.0, -5.0], [3.0, 0.0, -5.0], [3.0, 0.0, -5.0]])
    # Video 1: every view says class 2 with class 0 second.
    v1 = _video([[1.0, 0.0, 4.0], [1.0, 0.0, 4.0], [1.0, 0.0, 4.0]])
    loader = [{"video": v0, "label": torch.tensor([0])}, {"video": v1, "label": torch.tensor([0])}]
    res = evaluate_network(_LogitsFromInput(), loader, num_classes=3, device=torch.device("cpu"))
    assert res["num_videos"] == 2
    assert res["top1"] == pytest.approx(0.5)  # video 0 right (softmax mean), video 1 wrong
    assert res["top5"] == pytest.approx(1.0)  # K = 3 < 5: top-k over all classes
    assert res["per_class_correct"] == [1, 0, 0] and res["per_class_count"] == [2, 0, 0]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("data") / "synthetic", per_class=2)


@pytest.fixture(scope="module")
def checkpoints(dataset, tmp_path_factory) -> Path:
    """A full checkpoint (F and A) and an F-only export, as cmpl.train writes them."""
    cfg = presets.get("tiny")
    cfg.data.root, cfg.model.num_classes = str(dataset), 3
    torch.manual_seed(0)
    nets = {n: models.build(getattr(cfg.model, n), num_classes=3) for n in ("primary", "aux")}
    run = tmp_path_factory.mktemp("run")
    checkpoint.save_atomic({"models": {n: m.state_dict() for n, m in nets.items()}, "config": config.to_dict(cfg),
                            "step": 7, "best_top1": 0.0}, run / "checkpoints/last.pt")
    checkpoint.save_atomic({"model": nets["primary"].state_dict(), "network": "primary",
                            "config": config.to_dict(cfg), "step": 7}, run / "checkpoints/primary.pt")
    return run


def _evaluate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cmpl.evaluate", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=180)


def test_cli_writes_json_for_export_and_full_checkpoint(checkpoints, dataset, tmp_path):
    out = tmp_path / "e.json"
    r = _evaluate("--checkpoint", str(checkpoints / "checkpoints/primary.pt"), "--out", str(out),
                  "--data.eval_crops=3")
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["num_videos"] == 6 and res["network"] == "primary" and res["step"] == 7
    assert (res["clips"], res["crops"]) == (2, 3)
    classes = (dataset / "classes.txt").read_text().split()
    assert list(res["per_class"]) == classes and all(res["per_class_count"][c] == 2 for c in classes)
    hits = sum(res["per_class"][c] * res["per_class_count"][c] for c in classes)
    assert res["top1"] == pytest.approx(hits / 6) and res["top5"] == pytest.approx(1.0)

    # last.pt gives F the same numbers; --network aux evaluates A and writes RUN/eval_aux.json.
    r = _evaluate("--checkpoint", str(checkpoints / "checkpoints/last.pt"), "--data.eval_crops=3")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((checkpoints / "eval.json").read_text())["top1"] == res["top1"]
    r = _evaluate("--checkpoint", str(checkpoints / "checkpoints/last.pt"), "--network", "aux")
    assert r.returncode == 0, r.stderr[-2000:]
    aux = json.loads((checkpoints / "eval_aux.json").read_text())
    assert aux["network"] == "aux" and aux["frames"] == 8 and aux["num_videos"] == 6


@pytest.mark.parametrize("args, words", [
    (("--checkpoint", "/no/such.pt"), ["checkpoint not found", "/no/such.pt"]),
    (("--checkpoint", "{run}/checkpoints/primary.pt", "--network", "aux"), ["primary"]),
    (("--checkpoint", "{run}/checkpoints/last.pt", "--data.root", "/no/data"), ["/no/data"]),
    (("--checkpoint", "{run}/checkpoints/last.pt", "--network", "both"), ["--network"]),
    (("--checkpoint", "{run}/config.toml"), ["config.toml is not a cmpl checkpoint", "torch.save"]),
])
def test_cli_errors_are_one_line(checkpoints, args, words):
    (checkpoints / "config.toml").write_text("not a checkpoint")
    r = _evaluate(*(a.format(run=checkpoints) for a in args))
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert all(w in lines[0] for w in words), lines[0]
