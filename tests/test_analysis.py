"""cmpl.analysis on hand-made run folders: parsing, the numbers of each analysis, the plots, the CLI errors."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from cmpl.analysis import AnalysisError, load_eval, read_metrics
from cmpl.analysis.__main__ import main
from cmpl.analysis.curves import aggregate, pseudo_label_curves, smooth, tail_mean
from cmpl.analysis.per_class import binned_gain, class_gaps, fit_line, mean_per_class
from cmpl.analysis.report import (RunRecord, compare, existing_notes, make_plots, render_readme, stat,
                                  summarize, NOTES_PLACEHOLDER)
from cmpl.analysis.runs import Series
from cmpl.analysis.temporal import drop_ratios, resample_clip, resample_indices, stride_accuracies

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    assert path.is_file(), path
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 2000, f"{path}: not a real PNG ({len(data)} bytes)"


def make_run(root: Path, name: str, method: str, rows: list[dict], evals: dict | None = None) -> Path:
    """A run folder as cmpl.train writes it: config.toml, metrics.jsonl, and optional eval JSONs."""
    run = root / name
    run.mkdir(parents=True)
    (run / "config.toml").write_text(f'[method]\nname = "{method}"\n')
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for file, data in (evals or {}).items():
        (run / file).write_text(json.dumps(data))
    return run


def train_rows(steps, **keys) -> list[dict]:
    """Train rows whose statistic `k` at step s is keys[k](s)."""
    return [{"kind": "train", "step": s, "epoch": s / 10, "lr": 0.1, "loss": 1.0,
             **{k: f(s) for k, f in keys.items()}} for s in steps]


def eval_json(per_class: list[float]) -> dict:
    """An eval JSON as cmpl.evaluate writes it (fractions) from per-class accuracies given in percent."""
    return {"top1": sum(per_class) / len(per_class) / 100, "top5": 1.0,
            "per_class": {f"c{i}": v / 100 for i, v in enumerate(per_class)}, "num_videos": 10 * len(per_class)}


# ---------------------------------------------------------------- run folder parsing

def test_read_metrics_dedupes_resumed_steps_and_skips_torn_last_line(tmp_path):
    run = make_run(tmp_path, "r", "fixmatch", train_rows([10, 20], correct_pl_f=lambda s: 0.1))
    with (run / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"kind": "train", "step": 20, "correct_pl_f": 0.5}) + "\n")  # resumed re-log
        f.write(json.dumps({"kind": "val", "step": 20, "top1_f": 40.0}) + "\n")
        f.write('{"kind": "train", "st')  # killed mid-write
    rows = read_metrics(run)
    assert [(r["kind"], r["step"]) for r in rows] == [("train", 10), ("train", 20), ("val", 20)]
    assert rows[1]["correct_pl_f"] == 0.5


def test_read_metrics_bad_middle_line_names_file_and_line(tmp_path):
    run = make_run(tmp_path, "r", "fixmatch", train_rows([1, 2]))
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join([lines[0], "garbage", lines[1]]) + "\n")
    with pytest.raises(AnalysisError, match=r"metrics.jsonl:2"):
        read_metrics(run)


def test_load_eval_forms_and_units(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"top1": 0.5, "top5": 0.9, "per_class": [0.25, 0.75],
                                                 "classes": ["walk", "run"]}))
    a = load_eval(tmp_path / "a.json")
    assert (a.top1, a.top5, a.classes, a.per_class) == (50.0, 90.0, ("walk", "run"), (25.0, 75.0))
    (tmp_path / "b.json").write_text(json.dumps({"top1": 50.0, "top5": 90.0, "units": "percent",
                                                 "per_class": {"walk": {"top1": 25.0, "count": 4}, "run": 75.0,
                                                               "jump": None}}))
    b = load_eval(tmp_path / "b.json")
    assert (b.top1, b.classes, b.per_class[:2]) == (50.0, ("walk", "run", "jump"), (25.0, 75.0))
    assert math.isnan(b.per_class[2])  # a class without val videos
    (tmp_path / "c.json").write_text(json.dumps({"top1": 0.5}))
    with pytest.raises(AnalysisError, match="c.json"):
        load_eval(tmp_path / "c.json")


# ---------------------------------------------------------------- pseudo-labels (Fig. 2)

def test_pseudo_label_curves_numbers(tmp_path):
    steps = range(10, 110, 10)
    fm = make_run(tmp_path, "fm", "fixmatch", train_rows(steps, correct_pl_f=lambda s: s / 1000))
    cm = make_run(tmp_path, "cm", "cmpl", train_rows(steps, correct_pl_f=lambda s: 0.3, correct_pl_a=lambda s: 0.2))
    curves = pseudo_label_curves([fm, cm])
    assert [c.label for c in curves] == ["fm (fixmatch) F", "cm (cmpl) F", "cm (cmpl) A"]
    assert tail_mean(curves[0]) == pytest.approx(0.1)  # last 10% of 10 points: step 100 -> 0.1
    assert tail_mean(curves[0], 0.5) == pytest.approx((0.06 + 0.07 + 0.08 + 0.09 + 0.1) / 5)
    assert tail_mean(curves[1]) == pytest.approx(0.3) and tail_mean(curves[2]) == pytest.approx(0.2)


def test_pseudo_labels_cli_writes_png_and_prints_numbers(tmp_path, capsys):
    fm = make_run(tmp_path, "fm", "fixmatch", train_rows(range(1, 51), correct_pl_f=lambda s: 0.01 * s))
    cm = make_run(tmp_path, "cm", "cmpl", train_rows(range(1, 51), correct_pl_f=lambda s: 0.5,
                                                       correct_pl_a=lambda s: 0.25))
    out = tmp_path / "pl.png"
    assert main(["pseudo-labels", str(fm), str(cm), "--out", str(out)]) == 0
    assert_png(out)
    text = capsys.readouterr().out
    assert "48.0%" in text  # fixmatch: mean of the last 5 points 0.46..0.50
    assert "50.0%" in text and "25.0%" in text


def test_pseudo_labels_on_supervised_run_is_a_clean_error(tmp_path, capsys):
    sup = make_run(tmp_path, "sup", "supervised", train_rows([1, 2]))
    assert main(["pseudo-labels", str(sup), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no correct_pl" in err[0]


@pytest.mark.parametrize("command", [["pseudo-labels"], ["per-class", "X", "X"], ["temporal"]])
def test_not_a_run_folder_is_one_line_exit_2(tmp_path, capsys, command):
    args = [c if c != "X" else str(tmp_path) for c in command]
    if command == ["pseudo-labels"] or command == ["temporal"]:
        args.append(str(tmp_path))
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a run folder" in err[0] and str(tmp_path) in err[0]


def test_aggregate_uses_common_steps_and_smooth_is_a_trailing_mean():
    a = Series("x", (1, 2, 3), (1.0, 2.0, 3.0))
    b = Series("x", (2, 3, 4), (4.0, 6.0, 8.0))
    c = aggregate("m", [a, b])
    assert list(c.steps) == [2, 3] and list(c.mean) == [3.0, 4.5]
    assert list(c.low) == [2.0, 3.0] and list(c.high) == [4.0, 6.0] and c.runs == 2
    assert aggregate("m", [Series("x", (1,), (1.0,)), Series("x", (2,), (1.0,))]) is None
    assert list(smooth(torch.tensor([1.0, 3.0, 5.0, 7.0]).numpy(), 2)) == [1.0, 2.0, 4.0, 6.0]


# ---------------------------------------------------------------- per-class (Fig. 1 / Fig. 7)

def test_class_gaps_and_bins_on_known_input(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(eval_json([90.0, 20.0, 50.0, 75.0])))
    (tmp_path / "b.json").write_text(json.dumps(eval_json([80.0, 40.0, 50.0, 35.0])))
    a, b = load_eval(tmp_path / "a.json"), load_eval(tmp_path / "b.json")
    gaps = class_gaps(a, b)
    assert [(g.name, g.gap) for g in gaps] == [("c1", -20.0), ("c2", 0.0), ("c0", 10.0), ("c3", 40.0)]
    bins = binned_gain(gaps, [{"c0": 80.0, "c1": 40.0, "c2": 50.0, "c3": 35.0}[g.name] for g in gaps], 20.0)
    # B's accuracy 35, 40 -> bin [20, 40) gets c3 only (35); 40 and 50 -> [40, 60); 80 -> [80, 100]
    assert [(b_.low, b_.count, b_.mean_gain) for b_ in bins] == [(20.0, 1, 40.0), (40.0, 2, -10.0), (80.0, 1, 10.0)]
    slope, _ = fit_line(bins)
    assert slope == pytest.approx(-5 / 14)  # LS through (30, 40), (50, -10), (90, 10), by hand
    assert binned_gain(gaps, [100.0, 0.0, 0.0, 0.0], 10.0)[-1].low == 90.0  # 100% lands in the last bin


def test_mean_per_class_and_mismatched_classes(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(eval_json([10.0, 30.0])))
    (tmp_path / "b.json").write_text(json.dumps(eval_json([30.0, 50.0])))
    (tmp_path / "c.json").write_text(json.dumps(eval_json([1.0, 2.0, 3.0])))
    m = mean_per_class([load_eval(tmp_path / "a.json"), load_eval(tmp_path / "b.json")])
    assert m.per_class == (20.0, 40.0) and m.top1 == 30.0
    with pytest.raises(AnalysisError, match="c.json"):
        class_gaps(load_eval(tmp_path / "a.json"), load_eval(tmp_path / "c.json"))


def test_per_class_cli_on_run_folders(tmp_path, capsys):
    run = make_run(tmp_path, "cm", "cmpl", train_rows([1]),
                   {"eval.json": eval_json([60.0, 30.0, 90.0]), "eval_aux.json": eval_json([40.0, 70.0, 90.0])})
    out, js = tmp_path / "pc.png", tmp_path / "pc.json"
    assert main(["per-class", str(run), str(run), "--network-a", "aux", "--out", str(out), "--json", str(js)]) == 0
    assert_png(out)
    result = json.loads(js.read_text())
    assert [(c["name"], c["gap"]) for c in result["classes"]] == [("c0", -20.0), ("c2", 0.0), ("c1", 40.0)]
    assert "classes where A is better: 1/3" in capsys.readouterr().out
    assert main(["per-class", str(run), str(tmp_path / "cm" / "nope.json")]) == 2  # missing eval -> exit 2


# ---------------------------------------------------------------- temporal probe (Fig. 5)

def test_resample_indices_rule():
    assert resample_indices(8, 1).tolist() == list(range(8))
    assert resample_indices(8, 2).tolist() == [0, 0, 2, 2, 4, 4, 6, 6]
    assert resample_indices(8, 4).tolist() == [0, 0, 0, 0, 4, 4, 4, 4]
    assert resample_indices(8, 8).tolist() == [0] * 8
    assert resample_indices(16, 8).tolist() == [0] * 8 + [8] * 8
    assert resample_indices(5, 3).tolist() == [0, 0, 0, 3, 3]
    with pytest.raises(ValueError):
        resample_indices(8, 0)


def test_resample_clip_moves_whole_frames():
    video = torch.arange(8.0).view(1, 1, 8, 1, 1).expand(2, 3, 8, 4, 4).clone()  # frame t holds value t
    out = resample_clip(video, 4, dim=2)
    assert out.shape == video.shape
    assert out[:, :, :, 0, 0][0, 0].tolist() == [0, 0, 0, 0, 4, 4, 4, 4]
    assert torch.equal(out[1, 2, 5], video[1, 2, 4])


class MotionDetector(nn.Module):
    """Says class 1 when frames 0 and 1 differ (motion), class 0 otherwise: `(N, C, T, H, W)` -> `(N, 2)`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        moving = (x[:, :, 1] - x[:, :, 0]).abs().flatten(1).amax(1) > 0
        return torch.stack([(~moving).float(), moving.float()], 1) * 10


def test_stride_accuracies_and_drop_ratio():
    frames = torch.arange(8.0).view(1, 1, 1, 8, 1, 1).expand(3, 2, 3, 8, 4, 4)  # (N, V, C, T, H, W)
    static = torch.zeros(1, 2, 3, 8, 4, 4)
    batches = [{"video": frames, "label": torch.tensor([1, 1, 1])},
               {"video": static, "label": torch.tensor([0])}]
    res = stride_accuracies(MotionDetector(), batches, (1, 2, 4, 8))
    assert [(r.stride, r.correct, r.total) for r in res] == [(1, 4, 4), (2, 1, 4), (4, 1, 4), (8, 1, 4)]
    assert res[1].top1 == 25.0
    assert drop_ratios(res) == {1: 0.0, 2: 0.75, 4: 0.75, 8: 0.75}


# ---------------------------------------------------------------- demo report

def test_stat_and_compare_come_from_the_numbers(tmp_path):
    s = stat([1.0, 2.0, 3.0])
    assert (s.mean, s.std) == (2.0, 1.0) and str(s) == "2.0 ± 1.0"
    assert stat([5.0]).std is None
    records = []
    for method, tops in (("fixmatch", [40.0, 42.0, 44.0]), ("cmpl", [41.0, 43.0, 45.0]),
                         ("supervised", [20.0, 21.0, 22.0])):
        for seed, t in enumerate(tops):
            run = make_run(tmp_path, f"{method}{seed}", method, [], {"eval.json": eval_json([t, t])})
            records.append(RunRecord(method, seed, run, load_eval(run / "eval.json"), train_s=60.0))
    summary = summarize(records)
    assert compare(summary["cmpl"], summary["fixmatch"])[0] == "tie"  # +1 point, spread sqrt(8)
    assert compare(summary["cmpl"], summary["supervised"])[0] == "higher"
    assert compare(summary["supervised"], summary["fixmatch"])[0] == "lower"
    ctx = {k: "x" for k in ("command", "date", "machine", "wall_time", "compute_time", "cpu_time", "preset",
                                          "runs_dir", "data")}
    text = render_readme(summary, records, plots={}, context=ctx, notes=None, smoke=False)
    assert "| CMPL (F) | 43.0 ± 2.0 |" in text
    assert "no clear difference" in text and "does not clearly beat FixMatch" in text
    assert NOTES_PLACEHOLDER in text


def test_readme_keeps_the_leads_notes(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# old\n<!-- notes:begin -->\nFound a bug in X; fixed.\n<!-- notes:end -->\n")
    assert existing_notes(readme) == "Found a bug in X; fixed."
    assert existing_notes(tmp_path / "none.md") is None


def test_make_plots_from_run_folders(tmp_path):
    records = []
    for method in ("supervised", "fixmatch", "cmpl"):
        for seed in (0, 1):
            rows = train_rows(range(10, 110, 10), correct_pl_f=lambda s: s / 200, correct_pl_a=lambda s: s / 300)
            if method == "supervised":
                rows = train_rows(range(10, 110, 10))
            elif method == "fixmatch":
                rows = [{k: v for k, v in r.items() if k != "correct_pl_a"} for r in rows]
            rows += [{"kind": "val", "step": s, "top1_f": s / 4 + seed} for s in (50, 100)]
            evals = {"eval.json": eval_json([50.0, 30.0, 80.0])}
            if method == "cmpl":
                evals["eval_aux.json"] = eval_json([60.0, 20.0, 80.0])
            run = make_run(tmp_path, f"{method}_seed{seed}", method, rows, evals)
            records.append(RunRecord(method, seed, run, load_eval(run / "eval.json"),
                                     load_eval(run / "eval_aux.json") if method == "cmpl" else None))
    plots = make_plots(records, tmp_path / "out")
    assert sorted(plots) == ["per_class", "pseudo_labels", "top1"]
    for path in plots.values():
        assert_png(path)
    assert math.isfinite(summarize(records)["cmpl"].aux_top1.mean)
