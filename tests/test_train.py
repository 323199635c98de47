"""The training loop end to end on CPU with the real loaders, models and Task (tiny preset).

Runtime note: every trainer process that uses unlabeled data spends ~15-20 s building the DALI
unlabeled pipeline on CPU, so independent runs are started in parallel where the test allows it.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import cpu_step, random_clip_batches, write_synthetic
import torch

from cmpl import components, config, models, presets
from cmpl.methods import build_task
from cmpl.trainer import cosine_lambda

REPO = Path(__file__).resolve().parents[1]
TRAIN_KEYS = {"kind", "step", "epoch", "lr", "loss", "loss_s_f", "loss_s_a", "loss_u_f", "loss_u_a", "mask_f",
              "mask_a", "pl_acc_f", "pl_acc_a", "correct_pl_f", "correct_pl_a", "videos_per_s", "data_wait"}
VAL_KEYS = {"kind", "step", "epoch", "top1_f", "top5_f", "top1_a", "top5_a"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("data") / "synthetic", per_class=4)


def _train_cmd(dataset: Path, run: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cmpl.train", "--preset", "tiny", "--data.root", str(dataset),
            "--run.dir", str(run), *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


def _start(cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _finish(p: subprocess.Popen, timeout: float = 240) -> str:
    out, _ = p.communicate(timeout=timeout)
    assert p.returncode == 0, out[-3000:]
    return out


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_same_tensors(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_one_cmpl_step_changes_both_networks():
    torch.manual_seed(0)
    f = models.build("resnet3d10_w1_8", num_classes=3)
    a = models.build("resnet3d10_w1_8", num_classes=3)
    before = {n: [p.detach().clone() for p in m.parameters()] for n, m in (("f", f), ("a", a))}
    cfg = presets.get("tiny")
    task = build_task(cfg.method, {"primary": f, "aux": a})
    opt = torch.optim.SGD([*f.parameters(), *a.parameters()], lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_lambda(10, 0))
    step = cpu_step(task, opt, sched)
    labeled, unlabeled = random_clip_batches()
    out = step(labeled, unlabeled)
    assert torch.isfinite(out["loss"])
    assert {"loss_s_f", "loss_s_a", "loss_u_f", "loss_u_a", "mask_f", "pl_acc_a"} <= out.keys()
    for name, net in (("f", f), ("a", a)):
        params = list(net.parameters())
        assert all(p.grad is not None for p in params), f"{name}: a parameter got no gradient"
        changed = [not torch.equal(p0, p) for p0, p in zip(before[name], params)]
        # Zero-initialized last BN of each residual branch gives its conv a zero first gradient, so not
        # every tensor moves in one step; the stem and the classifier must.
        assert changed[0] and changed[-1] and changed[-2], f"{name}: stem or classifier did not move"
    assert sched.get_last_lr()[0] < 0.1  # the LR schedule stepped with the optimizer


def test_cosine_schedule_shape():
    f = cosine_lambda(100, 10)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(55) == pytest.approx(0.5) and f(100) == pytest.approx(0.0)


def test_warmup_steps_do_not_grow_with_the_labeled_set():
    """schedule.warmup_steps fixes the warmup whatever an epoch is; warmup_epochs scales with the split."""
    cfg = presets.get("demo")
    param = torch.nn.Parameter(torch.zeros(1))
    for steps_per_epoch in (1, 32):  # 1 label per class vs every video labeled, at B_l = 10
        opt, sched = components.build_optimizer(cfg.optim, cfg.schedule, [param], lr=1.0,
                                                steps_per_epoch=steps_per_epoch)
        factors = [sched.lr_lambdas[0](s) for s in range(cfg.schedule.steps)]
        assert factors.index(max(factors)) == cfg.schedule.warmup_steps - 1 == 14
    cfg.schedule.warmup_steps, cfg.schedule.warmup_epochs = 0, 15.0
    _, sched = components.build_optimizer(cfg.optim, cfg.schedule, [param], lr=1.0, steps_per_epoch=32)
    assert sched.lr_lambdas[0](479) == pytest.approx(1.0) and sched.lr_lambdas[0](100) < 0.25


def test_resume_equals_straight_run_and_run_folder(dataset, tmp_path):
    n = 2
    # With distribution alignment, the Task's running means are resumed too; the lambda ramp follows the step.
    common = ("--runtime.seed=3", "--run.checkpoint_every=1", "--run.log_every=1", "--method.dist_align=0.9",
              f"--method.lambda_warmup_steps={2 * n}")
    straight = _start(_train_cmd(dataset, tmp_path / "straight", *common, f"--schedule.max_steps={2 * n}"))
    first = _start(_train_cmd(dataset, tmp_path / "resumed", *common, f"--schedule.max_steps={n}"))
    _finish(first)
    assert _load(tmp_path / "resumed/checkpoints/last.pt")["step"] == n
    second = _start(_train_cmd(dataset, tmp_path / "resumed", *common, f"--schedule.max_steps={2 * n}"))
    out = _finish(second)
    assert "resumed from" in out and f"at step {n}" in out
    # The last line names the checkpoint files, where they are and what each is for.
    last_line = out.strip().splitlines()[-1]
    assert last_line.startswith(f"cmpl.train: done at step {2 * n}; checkpoints in {tmp_path / 'resumed'}"), out[-800:]
    assert all(f in last_line for f in ("last.pt (resume", "primary.pt (F only", "best.pt"))
    _finish(straight)

    a, b = _load(tmp_path / "resumed/checkpoints/last.pt"), _load(tmp_path / "straight/checkpoints/last.pt")
    assert a["step"] == b["step"] == 2 * n
    for net in ("primary", "aux"):
        _assert_same_tensors(a["models"][net], b["models"][net])
    mom_a = [s["momentum_buffer"] for s in a["optimizer"]["state"].values()]
    mom_b = [s["momentum_buffer"] for s in b["optimizer"]["state"].values()]
    assert len(mom_a) == len(mom_b) > 0 and all(torch.equal(x, y) for x, y in zip(mom_a, mom_b))
    assert a["scheduler"] == b["scheduler"] and a["loaders"] == b["loaders"]
    assert sorted(b["task"]) == ["dist_align_aux", "dist_align_primary"]
    for k in b["task"]:
        assert torch.equal(a["task"][k]["p_model"], b["task"][k]["p_model"]), k
        assert not torch.allclose(b["task"][k]["p_model"], torch.full((3,), 1 / 3))  # it moved

    # The checkpoint dict of ARCHITECTURE.md section 5; only F in the inference export.
    assert {"models", "optimizer", "scheduler", "scaler", "step", "epoch", "rng", "loaders", "config",
            "best_top1"} <= b.keys()
    export = _load(tmp_path / "straight/checkpoints/primary.pt")
    assert "models" not in export and export["network"] == "primary"
    _assert_same_tensors(export["model"], b["models"]["primary"])
    assert any(not torch.equal(export["model"][k], v) for k, v in b["models"]["aux"].items())
    assert config.from_dict(export["config"]).model.num_classes == 3

    # Run folder: config.toml, metrics.jsonl with every key, TensorBoard events with the same scalars.
    run = tmp_path / "resumed"
    assert config.load(run / "config.toml").runtime.seed == 3
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == list(range(1, 2 * n + 1))  # no duplicates after the resume
    assert all(TRAIN_KEYS <= r.keys() for r in train), train[0].keys()
    lambda_u = config.load(run / "config.toml").method.lambda_u
    # Logged step s trained with the weight of s - 1 steps done: lambda_u * (s - 1) / warmup.
    assert [r["lambda_u"] for r in train] == pytest.approx([lambda_u * s / (2 * n) for s in range(2 * n)])
    val = [r for r in records if r["kind"] == "val"]
    assert val and all(VAL_KEYS <= r.keys() for r in val)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = EventAccumulator(str(tmp_path / "straight")).Reload()
    tags = set(tb.Tags()["scalars"])
    assert {f"train/{k}" for k in TRAIN_KEYS - {"kind", "step"}} <= tags
    assert {f"val/{k}" for k in VAL_KEYS - {"kind", "step"}} <= tags


_DDP_WORKER = textwrap.dedent("""
    import os, sys, torch
    from cmpl import presets
    from cmpl.trainer import Trainer
    cfg = presets.get("tiny")
    cfg.data.root, cfg.run.dir = sys.argv[1], sys.argv[2]
    cfg.schedule.max_steps = 2
    cfg.method.dist_align = 0.9  # its running means are all_reduced over the ranks
    trainer = Trainer(cfg)
    trainer.run()
    params = {n: {k: p.detach() for k, p in m.named_parameters()} for n, m in trainer.plain.items()}
    torch.save(params, os.path.join(sys.argv[2], f"params_rank{trainer.dist.rank}.pt"))
    torch.save(trainer.task.state_dict(), os.path.join(sys.argv[2], f"task_rank{trainer.dist.rank}.pt"))
""")


def test_lr_scaled_by_all_videos_or_labeled_only(dataset, tmp_path):
    # tiny: LR 0.05 at base batch 6; CMPL sees B_l = 2 + B_u = 4 videos per step.
    p_all = _start(_train_cmd(dataset, tmp_path / "all", "--schedule.max_steps=1"))
    p_lab = _start(_train_cmd(dataset, tmp_path / "lab", "--schedule.max_steps=1", "--optim.scale_by=labeled"))
    assert "LR 0.05 x 6/6 = 0.05;" in _finish(p_all)
    assert "LR 0.05 x 2/6 = 0.0166667;" in _finish(p_lab)
    base = {k: _load(tmp_path / k / "checkpoints/last.pt")["scheduler"]["base_lrs"] for k in ("all", "lab")}
    assert base["all"] == pytest.approx([0.05]) and base["lab"] == pytest.approx([0.05 * 2 / 6])


def test_ddp_two_gloo_processes_keep_weights_identical(dataset, tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(_DDP_WORKER)
    run = tmp_path / "ddp"
    run.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
           str(worker), str(dataset), str(run)]
    _finish(_start(cmd), timeout=300)
    r0, r1 = _load(run / "params_rank0.pt"), _load(run / "params_rank1.pt")
    for net in ("primary", "aux"):
        _assert_same_tensors(r0[net], r1[net])
    t0, t1 = _load(run / "task_rank0.pt"), _load(run / "task_rank1.pt")
    assert t0.keys() == t1.keys() and all(torch.equal(t0[k]["p_model"], t1[k]["p_model"]) for k in t0)
    ckpt = _load(run / "checkpoints/last.pt")
    _assert_same_tensors({k: v for k, v in ckpt["models"]["primary"].items() if k in r0["primary"]},
                         r0["primary"])
    # The shards differ, so the (shared) weights moved by the averaged gradient of both ranks.
    assert ckpt["step"] == 2


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(dataset, tmp_path):
    # lr = inf turns the weights into inf/NaN after the first update, so step 2's loss is NaN.
    r = subprocess.run(_train_cmd(dataset, tmp_path / "nan", "--method.name=supervised", "--optim.lr=inf",
                                  "--run.checkpoint_every=1", "--run.log_every=5", "--schedule.max_steps=6"),
                       cwd=REPO, env=_env(), capture_output=True, text=True, timeout=240)
    assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
    assert "NaN/inf" in r.stderr and "Traceback" not in r.stderr
    last = _load(tmp_path / "nan/checkpoints/last.pt")
    assert last["step"] == 1


@pytest.mark.parametrize("extra, words", [
    (("--data.root", "/no/such/folder"), ["data folder not found", "/no/such/folder"]),
    (("--optim.lr=fast",), ["optim.lr"]),
    (("--runtime.nope=1",), ["runtime.nope", "seed"]),
    (("--data.split", "50pct_seed0"), ["50pct_seed0"]),
    (("--schedule.max_steps=-5",), ["schedule.max_steps", ">= 0", "-5"]),
    (("--data.labeled_batch=0",), ["data.labeled_batch", ">= 1", "got 0"]),
])
def test_user_errors_fail_with_one_line_and_leave_no_run_folder(dataset, tmp_path, extra, words):
    run = tmp_path / "runs" / "bad"  # neither folder exists: the failed run must not leave them behind
    cmd = _train_cmd(dataset, run, "--method.name=supervised", *extra)
    r = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in r.stderr and "Warning" not in r.stderr, r.stderr
    assert all(w in lines[0] for w in words), lines[0]
    assert not (tmp_path / "runs").exists()


def test_a_failed_start_keeps_a_folder_it_did_not_create(dataset, tmp_path):
    run = tmp_path / "mine"
    (run / "checkpoints").mkdir(parents=True)
    (run / "notes.txt").write_text("the user's")
    r = subprocess.run(_train_cmd(dataset, run, "--method.name=supervised", "--data.split", "50pct_seed0"),
                       cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert (run / "notes.txt").read_text() == "the user's" and (run / "checkpoints").is_dir()


def test_new_folder_is_removed_only_when_it_holds_only_an_unstarted_runs_files(tmp_path):
    from cmpl.run_folder import NewFolder

    def unstarted(run: Path) -> None:
        (run / "checkpoints").mkdir(parents=True)
        for name in ("config.toml", "metrics.jsonl", "events.out.tfevents.1.host"):
            (run / name).write_text("")

    new = NewFolder.note(tmp_path / "a" / "run")
    assert new.root == tmp_path / "a"
    unstarted(tmp_path / "a" / "run")
    assert new.remove_unstarted() and not (tmp_path / "a").exists()  # with the parent it created

    for extra in ("checkpoints/last.pt", "checkpoints/.last.pt.tmp1", "trainer.lock", "other.txt"):
        new = NewFolder.note(tmp_path / "b" / "run")
        unstarted(tmp_path / "b" / "run")
        (tmp_path / "b" / "run" / extra).write_text("")
        assert not new.remove_unstarted() and (tmp_path / "b" / "run" / extra).exists(), extra
        shutil.rmtree(tmp_path / "b")

    new = NewFolder.note(tmp_path / "c")
    unstarted(tmp_path / "c")
    os.utime(tmp_path / "c" / "config.toml", (new.since - 60, new.since - 60))  # older than this invocation
    assert not new.remove_unstarted() and (tmp_path / "c").exists()

    (tmp_path / "d").mkdir()
    existing = NewFolder.note(tmp_path / "d")  # a resumed run's folder: never a candidate
    assert existing.root is None and not existing.remove_unstarted() and (tmp_path / "d").exists()
