"""cmpl.study: the grid runner, results.json / README.md, resume and its one-line errors."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_synthetic

from cmpl.analysis.study_report import chance_note, comparisons, mean_interval, paired, sentence
from cmpl import study
from cmpl.study import GRIDS, resolve_variants

REPO = Path(__file__).resolve().parents[1]


def _study(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "cmpl.study", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("data") / "synthetic", per_class=3)


@pytest.mark.parametrize("extra,words", [
    (("--splits", "5pct"), "5pct_seed0.txt: no such split"),
    (("--methods", "mixmatch"), "unknown method 'mixmatch'"),
    (("--grid", "table9"), "unknown grid 'table9'"),
    (("--grid", "ladder", "--variants", "cmpl", "aux"), "grid 'ladder' has no row 'aux'"),
    (("--optim.lrr=1",), "unknown config key optim.lrr"),
    (("--splits", "empty"), "empty_seed0.txt: split lists no videos"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(dataset, tmp_path, extra, words):
    (dataset / "splits" / "empty_seed0.txt").write_text("")
    out = tmp_path / "out"
    r = _study("--data", str(dataset), "--out", str(out), "--seeds", "0", *extra)
    assert r.returncode == 2, r.stderr
    assert r.stderr.count("\n") == 1 and words in r.stderr, r.stderr
    assert not out.exists()


def test_out_defaults_to_a_results_folder_named_after_the_dataset(tmp_path):
    args, rest = study.parse_args(["--data", str(tmp_path / "my_set"), "--splits", "1pct", "--optim.lr=0.1"])
    assert args.out == Path("results/study_my_set") and rest == ["--optim.lr=0.1"]
    assert args.runs is None  # -> OUT/runs


def test_chance_note_flags_rows_a_network_that_learned_nothing_would_reach():
    # 8 classes, 120 test videos: chance 12.5%, bar 12.5 + 2 * 100 * sqrt(0.125 * 0.875 / 120) = 18.5%
    at_chance = {("supervised", "all"): {0: 11.7, 1: 12.5}, ("cmpl", "1pct"): {0: 18.3, 1: 15.0}}
    note = chance_note(at_chance, classes=8, test_videos=120)
    assert "Chance is 12.5% (8 classes)" in note and "below 18.5%" in note and "Every row is below it" in note
    mixed = {**at_chance, ("cmpl", "10pct"): {0: 40.0, 1: 30.0}}
    note = chance_note(mixed, classes=8, test_videos=120)
    assert "not learned): cmpl on `1pct`, supervised on `all`." in note
    assert chance_note({("cmpl", "1pct"): {0: 60.0}}, classes=10, test_videos=100).endswith("Every row is above that.")


def test_ladder_rows_follow_the_paper():
    rows = {v.name: v for v in resolve_variants("ladder", None, "demo")}
    assert list(rows) == [v.name for v in GRIDS["ladder"]] and rows["fixmatch"].method == "fixmatch"
    assert "--model.aux_shared=true" in rows["shared_rates"].overrides
    assert "--data.aux=4,8" in rows["aux_same_clip"].overrides  # the demo preset's F clip
    assert rows["cmpl"].overrides == ()  # full CMPL = the preset itself = table1's cmpl row
    picked = resolve_variants("ladder", None, "demo", ["cmpl", "aux_same_clip"])
    assert [v.name for v in picked] == ["aux_same_clip", "cmpl"]  # the grid's order, not the caller's


def test_paired_interval_and_pairs():
    m, lo, hi = mean_interval([1.0, 2.0, 3.0])
    assert m == 2.0 and lo == pytest.approx(2 - 4.303 / 3 ** 0.5) and hi == pytest.approx(2 + 4.303 / 3 ** 0.5)
    table = {("cmpl", "1pct"): {0: 50.0, 1: 40.0}, ("fixmatch", "1pct"): {0: 45.0, 1: 41.0, 2: 30.0}}
    p = paired(table, "cmpl", "fixmatch", "1pct")
    assert p["seeds"] == [0, 1] and p["diffs"] == [5.0, -1.0] and p["wins"] == 1 and p["losses"] == 1
    assert "not separable" in sentence("cmpl", "fixmatch", "1pct", p)
    one = paired({("a", "1pct"): {0: 50.0}, ("b", "1pct"): {0: 40.0}}, "a", "b", "1pct")
    assert "single split: no interval" in sentence("a", "b", "1pct", one)
    names = [v for v in resolve_variants("table1", None, "demo")]
    assert comparisons(names) == [("fixmatch", "supervised"), ("cmpl", "supervised"), ("cmpl", "fixmatch")]


def test_study_runs_a_grid_with_the_ceiling_and_resumes(dataset, tmp_path):
    out = tmp_path / "out"
    args = ("--data", str(dataset), "--out", str(out), "--preset", "tiny", "--methods", "supervised", "fixmatch",
            "--splits", "1pct", "all", "--seeds", "0", "1", "--jobs", "2", "--quiet", "--schedule.steps=3",
            "--run.eval_every=0", "--data.eval_clips=1", "--data.eval_crops=1")
    r = _study(*args)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    runs = json.loads((out / "results.json").read_text())["runs"]
    keys = {(x["variant"], x["split"], x["seed"]) for x in runs}
    assert keys == {("supervised", "1pct", 0), ("supervised", "1pct", 1), ("fixmatch", "1pct", 0),
                    ("fixmatch", "1pct", 1), ("supervised", "all", 0), ("supervised", "all", 1)}
    for x in runs:
        assert set(x) == {"method", "variant", "split", "seed", "network", "top1", "top5", "per_class", "run_dir"}
        assert 0.0 <= x["top1"] <= x["top5"] <= 1.0 and x["network"] == "primary"
        ev = json.loads((Path(x["run_dir"]) / "eval.json").read_text())
        assert ev["top1"] == x["top1"] and ev["per_class"] == x["per_class"] and len(x["per_class"]) == 3
    readme = (out / "README.md").read_text()
    assert "ceiling: every training video labeled" in readme
    assert "On `1pct`, fixmatch − supervised" in readme and "over 2 splits" in readme
    assert "## Against chance" in readme and "% (3 classes)" in readme  # read from the dataset folder
    # Per class: the mean over the two splits of each row's per-class accuracy, in the eval JSONs' class order.
    classes = list(runs[0]["per_class"])
    section = readme.split("## Per class (top-1 % of F, mean over the splits)")[1].split("##")[0]
    assert f"| row | split | {' | '.join(classes)} |" in section
    fm = [x["per_class"] for x in runs if x["variant"] == "fixmatch" and x["split"] == "1pct"]
    means = " | ".join(f"{50 * (fm[0][c] + fm[1][c]):.1f}" for c in classes)
    assert f"| FixMatch | 1pct | {means} |" in section
    assert (out / "top1.png").read_bytes()[:4] == b"\x89PNG"
    again = _study(*args)  # everything done: skipped, same results
    assert again.returncode == 0 and "skipped" in again.stdout
    assert json.loads((out / "results.json").read_text())["runs"] == runs


def test_default_jobs_fill_the_cpu_cores_and_give_a_gpu_to_one_run(monkeypatch):
    from cmpl import study

    monkeypatch.setattr(study.os, "sched_getaffinity", lambda pid: {0, 1})
    assert study.default_jobs("cpu") == 2
    monkeypatch.setattr(study.os, "sched_getaffinity", lambda pid: set(range(64)))
    assert study.default_jobs("cpu") == 4  # memory, not cores, bounds it
    monkeypatch.setattr(study.os, "sched_getaffinity", lambda pid: {0})
    assert study.default_jobs("cpu") == 1
    import pipelines.device

    monkeypatch.setattr(pipelines.device, "resolve_device", lambda name: "cuda")
    assert study.default_jobs("auto") == 1


def test_map_in_order_keeps_order_and_cancels_the_rest_after_a_failure():
    import threading

    from cmpl.study import StudyError, map_in_order

    assert map_in_order(lambda x: x * x, [3, 1, 2], 2) == [9, 1, 4]
    started, gate = [], threading.Event()

    def job(i):
        started.append(i)
        if i == 0:
            raise StudyError("job 0 broke")
        gate.wait(2)  # job 1 holds the second worker until the failure is seen
        return i

    with pytest.raises(StudyError, match="job 0 broke"):
        try:
            map_in_order(job, list(range(6)), 2)
        finally:
            gate.set()
    assert len(started) < 6  # jobs not started when job 0 failed were cancelled


def test_a_key_added_to_cmpl_since_a_run_at_its_default_keeps_the_run_valid(tmp_path):
    from cmpl import config

    cmd = ["python", "-m", "cmpl.train", "--preset", "tiny", "--run.dir", str(tmp_path), "--method.name=fixmatch"]
    assert not study.trained_with(tmp_path, cmd)  # no config.toml: nothing ran
    ran = config.apply_overrides(study.resolved_config(cmd), [("model.num_classes", "3")])  # as the trainer saves
    config.save(ran, tmp_path / "config.toml")
    assert study.trained_with(tmp_path, cmd)
    # A run made before `method.dist_align` existed: its config.toml lacks the key, which reads as the default.
    text = (tmp_path / "config.toml").read_text()
    assert "dist_align = 0.0\n" in text
    (tmp_path / "config.toml").write_text(text.replace("dist_align = 0.0\n", ""))
    assert study.trained_with(tmp_path, cmd)
    assert not study.trained_with(tmp_path, [*cmd, "--method.dist_align=0.9"])  # a real change is one
    assert not study.trained_with(tmp_path, [*cmd, "--method.threshold=0.5"])
