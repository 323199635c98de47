"""bench.gop: one dataset per GOP from the same frames; sizes, decode spans and the decode floor reported."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np

from bench import gop as bench_gop
from pipelines.reference import torchcodec_missing


class _OneBatchPlan:
    def __init__(self, samples):
        self.samples = samples

    def __len__(self) -> int:
        return 1

    def batch(self, epoch, pos):
        return self.samples


def test_decode_span_counts_each_wanted_frame_from_its_keyframe():
    samples = [SimpleNamespace(primary_indices=np.array([10, 40]), aux_indices=np.array([12, 20])),
               SimpleNamespace(primary_indices=np.array([16, 17]), aux_indices=np.array([16]))]
    plan = _OneBatchPlan(samples)
    # GOP 8: 8..12, 16..20, 40 (11 frames) and 16..17 (2); GOP 32: 0..20, 32..40 (30) and 0..17 (18)
    assert bench_gop.decode_span(plan, 8, batches=5) == (11 + 2) / 2
    assert bench_gop.decode_span(plan, 32, batches=5) == (30 + 18) / 2


def test_bench_writes_one_dataset_per_gop_and_times_the_decoders(tmp_path, capsys):
    out = tmp_path / "gop.json"
    argv = ["--gops", "4", "8", "--classes", "2", "--per-class", "2", "--frames", "24", "--width", "64",
            "--height", "48", "--short-side", "48", "--crop-size", "32", "--batches", "1", "--reps", "1",
            "--batch-size", "2", "--workers", "1", "--skip-pipeline", "--peer-decoders",
            "--data-dir", str(tmp_path / "data"), "--json", str(out)]
    assert bench_gop.main(argv) == 0
    res = json.loads(out.read_text())
    for gop in ("4", "8"):
        meta = json.loads((tmp_path / "data" / f"gop{gop}" / "meta.json").read_text())
        assert meta["gop"] == int(gop) and res[gop]["videos"] == 4
        assert res[gop]["output_mb"] > 0 and res[gop]["a"]["samples_per_s"] > 0
        assert res[gop]["p"]["samples_per_s"] > 0 and res[gop]["p"]["cpu_ms_per_sample"] >= 0  # tiny: may be < 1 tick
        assert "b" not in res[gop]
        assert ("t" in res[gop]) == (torchcodec_missing() is None)  # torchcodec's column only where it loads
    assert res["4"]["output_mb"] > res["8"]["output_mb"]  # more keyframes, more bytes
    assert res["4"]["decode_span_frames"] <= res["8"]["decode_span_frames"]
    for key in ("dali_one_frame_cpu_ms", "dali_one_frame_whole_file_cpu_ms"):
        assert res[key]["first"] >= 0 and res[key]["last"] >= 0
    assert "decode span" in capsys.readouterr().out


def test_one_video_per_class_is_refused(capsys):
    assert bench_gop.main(["--per-class", "1"]) == 2
    assert "--per-class must be >= 2" in capsys.readouterr().err
