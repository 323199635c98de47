"""Read and validate a dataset folder written by `preprocess/` (docs/ARCHITECTURE.md section 1).

Only this module knows the folder layout; loaders receive lists of `VideoRecord`.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

CSV_HEADER = ["path", "label", "num_frames", "fps", "width", "height"]


class DatasetError(ValueError):
    """The folder is not a valid preprocess output, or one of its videos cannot be decoded."""


@dataclass(frozen=True)
class VideoRecord:
    """One row of train.csv / val.csv, with `path` resolved inside the dataset root."""

    path: Path
    rel: str
    label: int
    num_frames: int
    fps: float
    width: int
    height: int


def _not_preprocessed(root: Path, what: str) -> DatasetError:
    return DatasetError(f"{root}: not a preprocess output folder ({what}); run `python -m preprocess ...` first")


def read_classes(root: str | Path) -> list[str]:
    """Class names; line i of classes.txt is label i."""
    root = Path(root)
    f = root / "classes.txt"
    if not f.is_file():
        raise _not_preprocessed(root, "missing classes.txt")
    names = [line.strip() for line in f.read_text().splitlines() if line.strip()]
    if not names:
        raise _not_preprocessed(root, "classes.txt is empty")
    return names


def dataset_facts(root: str | Path) -> dict:
    """What a network trained on `root` carries into its checkpoints, to be used without the folder:
    {"classes": names, "fps": the (constant) frame rate of the training videos}."""
    train = read_subset(root, "train")
    return {"classes": read_classes(root), "fps": float(train[0].fps) if train else None}


def _inside(root: Path, rel: str, where: str) -> Path:
    """Resolve a manifest path, refusing anything that leaves the dataset root."""
    if not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
        raise DatasetError(f"{where}: path {rel!r} must be relative and stay inside {root}")
    full = (root / rel).resolve()
    if not full.is_relative_to(root.resolve()):
        raise DatasetError(f"{where}: path {rel!r} escapes the dataset root {root}")
    return full


def read_subset(root: str | Path, subset: str) -> list[VideoRecord]:
    """Rows of `{root}/{subset}.csv` ("train" or "val") as records, validated.

    Raises DatasetError (one line naming the file and row) on a missing file, bad header, bad value,
    a path escaping the root, or a video file that does not exist.
    """
    root = Path(root)
    num_classes = len(read_classes(root))
    f = root / f"{subset}.csv"
    if not f.is_file():
        raise _not_preprocessed(root, f"missing {subset}.csv")
    records = []
    with f.open(newline="") as fh:
        rows = csv.reader(fh)
        header = next(rows, None)
        if header != CSV_HEADER:
            raise _not_preprocessed(root, f"{f.name} header is {header}, expected {','.join(CSV_HEADER)}")
        for lineno, row in enumerate(rows, start=2):
            where = f"{f}:{lineno}"
            if not row:
                continue
            if len(row) != len(CSV_HEADER):
                raise DatasetError(f"{where}: expected {len(CSV_HEADER)} fields, got {len(row)}")
            try:
                label, num_frames, fps = int(row[1]), int(row[2]), float(row[3])
                width, height = int(row[4]), int(row[5])
            except ValueError as e:
                raise DatasetError(f"{where}: bad value ({e})") from None
            if not 0 <= label < num_classes:
                raise DatasetError(f"{where}: label {label} outside [0, {num_classes}) of classes.txt")
            if num_frames < 1 or fps <= 0 or width < 1 or height < 1:
                raise DatasetError(f"{where}: num_frames, fps, width, height must be positive")
            full = _inside(root, row[0], where)
            if not full.is_file():
                raise DatasetError(f"{where}: video {row[0]} does not exist; rerun preprocess")
            records.append(VideoRecord(full, row[0], label, num_frames, fps, width, height))
    if not records:
        raise DatasetError(f"{f}: no videos listed")
    return records


ALL_LABELED = "all"


def read_split(root: str | Path, split: str) -> tuple[list[VideoRecord], list[VideoRecord]]:
    """(labeled, unlabeled) train records for `splits/{split}.txt`; unlabeled = the rest of train.csv.

    The split name `all` (ALL_LABELED) labels every training video and leaves none unlabeled: the
    supervised ceiling of a study.
    """
    root = Path(root)
    train = read_subset(root, "train")
    if split == ALL_LABELED:
        return train, []
    f = root / "splits" / f"{split}.txt"
    if not f.is_file():
        have = sorted(p.stem for p in (root / "splits").glob("*.txt"))
        raise DatasetError(f"{f}: no such split (available: {', '.join(have) or 'none'})")
    wanted = {line.strip() for line in f.read_text().splitlines() if line.strip()}
    by_rel = {r.rel: r for r in train}
    unknown = sorted(wanted - by_rel.keys())
    if unknown:
        raise DatasetError(f"{f}: {len(unknown)} path(s) not in train.csv, e.g. {unknown[0]!r}")
    if not wanted:
        raise DatasetError(f"{f}: split lists no videos")
    labeled = [r for r in train if r.rel in wanted]
    unlabeled = [r for r in train if r.rel not in wanted]
    return labeled, unlabeled
