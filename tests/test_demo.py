"""`make demo` in smoke mode, end to end on the real trainer, evaluator and digits generator, plus the
temporal probe on its CMPL run. The smoke run (one seed, a few steps, 1x1 eval, tiny dataset) is shared
by the tests of this file."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cmpl.analysis import load_eval
from cmpl.demo import DEMO_OVERRIDES, PRESET, DemoError, Progress, job, run_demo_job
from cmpl.study import eval_command, train_command

REPO = Path(__file__).resolve().parents[1]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_demo(out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-W", "ignore", "-m", "cmpl.demo", "--smoke", "--quiet", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("demo")
    proc = run_demo(out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc


def test_smoke_demo_writes_table_and_plots_from_the_runs(smoke):
    out, proc = smoke
    readme = (out / "README.md").read_text()
    assert "SMOKE RUN" in readme
    for method, title in (("supervised", "Supervised"), ("fixmatch", "FixMatch"), ("cmpl", "CMPL")):
        ev = load_eval(out / "runs" / f"{method}_10pct_seed0" / "eval.json")
        assert ev.step == 4 and ev.views == (1, 1) and ev.num_videos == 10  # 10 classes x 1 val video
        row = f"| {title} (F) | {ev.top1:.1f} | {ev.top5:.1f} | {ev.top1:.1f} | 1 |"
        assert row in readme, f"{row!r} not in README"
        assert f"{title:<12} {ev.top1:>14.1f}" in proc.stdout  # the table printed at the end
    aux = load_eval(out / "runs" / "cmpl_10pct_seed0" / "eval_aux.json")
    assert f"| CMPL auxiliary A (not the reported model) | {aux.top1:.1f} |" in readme
    assert "1-clip x 1-crop protocol on 10 val videos, after 4 training steps" in readme
    assert "10%-labeled split" in readme
    assert "single split" in readme and "<!-- notes:begin -->" in readme
    for name in ("top1_f.png", "pseudo_labels.png", "per_class_f_vs_a.png"):
        data = (out / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 2000
        assert f"]({name})" in readme
    assert "[3/3] cmpl split seed 0" in proc.stdout


def test_rerun_skips_finished_work_and_keeps_notes(smoke):
    out, _ = smoke
    readme = out / "README.md"
    text = readme.read_text().replace("_Not investigated yet._", "Lead's finding: X.")
    readme.write_text(text)
    proc = run_demo(out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("train: done earlier") == 3 and proc.stdout.count("exists, skipped") == 4
    assert "Lead's finding: X." in readme.read_text()


def test_temporal_probe_on_the_smoke_cmpl_run(smoke):
    out, _ = smoke
    run = out / "runs" / "cmpl_10pct_seed0"
    proc = subprocess.run([sys.executable, "-W", "ignore", "-m", "cmpl.analysis", "temporal", str(run),
                           "--clips", "1", "--crops", "1", "--out", str(out / "temporal.png")],
                          cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((out / "temporal.json").read_text())
    assert sorted(result["networks"]) == ["aux", "primary"]
    for rows in result["networks"].values():
        assert [r["stride"] for r in rows] == [1, 2, 4, 8]
        assert all(r["total"] == 10 for r in rows)
        assert rows[0]["drop_ratio"] == 0 or rows[0]["top1"] == 0
    assert (out / "temporal.png").read_bytes()[:8] == PNG_MAGIC


def test_commands_are_argument_lists(tmp_path):
    j = job("cmpl", 2, tmp_path)
    assert j.run_dir == tmp_path / "cmpl_10pct_seed2"
    cmd = train_command(j, tmp_path / "data", PRESET)
    assert cmd[1:] == ["-m", "cmpl.train", "--preset", "digits", "--data.root", str(tmp_path / "data"),
                       "--run.dir", str(j.run_dir), "--method.name=cmpl", "--data.split=10pct_seed2",
                       "--runtime.seed=2", *DEMO_OVERRIDES]
    assert train_command(j, tmp_path, PRESET, 5)[-1] == "--schedule.max_steps=5"
    ev = eval_command(j, "aux", ())
    assert ev[ev.index("--out") + 1] == str(j.run_dir / "eval_aux.json")
    assert "--data.eval_clips=10" not in ev  # the preset's test views


def test_run_folder_from_another_command_is_refused(tmp_path):
    j = job("fixmatch", 0, tmp_path)
    j.run_dir.mkdir()
    (j.run_dir / "study.json").write_text(json.dumps({"config_sha256": "0" * 64, "trained": True,
                                                       "train_s": 1.0}))
    with pytest.raises(DemoError, match="another config"):
        run_demo_job(j, data=tmp_path, max_steps=None, smoke=False, quiet=True)


def test_progress_eta_uses_per_method_times(tmp_path):
    jobs = [job(m, s, tmp_path) for s in (0, 1) for m in ("supervised", "cmpl")]
    for workers, eta in ((1, "ETA 4m00s"), (2, "ETA 2m00s")):
        p = Progress(jobs, workers)
        assert p.eta() == "ETA unknown"
        for j in jobs[:2]:
            p.begin(j)
        p.end(jobs[0], 60.0)
        p.end(jobs[1], 180.0)
        assert p.eta() == eta  # one supervised (60 s) + one cmpl (180 s) left, `workers` at a time


def test_results_go_to_an_ignored_folder_and_are_compared_with_the_committed_table():
    import shutil

    from cmpl.demo import COMMITTED, parse_args, reproduction_line

    args = parse_args([])
    assert args.out == Path("runs/demo/results") and args.runs == Path("runs/demo")
    if shutil.which("git") and (REPO / ".git").exists():  # `make demo` leaves `git status` clean
        assert subprocess.run(["git", "check-ignore", "-q", str(args.out / "README.md")], cwd=REPO).returncode == 0
    committed = COMMITTED.read_text()
    table = committed.split("## Table", 1)[1].split("\n## ", 1)[0]
    assert reproduction_line(table, committed, full=True).startswith("reproduced the committed table")
    row = next(line for line in table.splitlines() if line.startswith("| CMPL (F) |"))
    cells = row.split("|")
    changed = table.replace(row, "|".join(cells[:2] + [" 99.9 ± 0.1 "] + cells[3:]))
    line = reproduction_line(changed, committed, full=True)
    assert line.startswith("did NOT reproduce") and "CMPL (F): 99.9 ± 0.1" in line and "Supervised" not in line
    changed = table.replace(row.split("|")[-2], " 9.9 min ")  # the train time is not compared
    assert reproduction_line(changed, committed, full=True).startswith("reproduced")
    assert reproduction_line(table, committed, full=False).startswith("not compared")
