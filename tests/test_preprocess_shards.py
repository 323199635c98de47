"""preprocess --shard K/N and --merge: N concurrent shard runs + a join give what one unsharded run gives.

Inputs: the fake UCF-101 and Kinetics-400 downloads of preprocess/testing.py (with their broken videos).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from preprocess import kinetics400, ucf101
from preprocess.fsutil import folder_lock
from preprocess.shards import SHARD_DIR, Shard, shard_lock, shard_of
from preprocess.testing import TEST_SHORT_SIDE, make_k400_layout, make_ucf_layout, read_csv

REPO = Path(__file__).resolve().parents[1]
UCF_FAILING = {"videos/Basketball/v_Basketball_g02_c01.webm", "videos/Basketball/v_Basketball_g03_c01.webm",
               "videos/YoYo/v_YoYo_g01_c01.webm"}  # truncated, zero-length, missing


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> dict[str, tuple[str, list[str]]]:
    """dataset -> (module, the command's arguments before --out)."""
    root, lists = make_ucf_layout(tmp_path_factory.mktemp("ucf"))
    src, ann = make_k400_layout(tmp_path_factory.mktemp("k400"))
    return {"ucf101": ("preprocess.ucf101", [str(root / "UCF-101"), "--lists", str(lists)]),
            "kinetics400": ("preprocess.kinetics400", [str(src), "--annotations", str(ann)])}


def args(layouts: dict, dataset: str, out: Path, *extra: str) -> list[str]:
    return [*layouts[dataset][1], "--out", str(out), "--short-side", TEST_SHORT_SIDE, "--workers", "1", *extra]


def run(dataset: str, argv: list[str]) -> int:
    return {"ucf101": ucf101, "kinetics400": kinetics400}[dataset].main(argv)


def manifests(out: Path) -> dict[str, bytes]:
    names = ["train.csv", "val.csv", "failures.csv", "classes.txt",
             *(f"splits/{n}" for n in sorted(os.listdir(out / "splits")))]
    return {n: (out / n).read_bytes() for n in names}


def videos(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((out / "videos").rglob("*")) if p.is_file()}


def meta_without_date(out: Path) -> dict:
    meta = json.loads((out / "meta.json").read_text())
    meta.pop("date")
    return meta


def summary(stdout: str) -> tuple[int, int, int]:
    """(converted, skipped, failed) of the command's summary line."""
    m = re.search(r"converted (\d+), skipped (\d+), failed (\d+)", stdout)
    assert m, stdout
    return int(m[1]), int(m[2]), int(m[3])


def records(path: Path) -> dict[str, dict]:
    return {r["rel"]: r for r in map(json.loads, path.read_text().splitlines())}


def test_partition_covers_every_video_once_and_ignores_hash_seed():
    rels = [f"videos/c{c}/v_{i:04d}.webm" for c in range(5) for i in range(60)]
    for n in (1, 2, 3, 8):
        owners = [[s for s in range(n) if Shard(s, n).owns(r)] for r in rels]
        assert all(len(o) == 1 for o in owners)
        sizes = [sum(o == [s] for o in owners) for s in range(n)]
        assert min(sizes) > 0.5 * len(rels) / n  # roughly balanced
    code = "import sys; from preprocess.shards import shard_of; print([shard_of(r, 7) for r in sys.argv[1:]])"
    printed = {subprocess.run([sys.executable, "-c", code, *rels[:50]], cwd=REPO, capture_output=True, text=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}, check=True).stdout
               for seed in ("1", "2")}
    assert printed == {str([shard_of(r, 7) for r in rels[:50]]) + "\n"}


@pytest.mark.parametrize("dataset", ["ucf101", "kinetics400"])
def test_two_concurrent_shards_and_merge_equal_one_run(layouts, dataset, tmp_path, capsys):
    whole, sharded = tmp_path / "whole", tmp_path / "sharded"
    assert run(dataset, args(layouts, dataset, whole)) == 1  # both layouts hold broken videos
    converted_whole, _, failed_whole = summary(capsys.readouterr().out)

    module = layouts[dataset][0]
    procs = [subprocess.Popen([sys.executable, "-m", module, *args(layouts, dataset, sharded, "--shard", f"{k}/2")],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for k in (0, 1)]
    results = [(p.wait(), *p.communicate()) for p in procs]
    for code, _, err in results:
        assert code in (0, 1), err
    assert not (sharded / "train.csv").exists()  # a shard writes no manifest
    done = [records(sharded / SHARD_DIR / f"{k}-of-2.state.jsonl") for k in (0, 1)]
    assert done[0] and done[1] and not set(done[0]) & set(done[1])  # each encoded its own videos only
    for k in (0, 1):
        assert all(Shard(k, 2).owns(rel) for rel in done[k])
        has_failures = any("failed" in r for r in done[k].values())
        assert results[k][0] == (1 if has_failures else 0)
    converted = [summary(out)[0] for _, out, _ in results]
    assert sum(converted) == converted_whole

    assert run(dataset, args(layouts, dataset, sharded, "--merge")) == 1
    assert summary(capsys.readouterr().out) == (0, converted_whole, failed_whole)  # the join encodes nothing
    assert manifests(sharded) == manifests(whole)
    assert meta_without_date(sharded) == meta_without_date(whole)
    assert videos(sharded) == videos(whole)  # bit-exact encoder: the same bytes
    assert not (sharded / SHARD_DIR).exists()
    joined = records(sharded / ".state.jsonl")
    assert set(joined) == {rel for d in done for rel, r in d.items() if "failed" not in r}

    # A plain rerun afterwards is an ordinary resume: nothing to encode, same manifests.
    assert run(dataset, args(layouts, dataset, sharded)) == 1
    assert summary(capsys.readouterr().out)[0] == 0
    assert manifests(sharded) == manifests(whole)


@pytest.mark.parametrize("value", ["2/2", "-1/2", "0/0", "a/b", "1", "1/2/3", ""])
def test_bad_shard_values_exit_2_with_one_line(layouts, value, tmp_path, capsys):
    assert run("ucf101", args(layouts, "ucf101", tmp_path / "o", f"--shard={value}")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --shard"), err
    assert not (tmp_path / "o").exists()


def test_merge_without_shards_or_with_shard_exits_2(layouts, tmp_path, capsys):
    for extra in (("--shard", "0/2", "--merge"), ("--merge",)):
        assert run("kinetics400", args(layouts, "kinetics400", tmp_path / "o", *extra)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: --merge"), err
    assert not (tmp_path / "o" / "train.csv").exists()


def test_locks_keep_runs_apart(layouts, tmp_path, capsys):
    out = tmp_path / "o"

    def one_error_line(*extra: str) -> str:
        assert run("ucf101", args(layouts, "ucf101", out, *extra)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        return err[0]

    with shard_lock(out, Shard(0, 2)):  # as if shard 0/2 were running in another process
        assert "shard 0/2 is already running" in one_error_line("--shard", "0/2")
        assert "another preprocess run is writing" in one_error_line("--merge")
        assert "another preprocess run is writing" in one_error_line()
        assert "N=2" in one_error_line("--shard", "1/3")  # other N: the videos would overlap
    assert "N=2" in one_error_line("--shard", "0/3")  # also once it stopped, until joined
    with folder_lock(out):  # as if an unsharded run were writing OUT
        assert "unsharded" in one_error_line("--shard", "1/2")
    assert not list(out.rglob("*.webm"))


def test_merge_refuses_a_missing_shard_and_a_rerun_joins_it(layouts, tmp_path, capsys):
    out = tmp_path / "o"
    src, _, lists = layouts["ucf101"][1]
    rels = [j.rel for j in ucf101.make_jobs(Path(src), Path(lists), split=1, ext=".webm")[1]]
    of_1 = next(r for r in rels if Shard(1, 2).owns(r))
    of_0 = next(r for r in rels if Shard(0, 2).owns(r))
    partials = {}
    for rel in (of_0, of_1):  # leftovers of killed runs
        p = out / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        partials[rel] = p.with_name(f".{p.name}.partial-99999")
        partials[rel].write_bytes(b"half a video")

    shard0 = Shard(0, 2)
    expect = 1 if any(shard0.owns(r) for r in UCF_FAILING) else 0
    assert run("ucf101", args(layouts, "ucf101", out, "--shard", "0/2")) == expect
    first = capsys.readouterr().out
    assert not partials[of_0].exists() and partials[of_1].exists()  # a shard clears only its own temps

    # A requeued shard resumes: its finished videos are skipped, its failures retried.
    assert run("ucf101", args(layouts, "ucf101", out, "--shard", "0/2")) == expect
    converted, _, failed = summary(first)
    assert summary(capsys.readouterr().out) == (0, converted, failed)

    assert run("ucf101", args(layouts, "ucf101", out, "--merge")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rerun shard 1/2" in err[0], err
    assert not (out / "train.csv").exists() and (out / SHARD_DIR).is_dir()

    assert run("ucf101", args(layouts, "ucf101", out)) == 1  # a plain rerun joins and encodes the rest
    total = len(rels) - len(UCF_FAILING)
    assert summary(capsys.readouterr().out) == (total - converted, converted, len(UCF_FAILING))
    assert len(read_csv(out / "train.csv")) + len(read_csv(out / "val.csv")) == total
    assert not list(out.rglob(".*partial*")) and not (out / SHARD_DIR).exists()
