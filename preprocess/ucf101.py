"""UCF-101 (official download) -> dataset folder.

    python -m preprocess.ucf101 SRC --lists LISTS_DIR --out OUT [--split 1] [--workers N] [--limit N]
    python -m preprocess.ucf101 SRC --lists LISTS_DIR --out OUT --shard K/N    # one of N runs, K = 0..N-1
    python -m preprocess.ucf101 SRC --lists LISTS_DIR --out OUT --merge        # join the N shards

SRC is the official `UCF-101/<Class>/v_<Class>_gXX_cYY.avi` tree (SRC may also be the folder holding
`UCF-101/`); LISTS_DIR holds `classInd.txt`, `trainlist0N.txt`, `testlist0N.txt` of `UCF101TrainTestSplits`.
The list files have CRLF line ends; classInd is 1-based ("1 ApplyEyeMakeup"), labels here are 0-based.
Output: videos/<Class>/<name>.webm, 25 fps by default; splits 1pct (1 per class) and 10pct (10 per class)
for seeds 0, 1, 2. A listed file that is missing, or whose case differs from the list, is looked up once
more case-insensitively (some mirrors lower-case names), else it becomes a row of failures.csv.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path, PurePosixPath

from preprocess import PreprocessError
from preprocess.cli import add_encode_args, add_shard_args, run_cli, settings_from_args, shard_from_args
from preprocess.dataset_writer import Job, Summary, build_dataset

SPLITS = {"1pct": 1, "10pct": 10}


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise PreprocessError(f"list file not found: {path}")
    text = path.read_text(encoding="utf-8-sig")  # tolerate a BOM; splitlines drops the CRs
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_class_index(path: Path) -> list[str]:
    """classInd.txt ("1 ApplyEyeMakeup" per line) -> class names, index i = label i (0-based)."""
    entries = {}
    for line in _lines(path):
        parts = line.split()
        if len(parts) != 2 or not parts[0].isdigit():
            raise PreprocessError(f"{path}: malformed line {line!r} (expected 'INDEX ClassName')")
        entries[int(parts[0])] = parts[1]
    if sorted(entries) != list(range(1, len(entries) + 1)):
        raise PreprocessError(f"{path}: class indices are not 1..{len(entries)}")
    return [entries[i] for i in range(1, len(entries) + 1)]


def read_video_list(path: Path) -> list[str]:
    """trainlist/testlist -> relative paths 'Class/v_Class_gXX_cYY.avi' (the label column is ignored:
    the class folder determines the label, and testlists have no label)."""
    seen, out = set(), []
    for line in _lines(path):
        rel = line.split()[0].replace("\\", "/")
        if rel not in seen:
            seen.add(rel)
            out.append(rel)
    return out


def _video_root(src: Path, classes: list[str]) -> Path:
    if not src.is_dir():
        raise PreprocessError(f"SRC is not a folder: {src}")
    if not (src / classes[0]).is_dir() and (src / "UCF-101").is_dir():
        return src / "UCF-101"
    return src


def make_jobs(src: Path, lists: Path, *, split: int, ext: str, limit: int | None = None
              ) -> tuple[list[str], list[Job], list[tuple[str, str]]]:
    """Classes, encoding jobs and (source, reason) failures found while reading the lists."""
    classes = read_class_index(lists / "classInd.txt")
    label_of = {c: i for i, c in enumerate(classes)}
    root = _video_root(src, classes)
    lower_index: dict[str, Path] | None = None
    jobs, failures = [], []
    for subset, name in (("train", f"trainlist{split:02d}.txt"), ("val", f"testlist{split:02d}.txt")):
        for rel in read_video_list(lists / name)[:limit]:
            parts = PurePosixPath(rel).parts
            if len(parts) != 2 or parts[0] not in label_of:
                failures.append((rel, f"{name}: not a '<Class>/<file>' entry of a class in classInd.txt"))
                continue
            path = root / rel
            if not path.is_file():
                if lower_index is None:  # walk SRC once, only if some listed name does not match
                    lower_index = {os.path.relpath(os.path.join(d, f), root).lower(): Path(d, f)
                                   for d, _, files in os.walk(root) for f in files}
                path = lower_index.get(rel.lower(), path)
            stem = PurePosixPath(parts[1]).stem
            jobs.append(Job(source=rel, rel=f"videos/{parts[0]}/{stem}{ext}", label=label_of[parts[0]],
                            subset=subset, src_path=path))
    return classes, jobs, failures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m preprocess.ucf101", description=__doc__.split("\n\n")[0])
    p.add_argument("src", type=Path, help="the UCF-101 video tree")
    p.add_argument("--lists", type=Path, required=True, help="folder with classInd.txt, trainlist0N.txt ...")
    p.add_argument("--out", type=Path, required=True, help="dataset folder to write")
    p.add_argument("--split", type=int, choices=(1, 2, 3), default=1, help="official train/test split")
    add_shard_args(p)
    add_encode_args(p, fps=25)
    args = p.parse_args(argv)

    def build() -> Summary:
        settings, shard = settings_from_args(args), shard_from_args(args)
        if not args.lists.is_dir():
            raise PreprocessError(f"--lists is not a folder: {args.lists}")
        classes, jobs, failures = make_jobs(args.src, args.lists, split=args.split, ext=settings.ext,
                                            limit=args.limit)
        return build_dataset(args.out, dataset="ucf101", classes=classes, jobs=jobs, settings=settings,
                             workers=args.workers, splits=SPLITS, pre_failures=failures, shard=shard,
                             merge_only=args.merge,
                             extra_meta={"source": f"UCF-101 official split {args.split}",
                                         "limit": args.limit})

    return run_cli(build)


if __name__ == "__main__":
    from preprocess.entry import run_main

    run_main(main)
