"""preprocess.synthetic: deterministic, same format as the real datasets, classes as documented."""
from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import av
import numpy as np
from av.video.frame import PictureType

from preprocess import synthetic

SMALL = ["--per-class", "1", "--val-per-class", "1", "--frames", "32", "--workers", "2"]


def run(out: Path, *extra: str) -> int:
    return synthetic.main(["--out", str(out), *SMALL, *extra])


def digest(out: Path) -> dict[str, str]:
    """sha256 of every file except meta.json (it holds the date) and the hidden state/lock files."""
    files = [p for p in sorted(out.rglob("*")) if p.is_file() and p.name[0] != "." and p.name != "meta.json"]
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_same_seed_same_bytes_other_seed_other_videos(tmp_path):
    assert run(tmp_path / "a") == 0 and run(tmp_path / "b") == 0 and run(tmp_path / "c", "--seed", "1") == 0
    a, b, c = digest(tmp_path / "a"), digest(tmp_path / "b"), digest(tmp_path / "c")
    assert len([k for k in a if k.endswith(".webm")]) == 20
    assert a == b  # manifests, splits and every video file, byte for byte
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a if k.endswith(".webm"))
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    assert meta["counts"] == {"classes": 10, "train": 10, "val": 10, "failed": 0}
    with open(tmp_path / "a" / "train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {(r["num_frames"], r["fps"], r["width"], r["height"]) for r in rows} == {("32", "25", "80", "64")}
    assert (tmp_path / "a" / "classes.txt").read_text().split() == list(synthetic.CLASSES)


def test_render_shape_and_determinism():
    spec = synthetic.VideoSpec(label=8, subset="val", index=3, seed=5, frames=20, width=40, height=32)
    video = synthetic.render_video(spec)
    assert video.shape == (20, 32, 40, 3) and video.dtype == np.uint8
    assert np.array_equal(video, synthetic.render_video(spec))
    assert not np.array_equal(video, synthetic.render_video(synthetic.VideoSpec(8, "val", 4, 5, 20, 40, 32)))


def trajectory(name: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return synthetic.trajectory(name, np.random.default_rng(seed), np.arange(80.0), 80, 64, 7.0)


def test_classes_differ_as_documented():
    # appearance classes share one motion law: only shape/colour tell them apart
    for name in synthetic.CLASSES[1:4]:
        assert all(np.array_equal(u, v) for u, v in zip(trajectory(name), trajectory("red_circle")))
    for seed in range(5):
        x, _ = trajectory("shake", seed)
        # stride 8 sees one position (like "still"); stride 4 sees the shake
        assert np.ptp(x[::8]) == 0 and np.ptp(x[::4]) > 4
        _, up = trajectory("rise_slow", seed)
        _, down = trajectory("fall_slow", seed)
        _, fast = trajectory("rise_fast", seed)
        assert np.median(np.diff(up)) < 0 < np.median(np.diff(down))
        assert np.median(np.diff(fast)) < 2 * np.median(np.diff(up))
        x, _ = trajectory("swing", seed)
        assert np.ptp(x) > 15 and np.sum(np.diff(np.sign(np.diff(x))) != 0) >= 4  # turns back and forth
        x, y = trajectory("still", seed)
        assert np.hypot(np.ptp(x), np.ptp(y)) < 10


def test_h264_option_has_no_b_frames_and_fixed_gop(tmp_path):
    out = tmp_path / "h"
    assert synthetic.main(["--out", str(out), "--classes", "2", *SMALL, "--codec", "h264", "--gop", "8"]) == 0
    files = sorted(out.rglob("*.mp4"))
    assert len(files) == 4
    with av.open(str(files[0])) as c:
        kinds = [(f.key_frame, PictureType(f.pict_type)) for f in c.decode(video=0)]
    assert len(kinds) == 32
    assert [i for i, (key, _) in enumerate(kinds) if key] == [0, 8, 16, 24]
    assert {kind for _, kind in kinds} == {PictureType.I, PictureType.P}


def test_changed_settings_reencode(tmp_path, capsys):
    out, one = tmp_path / "s", ["--classes", "1", "--per-class", "2", "--val-per-class", "0", "--frames", "32"]
    assert synthetic.main(["--out", str(out), *one]) == 0
    video = out / "videos/train/red_circle/red_circle_000.webm"
    first = video.read_bytes()
    assert synthetic.main(["--out", str(out), *one, "--crf", "40"]) == 0  # recorded settings differ
    assert "converted 2, skipped 0" in capsys.readouterr().out and video.read_bytes() != first
    (out / ".state.jsonl").unlink()  # no record: the decoded frame rate tells
    assert synthetic.main(["--out", str(out), *one, "--crf", "40", "--fps", "20"]) == 0
    assert "converted 2, skipped 0" in capsys.readouterr().out
    assert synthetic.main(["--out", str(out), *one, "--crf", "40", "--fps", "20"]) == 0
    assert "converted 0, skipped 2" in capsys.readouterr().out
