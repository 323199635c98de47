"""bench.ddp's reading of metrics.jsonl and its efficiency ratio, on hand-written files (a real run of the
bench takes minutes: it launches torchrun several times)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.ddp import BenchError, Measurement, efficiency, main, measure, train_records


def write_metrics(path: Path, rates: list[float], *, waits: list[float] | None = None) -> Path:
    lines = []
    for i, rate in enumerate(rates):
        lines.append({"kind": "train", "step": 10 * (i + 1), "loss": 1.0, "videos_per_s": rate,
                      "data_wait": (waits or [0.1] * len(rates))[i]})
    lines.insert(2, {"kind": "val", "step": 20, "top1_f": 0.5})  # other kinds are ignored
    lines.reverse()  # order of the file does not matter, steps do
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


def test_first_window_is_skipped_and_rate_is_divided_by_ranks(tmp_path):
    metrics = write_metrics(tmp_path / "m.jsonl", [1.0, 30.0, 34.0, 32.0], waits=[0.9, 0.2, 0.4, 0.3])
    assert [r["step"] for r in train_records(metrics)] == [20, 30, 40]
    m = measure(metrics, 2)
    assert m == Measurement(2, 16.0, pytest.approx(0.3))  # median 32 global videos/s over 2 ranks


def test_efficiency_is_the_ratio_of_per_rank_medians():
    runs = [Measurement(1, 30.0, 0.1), Measurement(2, 12.0, 0.2), Measurement(1, 20.0, 0.1),
            Measurement(2, 18.0, 0.2), Measurement(1, 25.0, 0.1), Measurement(2, 15.0, 0.2)]
    assert efficiency(runs, 2, 1) == pytest.approx(15.0 / 25.0)
    assert efficiency(runs, 1, 1) == 1.0
    with pytest.raises(BenchError, match="4 ranks"):
        efficiency(runs, 4, 1)


@pytest.mark.parametrize("content, words", [
    (None, "not found"),
    ('{"kind": "train", "step": 10, "videos_per_s": 3.0}\n', "need more than"),
    ('{"kind": "train", "step": 10, "videos_per_s": 3.0}\nnot json\n', ":2: not a JSON line"),
    ('{"kind": "train", "step": 10}\n{"kind": "train", "step": 20}\n', "without a numeric videos_per_s"),
])
def test_unusable_metrics_files_name_the_problem(tmp_path, content, words):
    path = tmp_path / "metrics.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(BenchError, match=words):
        train_records(path)


@pytest.mark.parametrize("argv, words", [
    (["--steps", "10", "--log-every", "10"], "--steps"),
    (["--ranks", "0", "1"], "at least 1"),
    (["--data", "/no/such/dir"], "/no/such/dir"),
])
def test_bad_arguments_exit_2_with_one_line(argv, words, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and words in err[0]
