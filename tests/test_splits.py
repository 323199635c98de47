"""preprocess.splits: balanced and category-wise labeled subsets, deterministic and disjoint from val."""
from __future__ import annotations

import csv
import json
import random
from collections import Counter
from pathlib import Path

import pytest

from preprocess import splits

SIZES = [12, 3, 20, 10, 7]  # training videos per class
ROWS = [(f"videos/c{c}/v{i:02d}.webm", c) for c, n in enumerate(SIZES) for i in range(n)]


def labels_of(paths: list[str]) -> Counter:
    label = dict(ROWS)
    return Counter(label[p] for p in paths)


def test_balanced_counts_and_short_classes():
    paths, short = splits.sample_split(ROWS, num_classes=5, per_class=10, seed=0)
    assert labels_of(paths) == Counter({0: 10, 1: 3, 2: 10, 3: 10, 4: 7})
    assert short == [1, 4]
    assert paths == sorted(set(paths))


def test_deterministic_order_independent_and_nested():
    a, _ = splits.sample_split(ROWS, num_classes=5, per_class=6, seed=1)
    shuffled = ROWS[:]
    random.Random(0).shuffle(shuffled)
    assert splits.sample_split(shuffled, num_classes=5, per_class=6, seed=1)[0] == a
    assert splits.sample_split(ROWS, num_classes=5, per_class=6, seed=2)[0] != a
    # a class's pick ignores the other classes: dropping class 2 leaves the others unchanged
    without = [r for r in ROWS if r[1] != 2]
    kept = [p for p in a if "/c2/" not in p]
    assert splits.sample_split(without, num_classes=5, per_class=6, seed=1)[0] == kept
    one, _ = splits.sample_split(ROWS, num_classes=5, per_class=1, seed=1)
    assert set(one) <= set(a)


def test_every_video_equally_likely():
    rows = [(f"v{i}", 0) for i in range(10)]
    picks = Counter(splits.sample_split(rows, num_classes=1, per_class=1, seed=s)[0][0] for s in range(2000))
    assert len(picks) == 10 and all(130 < n < 270 for n in picks.values()), picks  # expected 200 each


def test_category_wise_is_proportional_with_the_same_total():
    quotas = splits.class_quotas(dict(enumerate(SIZES)), 2, "category-wise")
    assert sum(quotas.values()) == 2 * len(SIZES)
    total = sum(SIZES)
    for c, n in enumerate(SIZES):
        assert abs(quotas[c] - 10 * n / total) < 1
    paths, short = splits.sample_split(ROWS, num_classes=5, per_class=2, seed=0, sampling="category-wise")
    assert labels_of(paths) == Counter({c: q for c, q in quotas.items() if q}) and not short
    # asking for more than exists gives everything
    assert sum(splits.class_quotas({0: 2, 1: 1}, 5, "category-wise").values()) == 3


def write_dataset(out: Path) -> None:
    out.mkdir()
    (out / "classes.txt").write_text("".join(f"class{c}\n" for c in range(len(SIZES))))
    for name, rows in (("train", ROWS), ("val", [("videos/val/x.webm", 0)])):
        with open(out / f"{name}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label", "num_frames", "fps", "width", "height"])
            w.writerows([(p, c, 80, 25, 80, 64) for p, c in rows])
    (out / "meta.json").write_text(json.dumps({"splits": {"1pct": {"per_class": 6, "sampling": "balanced"}}}))


def test_cli_names_writes_and_records(tmp_path, capsys):
    out = tmp_path / "ds"
    write_dataset(out)
    args = [str(out), "--per-class", "6", "--seeds", "0", "1", "--sampling", "category-wise"]
    assert splits.main(args) == 0
    cw = (out / "splits" / "1pct_cw_seed1.txt").read_text().splitlines()
    assert len(cw) == 6 * len(SIZES) and "videos/val/x.webm" not in cw
    assert splits.main([str(out), "--per-class", "3", "--seeds", "4"]) == 0
    assert "fewer than 3" not in capsys.readouterr().err
    assert len((out / "splits" / "3perclass_seed4.txt").read_text().splitlines()) == 15
    assert splits.main([str(out), "--per-class", "8", "--seeds", "0", "--name", "big"]) == 0
    assert "2 classes have fewer than 8" in capsys.readouterr().err
    meta = json.loads((out / "meta.json").read_text())
    assert meta["splits"]["1pct_cw"] == {"per_class": 6, "sampling": "category-wise", "seeds": [0, 1],
                                         "num_videos": [30, 30]}
    assert set(meta["splits"]) == {"1pct", "1pct_cw", "3perclass", "big"}


@pytest.mark.parametrize("args", [["--per-class", "1"], ["--per-class", "0"]])
def test_cli_user_errors(tmp_path, capsys, args):
    assert splits.main([str(tmp_path / "missing"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
