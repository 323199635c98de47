"""preprocess/: UCF-101 and Kinetics-400 layouts end to end, on tiny messy inputs written here.

Inputs (preprocess/testing.py; 64x48, about 1 s): MPEG-4 Part 2 AVI, NTSC 30000/1001, an audio track, VFR,
H.264 with B-frames, a portrait odd-sized video, plus a missing, a truncated, a zero-length and a
garbage file. Outputs are checked with DALI's CPU decoder (the reader the pipelines use).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

from preprocess import kinetics400, ucf101
from preprocess.encode import probe_output
from preprocess.testing import TEST_SHORT_SIDE as SHORT
from preprocess.testing import UCF_CLASSES, make_k400_layout, make_ucf_layout, read_csv

REPO = Path(__file__).resolve().parents[1]


def dali_frame_counts(root: Path, rows: list[dict]) -> list[tuple[int, int, int]]:
    """Decode each file completely with DALI's CPU backend: (frames, height, width) per row."""
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=len(rows), num_threads=1, device_id=None)
    def decode():
        return fn.decoders.video(fn.external_source(name="enc", dtype=types.UINT8, ndim=1), device="cpu")

    pipe = decode()
    pipe.build()
    pipe.feed_input("enc", [np.fromfile(root / r["path"], dtype=np.uint8) for r in rows])
    (out,) = pipe.run()
    return [np.asarray(out[i]).shape[:3] for i in range(len(rows))]


def assert_outputs_decode(root: Path, rows: list[dict], *, fps: str, gop: int = 16) -> None:
    assert rows
    shapes = dali_frame_counts(root, rows)
    for r, (t, h, w) in zip(rows, shapes):
        assert (t, h, w) == (int(r["num_frames"]), int(r["height"]), int(r["width"])), r["path"]
        assert r["fps"] == fps
        assert min(h, w) == int(SHORT) and h % 2 == 0 and w % 2 == 0
        assert not Path(r["path"]).is_absolute() and ".." not in Path(r["path"]).parts
        with av.open(str(root / r["path"])) as c:
            s = c.streams.video[0]
            assert s.codec_context.name == "vp9" and not c.streams.audio
            keyframes = [i for i, p in enumerate(p for p in c.demux(s) if p.size) if p.is_keyframe]
        assert keyframes == list(range(0, t, gop)), r["path"]


# --------------------------------------------------------------------------------------------- UCF-101
@pytest.fixture(scope="module")
def ucf_src(tmp_path_factory) -> tuple[Path, Path]:
    return make_ucf_layout(tmp_path_factory.mktemp("ucf"))


def run_ucf(src: Path, lists: Path, out: Path, *extra: str) -> int:
    return ucf101.main([str(src), "--lists", str(lists), "--out", str(out), "--short-side", SHORT, *extra])


@pytest.fixture(scope="module")
def ucf_out(ucf_src, tmp_path_factory) -> Path:
    root, lists = ucf_src
    out = tmp_path_factory.mktemp("ucf_out")
    # SRC given as the folder above UCF-101/ (also accepted); two workers exercise the process pool.
    assert run_ucf(root, lists, out, "--workers", "2") == 1  # exit 1: some inputs are bad
    return out


def test_ucf_manifests_and_failures(ucf_out):
    assert (ucf_out / "classes.txt").read_text().splitlines() == UCF_CLASSES
    train, val = read_csv(ucf_out / "train.csv"), read_csv(ucf_out / "val.csv")
    assert list(train[0]) == ["path", "label", "num_frames", "fps", "width", "height"]
    assert [(r["path"], r["label"]) for r in train] == [
        ("videos/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.webm", "0"),
        ("videos/ApplyEyeMakeup/v_ApplyEyeMakeup_g02_c01.webm", "0"),
        ("videos/ApplyEyeMakeup/v_ApplyEyeMakeup_g03_c01.webm", "0"),
        ("videos/Basketball/v_Basketball_g01_c01.webm", "1"),
        ("videos/YoYo/v_YoYo_g02_c01.webm", "2")]
    assert [r["label"] for r in val] == ["0", "1", "2"]
    failures = {r["source"]: r["reason"] for r in read_csv(ucf_out / "failures.csv")}
    assert set(failures) == {"Basketball/v_Basketball_g02_c01.avi", "Basketball/v_Basketball_g03_c01.avi",
                             "YoYo/v_YoYo_g01_c01.avi"}
    assert failures["YoYo/v_YoYo_g01_c01.avi"] == "missing"
    assert "0 bytes" in failures["Basketball/v_Basketball_g03_c01.avi"]
    assert "truncated" in failures["Basketball/v_Basketball_g02_c01.avi"]
    # 1 s at 25 fps in, 25 fps out: 25 frames, also from the NTSC input (1001 ms long)
    ntsc = next(r for r in train if "g02" in r["path"])
    assert abs(int(ntsc["num_frames"]) - 25) <= 1
    portrait = next(r for r in train if "Basketball" in r["path"])
    assert int(portrait["width"]) == 48 and int(portrait["height"]) > 48
    meta = json.loads((ucf_out / "meta.json").read_text())
    assert meta["counts"] == {"classes": 3, "train": 5, "val": 3, "failed": 3}
    assert (meta["codec"], meta["fps"], meta["gop"], meta["short_side"]) == ("vp9", "25", 16, 48)
    assert not list(ucf_out.rglob(".*partial*"))


def test_ucf_outputs_decode_with_dali(ucf_out):
    rows = read_csv(ucf_out / "train.csv") + read_csv(ucf_out / "val.csv")
    assert_outputs_decode(ucf_out, rows, fps="25")


def test_ucf_splits_balanced_and_disjoint_from_val(ucf_out):
    train = {r["path"]: r["label"] for r in read_csv(ucf_out / "train.csv")}
    val = {r["path"] for r in read_csv(ucf_out / "val.csv")}
    for seed in (0, 1, 2):
        one = (ucf_out / "splits" / f"1pct_seed{seed}.txt").read_text().splitlines()
        assert sorted(train[p] for p in one) == ["0", "1", "2"]  # one per class
        ten = (ucf_out / "splits" / f"10pct_seed{seed}.txt").read_text().splitlines()
        assert sorted(ten) == sorted(train)  # fewer than 10 per class: all of them
        assert not (set(one) | set(ten)) & val


def test_ucf_rerun_is_idempotent_and_redoes_broken(ucf_src, ucf_out, capsys, tmp_path):
    root, lists = ucf_src
    names = ["train.csv", "val.csv", "failures.csv", "classes.txt", *(f"splits/{n}" for n in
             sorted(os.listdir(ucf_out / "splits")))]
    before = {n: (ucf_out / n).read_bytes() for n in names}
    meta_before = json.loads((ucf_out / "meta.json").read_text())
    capsys.readouterr()
    assert run_ucf(root / "UCF-101", lists, ucf_out, "--workers", "1") == 1
    assert "converted 0, skipped 8, failed 3" in capsys.readouterr().out
    assert {n: (ucf_out / n).read_bytes() for n in names} == before
    meta = json.loads((ucf_out / "meta.json").read_text())
    meta.pop("date"), meta_before.pop("date")
    assert meta == meta_before

    # A deleted and a damaged output are redone; the others are reused (also without the state file).
    gone = ucf_out / "videos/YoYo/v_YoYo_g02_c01.webm"
    gone.unlink()
    damaged = ucf_out / "videos/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.webm"
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])  # still decodes, partly
    (ucf_out / ".state.jsonl").unlink()
    assert run_ucf(root / "UCF-101", lists, ucf_out, "--workers", "1") == 1
    assert "converted 2, skipped 6, failed 3" in capsys.readouterr().out
    assert probe_output(damaged).num_frames == 25
    assert {n: (ucf_out / n).read_bytes() for n in names} == before


def test_user_errors_exit_2_with_one_line(ucf_src, tmp_path, capsys):
    root, lists = ucf_src
    assert run_ucf(tmp_path / "nowhere", lists, tmp_path / "o") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nowhere" in err[0]
    assert run_ucf(root, tmp_path, tmp_path / "o") == 2
    assert "classInd.txt" in capsys.readouterr().err
    assert kinetics400.main([str(root), "--annotations", str(tmp_path), "--out", str(tmp_path / "k")]) == 2
    assert "train.csv" in capsys.readouterr().err
    assert run_ucf(root, lists, tmp_path / "o", "--short-side", "47") == 2


# --------------------------------------------------------------------------------------------- K400
@pytest.fixture(scope="module")
def k400_out(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("k400")
    src, ann = make_k400_layout(root)
    out = root / "out"
    code = kinetics400.main([str(src), "--annotations", str(ann), "--out", str(out), "--short-side", SHORT,
                             "--workers", "1"])
    assert code == 1
    return out


def test_k400_layouts(k400_out):
    assert (k400_out / "classes.txt").read_text().splitlines() == ["playing guitar", "riding a bike"]
    train, val = read_csv(k400_out / "train.csv"), read_csv(k400_out / "val.csv")
    assert [(r["path"], r["label"]) for r in train] == [
        ("videos/train/playing_guitar/aaaaaaaaaaa_000010_000020.webm", "0"),
        ("videos/train/playing_guitar/bbbbbbbbbbb_000000_000010.webm", "0"),
        ("videos/train/riding_a_bike/ccccccccccc_000005_000015.webm", "1")]
    assert [(r["path"], r["label"]) for r in val] == [
        ("videos/val/playing_guitar/eeeeeeeeeee_000001_000011.webm", "0"),
        ("videos/val/riding_a_bike/fffffffffff_000002_000012.webm", "1")]
    failures = {r["source"]: r["reason"] for r in read_csv(k400_out / "failures.csv")}
    assert set(failures) == {"missingmiss_000000_000010", "ggggggggggg_000000_000010",
                             "train/riding a bike/ddddddddddd_000030_000040.mp4"}
    assert failures["missingmiss_000000_000010"].startswith("missing")
    assert "not a class" in failures["ggggggggggg_000000_000010"]
    assert "unreadable" in failures["train/riding a bike/ddddddddddd_000030_000040.mp4"]
    vfr = next(r for r in train if r["path"].endswith("aaaaaaaaaaa_000010_000020.webm"))
    assert int(vfr["num_frames"]) > 30  # the VFR input lasts ~1.4 s: 30 fps CFR gives ~43 frames


def test_k400_outputs_decode_with_dali(k400_out):
    rows = read_csv(k400_out / "train.csv") + read_csv(k400_out / "val.csv")
    assert_outputs_decode(k400_out, rows, fps="30")


# --------------------------------------------------------------------------------------------- kill -9
def test_kill_9_leaves_no_partial_output(tmp_path):
    out = tmp_path / "syn"
    cmd = [sys.executable, "-m", "preprocess.synthetic", "--out", str(out), "--classes", "3",
           "--per-class", "4", "--val-per-class", "0", "--frames", "40", "--workers", "1"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(list(out.rglob("*.webm"))) < 2:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finished = sorted(out.rglob("*.webm"))
    assert finished and not (out / "train.csv").exists()
    for f in finished:  # whatever carries a final name is complete
        assert probe_output(f).num_frames == 40
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"converted {12 - len(finished)}, skipped {len(finished)}, failed 0" in done.stdout
    assert not list(out.rglob(".*partial*"))
    assert len(read_csv(out / "train.csv")) == 12
