"""bench.loader's peer (d): torchcodec + torchvision v2, on the reference's transforms; skipped without torchcodec."""
from __future__ import annotations

import dataclasses
import json
import sys

import pytest
import torch

from bench import loader as bench_loader
from pipelines import reference, sampling
from pipelines.testing import make_dataset, read_indices

MISSING = reference.torchcodec_missing()
needs_torchcodec = pytest.mark.skipif(MISSING is not None, reason=MISSING or "")
SPEC = sampling.ClipSpec(primary=(4, 4), aux=(8, 2), crop_size=32, short_side=48, time_offset=0.4)
TINY = ["--batches", "1", "--reps", "1", "--batch-size", "2", "--threads", "1", "--crop-size", "32",
        "--short-side", "48"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("ds"), num_frames=[48, 10, 33])


@needs_torchcodec
def test_torchcodec_decoder_gives_the_pyav_samples(root):
    """Same frames, bit for bit, so (c) and (d) differ only in their decoder's speed (RandAugment off: its
    draws are torchvision's own)."""
    kw = dict(split="1pct_seed0", kind="unlabeled", batch_size=3, spec=dataclasses.replace(SPEC, ra_ops=0),
              with_indices=True, num_workers=0)
    pyav = iter(reference.reference_loader(root, decoder="pyav", **kw))
    tc = iter(reference.reference_loader(root, decoder="torchcodec", **kw))
    for _ in range(2):
        p, t = next(pyav), next(tc)
        assert p.keys() == t.keys()
        for k in p:
            assert torch.equal(p[k], t[k]), k
        for n in range(3):  # and they are the planned frames (each fixture frame shows its index)
            assert read_indices(t["primary_weak"][n]) == t["primary_indices"][n].tolist()
            assert read_indices(t["aux_strong"][n]) == t["aux_indices"][n].tolist()


@needs_torchcodec
def test_torchcodec_clamps_an_overstated_frame_count(root):
    path = next((root / "videos" / "train").rglob("*.webm"))
    frames = reference.decode_frames_torchcodec(path, torch.tensor([0, 47, 60]).numpy(), 25.0)
    assert frames.shape == (3, 3, 48, 64) and frames.dtype == torch.uint8
    assert torch.equal(frames[1], frames[2])  # 60 is past the last frame (47): repeated


@needs_torchcodec
def test_bench_reports_d_against_c(root, tmp_path, capsys):
    out = tmp_path / "loader.json"
    assert bench_loader.main(["--data", str(root), "--skip", "a,b", *TINY, "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    for k in ("c", "d"):
        assert res[k]["samples_per_s"] > 0 and res[k]["cpu_ms_per_sample"] >= 0  # 2 samples: may be < 1 tick
    assert res["ratios"]["c_over_d"] == pytest.approx(res["c"]["samples_per_s"] / res["d"]["samples_per_s"])
    printed = capsys.readouterr().out
    assert "(d) torchcodec+tv2" in printed and "(c)/(d) = " in printed and "in CPU ms/sample" in printed
    if res["c"]["cpu_ms_per_sample"] > 0:
        by_cpu = res["d"]["cpu_ms_per_sample"] / res["c"]["cpu_ms_per_sample"]
        assert res["ratios"]["c_over_d_cpu"] == pytest.approx(by_cpu)


def test_bench_skips_d_with_one_line_when_torchcodec_is_absent(root, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(reference, "torchcodec_missing", lambda: "torchcodec unavailable; install it")
    out = tmp_path / "loader.json"
    assert bench_loader.main(["--data", str(root), "--skip", "a,b", *TINY, "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert "d" not in res and "c" in res and set(res["ratios"]) == set()
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("(d)")]
    assert err == ["(d) skipped: torchcodec unavailable; install it"]


def test_torchcodec_missing_names_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)  # makes the import fail
    why = reference.torchcodec_missing()
    assert why is not None and "pip install 'cmpl[peers]'" in why and "apt-get install ffmpeg" in why
    assert "\n" not in why


def test_unknown_decoder_is_refused(root):
    with pytest.raises(ValueError, match="decoder must be one of"):
        reference.reference_loader(root, split="1pct_seed0", kind="unlabeled", batch_size=1, decoder="opencv")



def test_bench_times_the_whole_file_floor_and_the_clip_position(tmp_path, capsys):
    """Issue 21's additions: (a0) the decode floor from whole files, and one clip at the start vs the end."""
    root = make_dataset(tmp_path / "ds", num_frames=80, train_per_class=2, classes=("a", "b"))
    out = tmp_path / "loader.json"
    argv = ["--data", str(root), "--skip", "b,c,d", "--whole-file-floor", "--position-reps", "1",
            "--time-offset", "1", *TINY, "--json", str(out)]
    assert bench_loader.main(argv) == 0
    res = json.loads(out.read_text())
    assert res["a0"]["samples_per_s"] > 0 and res["a"]["samples_per_s"] > 0 and "a_over_a0" in res["ratios"]
    pos = res["position"]
    assert pos["end_start"] == 80 - 64 and pos["gop"] == 8 and pos["clip"] == [8, 8]
    for mode in ("whole", "cut"):
        assert pos[mode]["start"] > 0 and pos[mode]["end"] > 0
    printed = capsys.readouterr().out
    assert "(a0) decode, whole files" in printed and "end/start" in printed and "t_s 1 s" in printed


def test_whole_file_floor_needs_a(capsys):
    assert bench_loader.main(["--skip", "a", "--whole-file-floor"]) == 2
    assert "--whole-file-floor needs (a)" in capsys.readouterr().err
