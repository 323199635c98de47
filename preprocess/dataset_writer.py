"""Convert a list of jobs into a dataset folder: parallel re-encoding, resume, manifests, splits, meta.

Every dataset (UCF-101, Kinetics-400, synthetic) builds a list of `Job`s and calls `build_dataset`, so all
three produce the same format (docs/ARCHITECTURE.md section 1).

Resume: OUT/.state.jsonl holds one record per finished video (output size and mtime, the settings and
source fingerprints, the measured frame count). A rerun skips a job whose output still matches its record;
an output without a matching record (a kill between rename and record, a lost state file) is decoded once
more and reused if it is complete and has the expected format, else re-encoded. Videos are written under a
hidden temp name and renamed only after they decode completely, so a kill -9 never leaves a partial file
under a final name; leftovers are deleted on the next run. Manifests are written atomically at the end.
A failed video is retried by the next run. Sharded runs (`shard=`, preprocess/shards.py) keep their own
records, failures included, and an unsharded run joins them.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import sys
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from tqdm import tqdm

from preprocess import PreprocessError
from preprocess.encode import EncodeError, EncodeSettings, VideoInfo, encode_file, encode_frames, \
    ffmpeg_version, probe_source, verify_output
from preprocess import shards
from preprocess.fsutil import atomic_write_csv, atomic_write_text, folder_lock
from preprocess.shards import Shard
from preprocess.splits import write_splits

MANIFEST_HEADER = ["path", "label", "num_frames", "fps", "width", "height"]
STATE_FILE = ".state.jsonl"


@dataclass(frozen=True)
class Job:
    """One output video. `source` names the input in failures.csv (relative to SRC, never absolute)."""

    source: str
    rel: str  # output path relative to OUT, under videos/
    label: int
    subset: str  # "train" | "val"
    src_path: Path | None = None  # an input file, or
    make_frames: Callable[[], np.ndarray] | None = None  # generated frames (T, H, W, 3) uint8
    source_key: str = ""  # what identifies the input's content (generated videos: their parameters)
    expected_frames: int | None = None  # generated videos: how many frames make a complete output

    def input_key(self) -> str:
        if self.src_path is not None:
            try:  # size, not mtime: copying a dataset must not force re-encoding it
                return f"{self.source}|{self.src_path.stat().st_size}"
            except OSError:
                return f"{self.source}|missing"
        return f"{self.source}|{self.source_key}"


@dataclass(frozen=True)
class Outcome:
    job: Job
    status: str  # "converted" | "skipped" | "failed"
    info: VideoInfo | None = None
    reason: str = ""


def fps_text(fps: object) -> str:
    """25 -> '25', 30000/1001 -> '29.97002997' (as written in the manifests)."""
    return format(float(fps), ".10g")


def process_job(job: Job, out: Path, settings: EncodeSettings, reuse_existing: bool) -> Outcome:
    """Worker: make OUT/job.rel (or reuse a complete existing one). Never raises for a bad video."""
    dst = out / job.rel
    if reuse_existing and dst.is_file():
        try:
            if job.src_path is not None:
                expected_s = probe_source(job.src_path)[0]
            else:
                expected_s = job.expected_frames / float(settings.fps) if job.expected_frames else None
            return Outcome(job, "skipped", verify_output(dst, settings, expected_s))
        except EncodeError:
            pass  # broken, incomplete or made with other settings: encode it again
    try:
        if job.make_frames is not None:
            info = encode_frames(job.make_frames(), dst, settings)
        elif job.src_path is not None:
            info = encode_file(job.src_path, dst, settings)
        else:
            raise EncodeError("job has no input")
        return Outcome(job, "converted", info)
    except EncodeError as e:
        return Outcome(job, "failed", reason=str(e))
    except Exception as e:  # noqa: BLE001 -- one odd video must not stop a 240k-video run
        return Outcome(job, "failed", reason=f"{type(e).__name__}: {e}")


def _read_records(path: Path) -> dict[str, dict]:
    records: dict[str, dict] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
                records[rec["rel"]] = rec
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line (kill -9)
    return records


class _State:
    """Append-only record of finished videos (and, with `keep_failures`, of failed ones) in `path`.

    `merge`: record files whose records become this one's (a join takes in the shards' files);
    `fallback`: record files only read, for jobs this file has no record of (a shard reads OUT/.state.jsonl).
    """

    def __init__(self, path: Path, *, merge: Sequence[Path] = (), fallback: Sequence[Path] = (),
                 keep_failures: bool = False):
        self.path = path
        self.keep_failures = keep_failures
        self.records: dict[str, dict] = {}
        for p in (path, *merge):
            self.records.update(_read_records(p))
        self.fallback: dict[str, dict] = {}
        for p in fallback:
            self.fallback.update(_read_records(p))
        self._f = open(self.path, "a")

    def lookup(self, job: Job, out: Path, fingerprint: str, *, reuse_failures: bool = False) -> Outcome | bool:
        """The outcome if the job is done (a finished output, or a recorded failure when `reuse_failures`);
        else whether an existing output may be reused after decoding it (False: known to be outdated)."""
        rec = self.records.get(job.rel) or self.fallback.get(job.rel)
        if rec is None:
            return True
        if rec.get("settings") != fingerprint or rec.get("input") != job.input_key():
            return False
        if "failed" in rec:
            return Outcome(job, "failed", reason=rec["failed"]) if reuse_failures else True
        try:
            st = (out / job.rel).stat()
        except OSError:
            return True
        if st.st_size != rec["size"] or st.st_mtime_ns != rec["mtime_ns"]:
            return True
        return Outcome(job, "skipped", VideoInfo(rec["num_frames"], rec["width"], rec["height"],
                                                 rec.get("fps", 0.0)))

    def _append(self, rec: dict) -> None:
        self.records[rec["rel"]] = rec
        self._f.write(json.dumps(rec) + "\n")
        self._f.flush()

    def add(self, job: Job, out: Path, fingerprint: str, info: VideoInfo) -> None:
        st = (out / job.rel).stat()
        self._append({"rel": job.rel, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "settings": fingerprint,
                      "input": job.input_key(), **asdict(info)})

    def add_failure(self, job: Job, fingerprint: str, reason: str) -> None:
        if self.keep_failures:  # a shard's failures are final for the join, which would else retry them
            self._append({"rel": job.rel, "settings": fingerprint, "input": job.input_key(), "failed": reason})

    def compact(self) -> None:
        """Rewrite with one line per video (records of jobs outside this run are kept for later runs)."""
        self._f.close()
        kept = [r for r in sorted(self.records) if self.keep_failures or "failed" not in self.records[r]]
        atomic_write_text(self.path, "".join(json.dumps(self.records[r]) + "\n" for r in kept))


class UnfinishedError(PreprocessError):
    """Jobs that no record covers, when the caller asked not to encode any (a strict join)."""

    def __init__(self, jobs: list[Job]):
        super().__init__(f"{len(jobs)} videos are not finished")
        self.jobs = jobs


def _remove_partials(out: Path, owned: set[str] | None = None) -> int:
    """Delete temp files left under OUT/videos by a killed run: all of them (the exclusive folder lock
    guarantees no other run owns them), or only those of the outputs in `owned` (a shard's own videos)."""
    n = 0
    for root, _, files in os.walk(out / "videos"):
        for name in files:
            cut = name.rfind(".partial-")
            if not name.startswith(".") or cut < 0:
                continue
            final = os.path.relpath(os.path.join(root, name[1:cut]), out).replace(os.sep, "/")
            if owned is None or final in owned:
                os.unlink(os.path.join(root, name))
                n += 1
    return n


def _report_removed(n: int) -> None:
    if n:
        print(f"removed {n} partial files of an interrupted run", file=sys.stderr)


def run_jobs(out: Path, jobs: list[Job], settings: EncodeSettings, *, workers: int,
             desc: str = "encode", state: _State | None = None, reuse_failures: bool = False,
             encode_missing: bool = True) -> list[Outcome]:
    """Convert every job (in parallel over `workers` processes); skipped ones come from the state file
    (default OUT/.state.jsonl). `encode_missing=False`: raise UnfinishedError instead of encoding."""
    state = state or _State(out / STATE_FILE)
    fingerprint = settings.fingerprint()
    outcomes: list[Outcome] = []
    todo: list[tuple[Job, bool]] = []
    try:
        for job in jobs:
            found = state.lookup(job, out, fingerprint, reuse_failures=reuse_failures)
            if isinstance(found, Outcome):
                outcomes.append(found)
            else:
                todo.append((job, found and (out / job.rel).is_file()))
        if todo and not encode_missing:
            raise UnfinishedError([job for job, _ in todo])
    except BaseException:
        state.compact()
        raise
    bar = tqdm(total=len(jobs), initial=len(outcomes), desc=desc, unit="video", dynamic_ncols=True,
               mininterval=0.5, file=sys.stderr)
    failed = sum(o.status == "failed" for o in outcomes)

    def record(o: Outcome) -> None:
        nonlocal failed
        outcomes.append(o)
        if o.status == "failed":
            failed += 1
            bar.set_postfix(failed=failed, refresh=False)
            state.add_failure(o.job, fingerprint, o.reason)
        elif o.info is not None:
            state.add(o.job, out, fingerprint, o.info)
        bar.update(1)

    try:
        if workers <= 1:
            for job, reuse in todo:
                record(process_job(job, out, settings, reuse))
        else:
            # spawn: workers must not inherit the parent's threads (tqdm's monitor) through fork.
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
                pending: set[Future] = set()
                queue = iter(todo)
                while True:
                    # A bounded window keeps memory flat for 240k jobs and frames of generated videos.
                    for job, reuse in queue:
                        pending.add(pool.submit(process_job, job, out, settings, reuse))
                        if len(pending) >= 4 * workers:
                            break
                    if not pending:
                        break
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        record(fut.result())
    finally:
        bar.close()
        state.compact()
    return outcomes


def tool_versions() -> dict[str, str]:
    import av
    import imageio_ffmpeg
    import tqdm as tqdm_mod

    return {"python": platform.python_version(), "ffmpeg": ffmpeg_version(),
            "imageio_ffmpeg": imageio_ffmpeg.__version__, "pyav": av.__version__, "numpy": np.__version__,
            "tqdm": tqdm_mod.__version__}


@dataclass(frozen=True)
class Summary:
    converted: int
    skipped: int
    failed: int

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def __str__(self) -> str:
        return f"converted {self.converted}, skipped {self.skipped}, failed {self.failed}"


def build_dataset(out: Path, *, dataset: str, classes: list[str], jobs: list[Job], settings: EncodeSettings,
                  workers: int, splits: dict[str, int], seeds: tuple[int, ...] = (0, 1, 2),
                  pre_failures: list[tuple[str, str]] = (), extra_meta: dict | None = None,
                  shard: Shard | None = None, merge_only: bool = False) -> Summary:
    """Encode `jobs` into OUT/videos and write every manifest of the dataset folder.

    `splits` maps a split name to labeled videos per class ({"1pct": 1, "10pct": 10});
    `pre_failures` are (source, reason) rows found before encoding (e.g. a listed file not found).
    `shard`: encode only that shard's jobs and write no manifest; without it, the results of shards that
    ran on OUT are joined; `merge_only`: join without encoding anything (preprocess/shards.py).
    """
    for job in jobs:
        rel = Path(job.rel)
        if rel.is_absolute() or ".." in rel.parts or rel.parts[0] != "videos":
            raise PreprocessError(f"output path must stay under videos/: {job.rel}")
    if len({j.rel for j in jobs}) != len(jobs):
        raise PreprocessError("two jobs write the same output path")
    if shard is not None:
        return _encode_shard(out, dataset, jobs, settings, workers, shard)
    with folder_lock(out):
        shard_states = shards.state_files(out)
        if merge_only and not shard_states:
            raise PreprocessError(f"--merge: {out} holds no shard results (run the --shard K/N runs first)")
        if not merge_only:
            _report_removed(_remove_partials(out))
        state = _State(out / STATE_FILE, merge=shard_states)
        try:
            outcomes = run_jobs(out, jobs, settings, workers=workers, desc=dataset, state=state,
                                reuse_failures=bool(shard_states), encode_missing=not merge_only)
        except UnfinishedError as e:
            raise PreprocessError(
                f"--merge: {len(e.jobs)} videos are in no shard's results (e.g. {e.jobs[0].rel}); rerun "
                f"shard {', '.join(shards.missing_shards(out, [j.rel for j in e.jobs]))}, or run without "
                f"--merge to encode them here") from None
        if merge_only:  # only now: a refused --merge leaves OUT as it was
            _report_removed(_remove_partials(out))
        summary = _write_manifests(out, dataset=dataset, classes=classes, outcomes=outcomes, settings=settings,
                                   splits=splits, seeds=seeds, pre_failures=pre_failures, extra_meta=extra_meta)
        if shard_states:
            shards.remove_files(out)  # their records are in OUT/.state.jsonl now
            print(f"joined {len(shard_states)} shards", file=sys.stderr)
    return summary


def _encode_shard(out: Path, dataset: str, jobs: list[Job], settings: EncodeSettings, workers: int,
                  shard: Shard) -> Summary:
    mine = [j for j in jobs if shard.owns(j.rel)]
    with shards.shard_lock(out, shard):
        _report_removed(_remove_partials(out, owned={j.rel for j in mine}))
        state = _State(shards.state_path(out, shard), fallback=[out / STATE_FILE], keep_failures=True)
        outcomes = run_jobs(out, mine, settings, workers=workers, desc=f"{dataset} {shard}", state=state)
    print(f"shard {shard}: {len(mine)} of {len(jobs)} videos; once every shard has finished, rerun with "
          f"--merge instead of --shard to write the manifests", file=sys.stderr)
    n = {s: sum(o.status == s for o in outcomes) for s in ("converted", "skipped", "failed")}
    return Summary(n["converted"], n["skipped"], n["failed"])


def _write_manifests(out: Path, *, dataset: str, classes: list[str], outcomes: list[Outcome],
                     settings: EncodeSettings, splits: dict[str, int], seeds: tuple[int, ...],
                     pre_failures: list[tuple[str, str]], extra_meta: dict | None) -> Summary:
    rows = {"train": [], "val": []}
    failures = list(pre_failures)
    for o in outcomes:
        if o.status == "failed":
            failures.append((o.job.source, o.reason))
        else:
            i = o.info
            rows[o.job.subset].append((o.job.rel, o.job.label, i.num_frames, fps_text(settings.fps),
                                       i.width, i.height))
    for subset, r in rows.items():
        r.sort()
        atomic_write_csv(out / f"{subset}.csv", MANIFEST_HEADER, r)
    atomic_write_text(out / "classes.txt", "".join(c + "\n" for c in classes))
    atomic_write_csv(out / "failures.csv", ["source", "reason"], sorted(failures))
    train_rows = [(r[0], r[1]) for r in rows["train"]]
    split_meta = {name: write_splits(out, train_rows, num_classes=len(classes), name=name,
                                     per_class=k, seeds=list(seeds))
                  for name, k in splits.items()}
    meta = {
        "dataset": dataset,
        **(extra_meta or {}),
        "codec": settings.codec, "container": settings.ext.lstrip("."), "fps": fps_text(settings.fps),
        "gop": settings.gop, "short_side": settings.short_side, "crf": settings.quality,
        "b_frames": 0, "audio": False, "pixel_format": "yuv420p",
        "counts": {"classes": len(classes), "train": len(rows["train"]), "val": len(rows["val"]),
                   "failed": len(failures)},
        "splits": split_meta,
        "tools": tool_versions(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_text(out / "meta.json", json.dumps(meta, indent=2) + "\n")
    n = {s: sum(o.status == s for o in outcomes) for s in ("converted", "skipped")}
    return Summary(n["converted"], n["skipped"], len(failures))
