"""preprocess.synthetic, both variants: deterministic, the real datasets' format, classes as documented."""
from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
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
    assert run(tmp_path / "a") == 0 and run(tmp_path / "b", "--variant", "quick") == 0
    assert run(tmp_path / "c", "--seed", "1") == 0
    a, b, c = digest(tmp_path / "a"), digest(tmp_path / "b"), digest(tmp_path / "c")
    assert len([k for k in a if k.endswith(".webm")]) == 20
    assert a == b  # manifests, splits and every video file, byte for byte
    assert a.keys() == c.keys()
    assert all(a[k] != c[k] for k in a if k.endswith(".webm"))
    meta = json.loads((tmp_path / "a" / "meta.json").read_text())
    assert meta["counts"] == {"classes": 10, "train": 10, "val": 10, "failed": 0}
    with open(tmp_path / "a" / "train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # the 80x64 drawing, written at the default short side 144: decodable by the GPU's NVDEC for every codec
    assert {(r["num_frames"], r["fps"], r["width"], r["height"]) for r in rows} == {("32", "25", "180", "144")}
    assert (tmp_path / "a" / "classes.txt").read_text().split() == list(synthetic.CLASSES)
    # the quick variant's meta.json keeps exactly its old keys, and its splits their old sizes
    assert "variant" not in meta and set(meta["generated"]) == {"classes", "per_class", "val_per_class",
                                                                "frames", "width", "height"}
    assert {k: v["per_class"] for k, v in meta["splits"].items()} == {"1pct": 1, "10pct": 3}


def test_quick_defaults_unchanged():
    """The default variant's classes, drawing size and splits are the ones `make demo` was measured on; the
    files are that drawing scaled to a short side every GPU decoder codec takes (issue 19)."""
    from pipelines.device import NVDEC_MIN_SIZE

    quick = synthetic.VARIANTS["quick"]
    assert (len(quick.classes), quick.per_class, quick.val_per_class, quick.frames, quick.width,
            quick.height) == (10, 30, 10, 80, 80, 64)
    assert synthetic.DEFAULT_SHORT_SIDE >= max(max(NVDEC_MIN_SIZE[c]) for c in ("h264", "hevc", "vp9"))
    assert quick.classes == synthetic.CLASSES
    assert all(synthetic.variant_splits("quick", n) == {"1pct": 1, "10pct": 3} for n in (1, 30, 100))


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


# ---- variant "hard" ----------------------------------------------------------------------------------

HARD_SMALL = ["--variant", "hard", "--per-class", "2", "--val-per-class", "1", "--frames", "24",
              "--width", "48", "--height", "32", "--short-side", "32", "--workers", "2"]


def test_hard_variant_writes_a_valid_dataset_folder_deterministically(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert synthetic.main(["--out", str(a), *HARD_SMALL]) == 0
    assert synthetic.main(["--out", str(b), *HARD_SMALL]) == 0
    assert digest(a) == digest(b)  # same seed: manifests, splits and every video, byte for byte
    assert len([k for k in digest(a) if k.endswith(".webm")]) == 8 * 3
    assert (a / "classes.txt").read_text().split() == list(synthetic.HARD_CLASSES)
    meta = json.loads((a / "meta.json").read_text())
    assert meta["variant"] == "hard" and meta["generated"]["distractors"] == 2
    assert meta["counts"] == {"classes": 8, "train": 16, "val": 8, "failed": 0}
    with open(a / "train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {(r["num_frames"], r["fps"], r["width"], r["height"]) for r in rows} == {("24", "25", "48", "32")}
    assert sorted({int(r["label"]) for r in rows}) == list(range(8))
    train = {r["path"] for r in rows}
    for name, per_class in (("1pct", 1), ("10pct", 2)):  # 10pct: at least 2 per class
        for seed in range(3):
            split = (a / "splits" / f"{name}_seed{seed}.txt").read_text().split()
            assert len(split) == 8 * per_class and set(split) <= train
    assert synthetic.variant_splits("hard", 40) == {"1pct": 1, "10pct": 4}


def test_hard_bad_arguments_exit_2(tmp_path, capsys):
    assert synthetic.main(["--out", str(tmp_path / "q"), "--distractors", "1"]) == 2
    assert synthetic.main(["--out", str(tmp_path / "h"), "--variant", "hard", "--classes", "9"]) == 2
    assert "--classes must be in 1..8" in capsys.readouterr().err


def hard_spec(label: int, index: int = 0, seed: int = 0, frames: int = 40) -> synthetic.HardVideoSpec:
    return synthetic.HardVideoSpec(label, "train", index, seed, frames=frames)


def test_hard_render_shape_and_determinism():
    spec = hard_spec(3, frames=20)
    video = synthetic.render_hard_video(spec)
    assert video.shape == (20, 64, 80, 3) and video.dtype == np.uint8
    assert np.array_equal(video, synthetic.render_hard_video(spec))
    assert not np.array_equal(video, synthetic.render_hard_video(hard_spec(3, index=1, frames=20)))
    assert not np.array_equal(video, synthetic.render_hard_video(hard_spec(3, seed=1, frames=20)))


def test_hard_backgrounds_vary_per_video_and_carry_no_class():
    backgrounds = [synthetic.render_background(synthetic.hard_scene(hard_spec(0, index=i))) for i in range(4)]
    for i in range(4):
        for j in range(i):  # videos of one class: each has its own background
            assert np.abs(backgrounds[i] - backgrounds[j]).mean() > 10
        assert np.abs(backgrounds[i][0] - backgrounds[i][-1]).mean() > 3  # it moves
    # One draw order for every label: equal generator states give equal backgrounds, pans and
    # distractors, whatever the class; only the actor's shape and motion law follow the label.
    scenes = [synthetic.draw_hard_scene(np.random.default_rng(7), label, frames=40, width=80, height=64,
                                        distractors=2) for label in range(8)]
    for scene in scenes[1:]:
        assert np.array_equal(synthetic.render_background(scene), synthetic.render_background(scenes[0]))
        assert (scene.camera, scene.distractors) == (scenes[0].camera, scenes[0].distractors)
        assert replace(scene.actor, shape="circle", motion="rise") == scenes[0].actor
    assert {(s.actor.shape, s.actor.motion) for s in scenes} == {
        (shape, motion) for shape in synthetic.HARD_SHAPES for motion in synthetic.HARD_MOTIONS}


def actor_x(scene: synthetic.HardScene) -> np.ndarray:
    """The actor's horizontal position in each frame, measured on the frames: `(T,)`. The scene's camera
    is held still and the distractors removed, so the actor never wraps around and nothing hides it."""
    scene = replace(scene, camera=synthetic.Camera((0.0, 0.0), (0.0, 0.0), 100.0, (0.0, 0.0), 1.0),
                    distractors=())
    with_actor = synthetic.render_scene(scene).astype(np.int16)
    without = synthetic.render_scene(replace(scene, actor=None)).astype(np.int16)
    mask = np.abs(with_actor - without).sum(-1) > 30  # (T, H, W): the actor's pixels (same noise in both)
    assert mask.sum((1, 2)).min() > 50
    return (mask * np.arange(scene.width)).sum((1, 2)) / mask.sum((1, 2))


def step_correlation(x: np.ndarray) -> float:
    """Lag-1 correlation of successive displacements: near -1 for a zigzag, positive for a smooth sway."""
    d = np.diff(x)
    return float((d[:-1] * d[1:]).sum() / (d**2).sum())


@pytest.mark.parametrize("shape", synthetic.HARD_SHAPES)
def test_vibrate_is_swing_at_stride_8_and_zigzags_at_stride_4(shape):
    swing, vibrate = (synthetic.HARD_CLASSES.index(f"{shape}_{m}") for m in ("swing", "vibrate"))
    scene = synthetic.hard_scene(hard_spec(vibrate))  # textured, panning, with distractors
    frames = synthetic.render_scene(scene).astype(np.int16)
    for start in range(8):
        # the swing video of the same scene whose phase is shifted by the carrier's phase at `start`
        twin = replace(scene, actor=replace(scene.actor, motion="swing",
                                            phase=scene.actor.phase + 2 * np.pi * start / 8))
        twin_frames = synthetic.render_scene(twin).astype(np.int16)
        assert np.abs(frames[start::8] - twin_frames[start::8]).max() <= 1  # F's stride: the same clip
        assert np.abs(frames[start + 4::8] - twin_frames[start + 4::8]).mean() > 0.5  # the frames A adds
    # A's stride tells them apart for any scene: measured on the frames, the vibrating actor zigzags
    # (every step reverses the last one), the swinging one does not.
    for index in range(3):
        x_swing = actor_x(synthetic.hard_scene(hard_spec(swing, index=index)))
        x_vibrate = actor_x(synthetic.hard_scene(hard_spec(vibrate, index=index)))
        for start in range(0, 40 - 29, 2):  # 8-frame clips at stride 4
            assert step_correlation(x_vibrate[start:start + 29:4]) < -0.2
            assert step_correlation(x_swing[start:start + 29:4]) > 0.2


def test_hard_probe_easing_script_scales_only_its_knobs(capsys):
    """preprocess/eased_hard.py made the probe sets of results/hard_probe/README.md."""
    from preprocess import eased_hard

    knobs = eased_hard.parse_knobs('{"tint_scale": 0.5, "pan_scale": 0, "actor_scale": 2, "actor_color": [1, 2, 3]}')
    draw = eased_hard.eased(synthetic.draw_hard_scene, knobs)
    kwargs = dict(frames=8, width=40, height=32, distractors=1)
    base = synthetic.draw_hard_scene(np.random.default_rng(7), 5, **kwargs)
    probe = draw(np.random.default_rng(7), 5, **kwargs)
    assert probe.actor.radius == 2 * base.actor.radius and probe.actor.color == (1, 2, 3)
    assert probe.camera.velocity == (0.0, 0.0) and probe.camera.sway == (0.0, 0.0)
    np.testing.assert_allclose(probe.background.colors, 0.5 * base.background.colors)
    assert probe.actor.motion == base.actor.motion and probe.distractors == base.distractors
    for bad, words in (("{x", "not JSON"), ("[1]", "JSON object"), ('{"tint": 1}', "unknown knob 'tint'")):
        with pytest.raises(ValueError, match=words):
            eased_hard.parse_knobs(bad)
    assert eased_hard.main(['{"tint": 1}', "--out", "unused"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
