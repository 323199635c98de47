"""The moving-digits benchmark (preprocess/digits.py): real handwriting, nuisance shared by every class, the
tempo classes' periods against the two strides, and a tiny dataset folder through the writer."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from preprocess import PreprocessError, digits
from preprocess.digits import CLASSES, DigitVideoSpec, render_digit_video, writer_index


def test_handwriting_comes_from_the_installed_package():
    images, labels = digits.mnist_digits()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [500] * 10
    assert images.max() == 255 and (images == 0).mean() > 0.5  # white strokes on black, as MNIST


def test_every_video_of_a_subset_has_its_own_writer_and_train_val_are_disjoint():
    seen = {}
    for subset in ("train", "val"):
        for label in range(len(CLASSES)):
            for i in range(40):
                digit, image = writer_index(DigitVideoSpec(label, subset, i, 0, count=40))
                assert digits.mnist_digits()[1][image] == digit
                assert image not in seen, (subset, label, i, seen.get(image))
                seen[image] = (subset, label, i)
    tempo = [writer_index(DigitVideoSpec(label, "train", i, 0, count=40))[0]
             for label in range(8, 10) for i in range(40)]
    assert sorted(set(tempo)) == [8, 9] and np.bincount(tempo)[8:].tolist() == [40] * 2


def test_render_is_deterministic_in_bounds_and_shows_a_bright_digit():
    spec = DigitVideoSpec(3, "train", 5, 0, frames=24, size=64)
    a, b = render_digit_video(spec), render_digit_video(spec)
    assert a.shape == (24, 64, 64, 3) and a.dtype == np.uint8 and np.array_equal(a, b)
    assert not np.array_equal(a, render_digit_video(DigitVideoSpec(3, "train", 6, 0, frames=24, size=64)))
    luma = a.astype(float).mean(-1)
    assert (luma.max(axis=(1, 2)) - np.median(luma, axis=(1, 2)) > 60).all()  # the digit stands out in every frame


@pytest.mark.parametrize("label", range(len(CLASSES)))
def test_the_law_is_the_class_for_tempo_classes_and_random_otherwise(label):
    scenes = [digits.draw_scene(DigitVideoSpec(label, "train", i, 0)) for i in range(30)]
    laws = {sc.law for sc in scenes}
    if CLASSES[label] in digits.TEMPO_CLASSES:
        assert laws == {CLASSES[label]}
        fast = CLASSES[label] == "shiver"
        lo, hi = digits.FAST_PERIOD if fast else digits.SLOW_PERIOD
        assert all(lo <= sc.period <= hi and sc.amplitude > 0 for sc in scenes)
    else:
        assert laws == set(digits.LAWS)  # motion carries nothing for the appearance classes


def test_the_digit_and_its_swing_stay_in_the_frame():
    t = np.arange(400, dtype=float)  # long enough for several bounces
    for label in range(len(CLASSES)):
        for i in range(10):
            sc = digits.draw_scene(DigitVideoSpec(label, "val", i, 1))
            x, y = digits.centres(sc, t)
            s = sc.background.shape[0]
            assert (x - sc.box / 2 >= 0).all() and (x + sc.box / 2 <= s).all()
            assert (y - sc.box / 2 >= 0).all() and (y + sc.box / 2 <= s).all()


def test_fast_periods_alias_at_stride_8_to_no_real_slow_period():
    slow_lo, slow_hi = digits.SLOW_PERIOD
    for period in np.linspace(*digits.FAST_PERIOD, 7):
        assert period / 4 > 2  # stride 4 samples a fast swing above Nyquist: a zigzag
        alias = 1 / abs(1 / period - 1 / 8)  # what stride 8 sees: a slow swing ...
        assert alias > 2 * 8 and not slow_lo <= alias <= slow_hi  # ... slower than any real slow one


def test_a_small_dataset_folder(tmp_path):
    out = tmp_path / "d"
    rc = digits.main(["--out", str(out), "--per-class", "2", "--val-per-class", "1", "--frames", "16",
                      "--size", "64", "--short-side", "32", "--workers", "1"])
    assert rc == 0
    rows = list(csv.DictReader((out / "train.csv").open()))
    assert len(rows) == 2 * len(CLASSES) and {r["num_frames"] for r in rows} == {"16"}
    assert {(r["width"], r["height"]) for r in rows} == {("32", "32")}
    assert (out / "classes.txt").read_text().split() == list(CLASSES)
    assert len((out / "splits" / "1pct_seed0.txt").read_text().split()) == len(CLASSES)


def test_bad_arguments_are_one_line(tmp_path, capsys):
    assert digits.main(["--out", str(tmp_path / "x"), "--per-class", "400"]) == 2
    assert "at most" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_box_and_swing_options_change_the_scene_and_are_checked():
    wide = digits.draw_scene(DigitVideoSpec(8, "train", 0, 0, box=(0.28, 0.58), swing=(0.15, 0.20)))
    assert 0.28 * 128 - 1 <= wide.box <= 0.58 * 128 + 1 and 0.15 * 128 <= wide.amplitude <= 0.20 * 128
    assert repr(DigitVideoSpec(8, "train", 0, 0)) != repr(DigitVideoSpec(8, "train", 0, 0, swing=(0.15, 0.2)))
    digits.check_geometry((0.28, 0.58), (0.15, 0.20))
    with pytest.raises(PreprocessError, match="must be below 0.5"):
        digits.check_geometry((0.36, 0.74), (0.15, 0.20))
    with pytest.raises(PreprocessError, match="LO <= HI"):
        digits.check_geometry((0.5, 0.4), (0.1, 0.1))
