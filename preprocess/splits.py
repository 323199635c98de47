"""Labeled subsets ("splits") of a dataset folder's train.csv, as in the paper (Sec. 4.1, Appendix D).

    python -m preprocess.splits OUT --per-class 6 --seeds 0 1 2 [--name 1pct] [--sampling category-wise]

- balanced (the paper's default): `per_class` videos from every class.
- category-wise (Appendix D): the same total, `per_class * num_classes`, split over the classes in
  proportion to their sizes in train.csv (largest-remainder rounding, ties to the lower label).

Determinism: a class's videos are sorted by path and shuffled by a numpy Generator seeded with
`[seed, label]`, and the first k are taken. So a split depends only on (seed, class, the class's paths),
not on the machine, the order of train.csv or the other classes, and for one seed the 1-per-class split
is contained in the 10-per-class one. A class with fewer videos than asked gives all of them (warning).
Splits are drawn from train.csv only, so they never contain a validation video.
Writes OUT/splits/{name}_seed{seed}.txt (one path per line) and records the split in meta.json.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from preprocess import PreprocessError
from preprocess.fsutil import atomic_write_text

SAMPLINGS = ("balanced", "category-wise")


def class_quotas(sizes: dict[int, int], per_class: int, sampling: str) -> dict[int, int]:
    """Number of labeled videos per class, capped at the class size."""
    if sampling == "balanced":
        return {c: min(per_class, n) for c, n in sizes.items()}
    if sampling != "category-wise":
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    total_videos = sum(sizes.values())
    total = min(per_class * len(sizes), total_videos)
    if total_videos == 0:
        return {c: 0 for c in sizes}
    exact = {c: total * n / total_videos for c, n in sizes.items()}
    quotas = {c: int(q) for c, q in exact.items()}
    by_remainder = sorted(sizes, key=lambda c: (-(exact[c] - quotas[c]), c))
    for c in by_remainder[: total - sum(quotas.values())]:
        quotas[c] += 1
    return quotas


def sample_split(rows: list[tuple[str, int]], *, num_classes: int, per_class: int, seed: int,
                 sampling: str = "balanced") -> tuple[list[str], list[int]]:
    """Pick the labeled videos from (path, label) rows of train.csv.

    Returns the sorted chosen paths and the labels whose class had fewer videos than its quota.
    """
    by_class: dict[int, list[str]] = defaultdict(list)
    for path, label in rows:
        by_class[label].append(path)
    sizes = {c: len(by_class[c]) for c in range(num_classes)}
    quotas = class_quotas(sizes, per_class, sampling)
    # Category-wise quotas never exceed a class's size; only balanced ones can fall short.
    short = [c for c in range(num_classes) if sampling == "balanced" and sizes[c] < per_class]
    chosen: list[str] = []
    for c in range(num_classes):
        paths = sorted(by_class[c])
        order = np.random.default_rng([seed, c]).permutation(len(paths))
        chosen += [paths[i] for i in order[: quotas[c]]]
    return sorted(chosen), short


def read_train(out: Path) -> tuple[list[tuple[str, int]], int]:
    """(path, label) rows of OUT/train.csv and the number of classes of OUT/classes.txt."""
    train, classes = out / "train.csv", out / "classes.txt"
    for f in (train, classes):
        if not f.is_file():
            raise PreprocessError(f"{f} not found: is {out} a preprocess output folder?")
    with open(train, newline="") as f:
        rows = [(r["path"], int(r["label"])) for r in csv.DictReader(f)]
    num_classes = len(classes.read_text().splitlines())
    return rows, num_classes


def write_splits(out: Path, rows: list[tuple[str, int]], *, num_classes: int, name: str, per_class: int,
                 seeds: list[int], sampling: str = "balanced") -> dict:
    """Write OUT/splits/{name}_seed{s}.txt for every seed; returns the meta.json entry for `name`."""
    (out / "splits").mkdir(parents=True, exist_ok=True)
    sizes = []
    for seed in seeds:
        paths, short = sample_split(rows, num_classes=num_classes, per_class=per_class, seed=seed,
                                    sampling=sampling)
        atomic_write_text(out / "splits" / f"{name}_seed{seed}.txt", "".join(p + "\n" for p in paths))
        sizes.append(len(paths))
    if short:
        listed = ", ".join(str(c) for c in short[:10]) + (" ..." if len(short) > 10 else "")
        print(f"warning: split {name}: {len(short)} classes have fewer than {per_class} training videos "
              f"and give all they have (labels {listed})", file=sys.stderr)
    return {"per_class": per_class, "sampling": sampling, "seeds": list(seeds), "num_videos": sizes}


def default_name(meta: dict, per_class: int, sampling: str) -> str:
    """The dataset's own name for this size ('1pct' for 6 per class on K400), else '{N}perclass'."""
    base = next((n for n, e in meta.get("splits", {}).items()
                 if e.get("per_class") == per_class and e.get("sampling", "balanced") == "balanced"),
                f"{per_class}perclass")
    return base if sampling == "balanced" else f"{base}_cw"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m preprocess.splits", description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="a preprocess output folder")
    p.add_argument("--per-class", type=int, required=True, help="labeled videos per class")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--name", help="split name (default: the dataset's name for this size, e.g. 1pct)")
    p.add_argument("--sampling", choices=SAMPLINGS, default="balanced")
    args = p.parse_args(argv)
    try:
        if args.per_class < 1:
            raise PreprocessError("--per-class must be at least 1")
        rows, num_classes = read_train(args.out)
        meta_path = args.out / "meta.json"
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
        name = args.name or default_name(meta, args.per_class, args.sampling)
        entry = write_splits(args.out, rows, num_classes=num_classes, name=name, per_class=args.per_class,
                             seeds=args.seeds, sampling=args.sampling)
    except PreprocessError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if meta:
        meta.setdefault("splits", {})[name] = entry
        atomic_write_text(meta_path, json.dumps(meta, indent=2) + "\n")
    print(f"wrote {len(args.seeds)} splits {name}_seed*.txt with {entry['num_videos']} videos "
          f"to {args.out / 'splits'}")
    return 0


if __name__ == "__main__":
    from preprocess.entry import run_main

    run_main(main)
