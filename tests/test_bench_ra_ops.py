"""bench.ra_ops runs on the CPU backend and reports every op of the loaders' suite."""
from __future__ import annotations

import json

import pytest

from bench import ra_ops
from pipelines import rand_augment


def test_ra_ops_table_covers_the_suite(tmp_path, capsys):
    out = tmp_path / "ra.json"
    assert ra_ops.main(["--frames", "2", "--size", "16", "--batch", "2", "--runs", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    names = [r["op"] for r in result["rows"]]
    assert names[:14] == [op.name for op in rand_augment.clip_suite()]
    assert names[14:] == ["contrast (DALI, per frame)", "auto_contrast (DALI, per frame)"]
    assert result["base_ms"] > 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in names)


def test_ra_ops_rejects_bad_sizes(capsys):
    with pytest.raises(SystemExit):
        ra_ops.main(["--frames", "0"])
    assert "--frames must be >= 1, got 0" in capsys.readouterr().err


def test_ra_ops_speaks_the_project_device_names(capsys):
    with pytest.raises(SystemExit):
        ra_ops.main(["--device", "gpu"])  # DALI's word; the project's is cuda
    assert "invalid choice: 'gpu'" in capsys.readouterr().err
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            ra_ops.main(["--device", "cuda"])
        assert "--device cuda but CUDA is not available" in capsys.readouterr().err
