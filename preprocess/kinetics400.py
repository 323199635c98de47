"""Kinetics-400 (official annotations + downloaded clips) -> dataset folder.

    python -m preprocess.kinetics400 SRC --annotations ANN_DIR --out OUT [--workers N] [--limit N]
    python -m preprocess.kinetics400 SRC --annotations ANN_DIR --out OUT --shard K/N  # one of N, K = 0..N-1
    python -m preprocess.kinetics400 SRC --annotations ANN_DIR --out OUT --merge      # join the N shards

ANN_DIR holds the official `train.csv` and `val.csv` (columns label,youtube_id,time_start,time_end,split
and optionally is_cc). A clip is the file named `<youtube_id>_<time_start:06d>_<time_end:06d>.<any ext>`
anywhere under SRC: per-label folders of the common downloaders (label names with spaces included), or a
flat folder. SRC is walked once. classes.txt = the sorted unique labels of train.csv.
Output: videos/<train|val>/<label, spaces as _>/<clip>.webm, 30 fps by default; splits 1pct (6 per class)
and 10pct (60 per class) for seeds 0, 1, 2 (the paper's Sec. 4.1).
"""
from __future__ import annotations

import argparse
import csv
import os
import re
import sys
from pathlib import Path

from preprocess import PreprocessError
from preprocess.cli import add_encode_args, add_shard_args, run_cli, settings_from_args, shard_from_args
from preprocess.dataset_writer import Job, Summary, build_dataset

SPLITS = {"1pct": 6, "10pct": 60}
REQUIRED = ("label", "youtube_id", "time_start", "time_end")


def read_annotations(path: Path) -> list[tuple[str, str]]:
    """Official CSV -> (label, clip name) rows, in file order."""
    if not path.is_file():
        raise PreprocessError(f"annotation file not found: {path}")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            raise PreprocessError(f"{path}: missing columns {missing} (has {reader.fieldnames})")
        rows = []
        for i, r in enumerate(reader, start=2):
            try:
                name = f"{r['youtube_id']}_{int(float(r['time_start'])):06d}_{int(float(r['time_end'])):06d}"
            except (TypeError, ValueError):
                raise PreprocessError(f"{path}:{i}: bad time_start/time_end {r}") from None
            rows.append((r["label"].strip(), name))
    return rows


def index_videos(src: Path) -> tuple[dict[str, Path], int]:
    """Walk SRC once: clip name (file stem) -> path, and the number of duplicate names ignored."""
    if not src.is_dir():
        raise PreprocessError(f"SRC is not a folder: {src}")
    index: dict[str, Path] = {}
    duplicates = 0
    for root, dirs, files in os.walk(src):
        dirs.sort()  # first-found wins, so make "first" the same on every machine
        for f in sorted(files):
            stem, dot, _ = f.rpartition(".")
            if not dot or f.startswith("."):
                continue
            if stem in index:
                duplicates += 1
            else:
                index[stem] = Path(root, f)
    return index, duplicates


def label_folder(label: str) -> str:
    """'passing American football (in game)' -> 'passing_American_football_in_game'."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", label).strip("_") or "_"


def make_jobs(src: Path, annotations: Path, *, ext: str, limit: int | None = None
              ) -> tuple[list[str], list[Job], list[tuple[str, str]]]:
    """Classes, encoding jobs and (source, reason) failures found while matching files to annotations."""
    train = read_annotations(annotations / "train.csv")
    val = read_annotations(annotations / "val.csv")
    classes = sorted({label for label, _ in train})
    label_of = {c: i for i, c in enumerate(classes)}
    index, duplicates = index_videos(src)
    if duplicates:
        print(f"warning: {duplicates} clip names occur more than once under {src}; using the first",
              file=sys.stderr)
    jobs, failures, seen = [], [], set()
    for subset, rows in (("train", train), ("val", val)):
        for label, name in rows[:limit]:
            if name in seen:
                continue
            seen.add(name)
            if label not in label_of:
                failures.append((name, f"{subset}: label {label!r} is not a class of train.csv"))
            elif name not in index:
                failures.append((name, "missing: no file with this name under SRC"))
            else:
                path = index[name]
                jobs.append(Job(source=os.path.relpath(path, src),
                                rel=f"videos/{subset}/{label_folder(label)}/{name}{ext}",
                                label=label_of[label], subset=subset, src_path=path))
    return classes, jobs, failures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m preprocess.kinetics400", description=__doc__.split("\n\n")[0])
    p.add_argument("src", type=Path, help="folder holding the downloaded clips (any layout)")
    p.add_argument("--annotations", type=Path, required=True, help="folder with train.csv and val.csv")
    p.add_argument("--out", type=Path, required=True, help="dataset folder to write")
    add_shard_args(p)
    add_encode_args(p, fps=30)
    args = p.parse_args(argv)

    def build() -> Summary:
        settings, shard = settings_from_args(args), shard_from_args(args)
        classes, jobs, failures = make_jobs(args.src, args.annotations, ext=settings.ext, limit=args.limit)
        return build_dataset(args.out, dataset="kinetics400", classes=classes, jobs=jobs, settings=settings,
                             workers=args.workers, splits=SPLITS, pre_failures=failures, shard=shard,
                             merge_only=args.merge,
                             extra_meta={"source": "Kinetics-400 official annotations", "limit": args.limit})

    return run_cli(build)


if __name__ == "__main__":
    from preprocess.entry import run_main

    run_main(main)
