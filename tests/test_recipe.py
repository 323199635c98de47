"""The small-data recipe's keys (the `digits` preset): stems, the deterministic weak forward, SGD options, the
strong view's geometry, RandAugment's shift, the EMA of the weights through training, resume and evaluation,
and the study's recipe grid and EMA rows."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import write_synthetic
from torch import nn

from cmpl import components, config, models, presets, study
from cmpl.methods import build_task
from pipelines import rand_augment, sampling

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("stem, side", [("imagenet", 8), ("small", 16), ("cifar", 32)])
def test_every_stem_trains_every_parameter_and_sets_the_resolution(stem, side):
    torch.manual_seed(0)
    net = models.build("resnet3d10_w1_8", num_classes=4, stem=stem)
    for m in net.modules():  # undo the zero-init of residual gammas so every conv is reachable
        if hasattr(m, "last_bn"):
            nn.init.ones_(m.last_bn().weight)
    x = torch.randn(2, 3, 4, 32, 32)
    assert net.stem(x).shape[-2:] == (side, side)
    nn.functional.cross_entropy(net(x), torch.tensor([1, 3])).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{stem}: {name} got no gradient"
    with pytest.raises(ValueError, match="stem"):
        models.build("resnet3d10_w1_8", num_classes=4, stem="deep")


class DropNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm3d(3)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(3, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.bn(x).mean(dim=(2, 3, 4)) + 1.0))


def _fixmatch_pseudo_labels(weak_forward: str, seed: int) -> tuple[torch.Tensor, nn.Module]:
    torch.manual_seed(0)
    net = DropNet()
    seen = []
    net.fc.register_forward_hook(lambda m, i, o: seen.append(o.detach().clone()))
    task = build_task(SimpleNamespace(name="fixmatch", scheme="fixmatch", threshold=0.0, lambda_u=1.0,
                                      aux_supervised=True, aux_unsupervised=True, weak_forward=weak_forward),
                      {"primary": net})
    g = torch.Generator().manual_seed(1)
    weak = torch.randn(6, 3, 2, 4, 4, generator=g)
    labeled = {"primary": torch.randn(2, 3, 2, 4, 4, generator=g), "label": torch.tensor([0, 1])}
    unlabeled = {"primary_weak": weak, "primary_strong": weak.clone(), "label": torch.zeros(6, dtype=torch.long)}
    torch.manual_seed(seed)
    task(labeled, unlabeled)
    return seen[0], net


def test_weak_forward_without_dropout_is_deterministic_and_restores_train_mode():
    a, net = _fixmatch_pseudo_labels("no_dropout", seed=1)
    b, _ = _fixmatch_pseudo_labels("no_dropout", seed=2)
    assert torch.equal(a, b)  # no dropout sample in the pseudo-label forward
    assert net.drop.training and net.bn.training  # dropout back on for the training forward; BN never off
    c, _ = _fixmatch_pseudo_labels("train", seed=1)
    d, _ = _fixmatch_pseudo_labels("train", seed=2)
    assert not torch.equal(c, d)  # the earlier behaviour: one dropout sample per pseudo-label


def test_sgd_options_nesterov_and_no_decay_on_norms_and_biases():
    cfg = presets.get("digits")
    net = models.build("resnet3d10_w1_8", num_classes=3)
    opt, _ = components.build_optimizer(cfg.optim, cfg.schedule, net.parameters(), lr=0.1, steps_per_epoch=1)
    decayed, plain = opt.param_groups
    assert decayed["nesterov"] and decayed["weight_decay"] == cfg.optim.weight_decay and plain["weight_decay"] == 0
    assert all(p.ndim > 1 for p in decayed["params"]) and all(p.ndim == 1 for p in plain["params"])
    assert len(decayed["params"]) + len(plain["params"]) == len(list(net.parameters()))
    cfg.optim.nesterov, cfg.optim.decay_norm_and_bias = False, True
    opt, _ = components.build_optimizer(cfg.optim, cfg.schedule, net.parameters(), lr=0.1, steps_per_epoch=1)
    assert len(opt.param_groups) == 1 and not opt.param_groups[0]["nesterov"]


def test_strong_view_near_the_weak_one_without_flips_draws_the_same_numbers():
    spec = dict(primary=(2, 2), aux=(4, 1), crop_size=16, short_side=20)
    near = sampling.ClipSpec(**spec, strong_jitter=0.0, flip=False)
    anywhere = sampling.ClipSpec(**spec)
    xs = []
    for key in range(50):
        views = [sampling.UNLABELED.draw_views(sampling.sample_rng(0, 1, 0, key), s) for s in (near, anywhere)]
        v_near, v_any = views[0]["primary_strong"], views[1]["primary_strong"]
        assert (v_near.x, v_near.y, v_near.flip) == (0.5, 0.5, False)
        assert np.array_equal(v_near.ra, v_any.ra) and v_near.cutout == v_any.cutout  # same draws, same order
        xs.append(v_any.x)
    assert min(xs) < 0.2 and max(xs) > 0.8
    with pytest.raises(ValueError, match="strong_jitter"):
        sampling.ClipSpec(**spec, strong_jitter=1.5)


def test_rand_augment_shift_limit():
    ops = {op.name: op for op in rand_augment.clip_suite(0.3)}
    assert ops["translate_x"].mag_range == (0, 0.3) and ops["translate_y"].mag_range == (0, 0.3)
    default = {op.name: op for op in rand_augment.clip_suite()}
    assert default["translate_x"].mag_range == pytest.approx((0, 100 / 224))
    assert [op.name for op in rand_augment.clip_suite(0.3)] == [op.name for op in rand_augment.clip_suite()]


def test_the_recipe_keys_are_checked_config():
    cfg = presets.get("digits")
    assert cfg.model.stem == "small" and cfg.method.weak_forward == "no_dropout" and cfg.optim.ema_decay > 0
    assert cfg.data.unlabeled_batch >= 3 * cfg.data.labeled_batch  # mu >= 3
    with pytest.raises(config.ConfigError, match="optim.ema_decay"):
        config.validate(config.apply_overrides(cfg, [("optim.ema_decay", "1.5")]))
    with pytest.raises(config.ConfigError, match="model.stem"):
        config.apply_overrides(cfg, [("model.stem", "deep")])
    for name in presets.names():  # the paper presets keep the paper's settings
        if name.startswith(("ucf101", "k400")):
            p = presets.get(name)
            assert (p.model.stem, p.method.weak_forward, p.optim.ema_decay, p.optim.nesterov, p.data.flip) == (
                "imagenet", "train", 0.0, False, True), name


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("data") / "synthetic", per_class=3)


def _run(*args: str, timeout: float = 300) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    p = subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    return p.stdout


def test_ema_is_trained_checkpointed_resumed_and_evaluated(dataset, tmp_path):
    run = tmp_path / "run"
    train = ["-m", "cmpl.train", "--preset", "tiny", "--data.root", str(dataset), "--run.dir", str(run),
             "--method.name=fixmatch", "--optim.ema_decay=0.5", "--model.dropout=0.3",
             "--method.weak_forward=no_dropout", "--run.checkpoint_every=1"]
    _run(*train, "--schedule.max_steps=2")
    ckpt = torch.load(run / "checkpoints/last.pt", map_location="cpu", weights_only=True)
    ema = {k.removeprefix("module."): v for k, v in ckpt["ema"]["primary"].items() if k != "n_averaged"}
    raw = ckpt["models"]["primary"]
    assert ema.keys() == raw.keys() and int(ckpt["ema"]["primary"]["n_averaged"]) == 2
    assert any(not torch.equal(ema[k], raw[k]) for k in raw if raw[k].is_floating_point())
    val = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("top1_f_ema" in r for r in val if r["kind"] == "val")
    out = _run(*train, "--schedule.max_steps=3")  # resumes, the EMA with it
    assert "resumed from" in out
    ckpt = torch.load(run / "checkpoints/last.pt", map_location="cpu", weights_only=True)
    assert int(ckpt["ema"]["primary"]["n_averaged"]) == 3
    _run("-m", "cmpl.evaluate", "--checkpoint", str(run / "checkpoints/last.pt"), "--weights", "ema")
    result = json.loads((run / "eval_ema.json").read_text())
    assert result["weights"] == "ema" and result["num_videos"] > 0


def test_study_evaluates_the_ema_and_fills_the_recipe_grid(tmp_path):
    rows = {v.name: v for v in study.resolve_variants("recipe", None, "digits")}
    assert rows["mu1"].overrides == (f"--data.unlabeled_batch={presets.get('digits').data.labeled_batch}",)
    assert rows["fixmatch"].overrides == () and rows["supervised"].method == "supervised"
    job = study.Job(rows["fixmatch"], "10pct", 1, tmp_path / "r", ema=True)
    assert job.evaluations == ("primary", "primary_ema")
    cmd = study.eval_command(job, "primary_ema", ())
    assert cmd[cmd.index("--weights") + 1] == "ema" and cmd[cmd.index("--network") + 1] == "primary"
    assert job.eval_json("primary_ema") != job.eval_json("primary")
    assert study.DEFAULT_PRESET == "digits"


def test_report_curves_average_seeds_over_the_second_half(tmp_path):
    from cmpl.analysis.study_report import pl_curves, second_half

    results = []
    for seed in (0, 1):
        run = tmp_path / f"fixmatch_10pct_seed{seed}"
        run.mkdir()
        lines = [{"kind": "train", "step": s, "mask_f": s / 10 + seed / 10, "pl_acc_f": 0.9} for s in (2, 4, 6, 8, 10)]
        lines.append({"kind": "val", "step": 10, "top1_f": 0.5})
        (run / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
        results.append(SimpleNamespace(job=SimpleNamespace(variant=SimpleNamespace(name="fixmatch"),
                                                           split="10pct", run_dir=run)))
    curves = pl_curves(results)[("fixmatch", "10pct")]
    steps, mask = curves["mask_f"]
    assert steps == [2, 4, 6, 8, 10] and mask[0] == pytest.approx(0.25)
    assert second_half(curves["mask_f"]) == pytest.approx(np.mean([0.65, 0.85, 1.05]))
    assert "mask_a" not in curves


def test_weight_ema_matches_the_formula_and_averaged_models_layout():
    from cmpl.ema import WeightEMA

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = WeightEMA(net, 0.9)
    first = {k: v.clone() for k, v in net.state_dict().items()}
    ema.update(net)  # the first update copies
    with torch.no_grad():
        for p in net.parameters():
            p.add_(1.0)
    net.train()(torch.randn(4, 3))  # moves BN's running stats and num_batches_tracked
    ema.update(net)
    now = net.state_dict()
    for k, v in ema.module.state_dict().items():
        if v.is_floating_point():
            assert torch.allclose(v, 0.9 * first[k] + 0.1 * now[k]), k
        else:
            assert torch.equal(v, now[k]), k
    state = ema.state_dict()
    assert int(state["n_averaged"]) == 2 and set(state) == {"n_averaged", *(f"module.{k}" for k in now)}
    again = WeightEMA(net, 0.9)
    again.load_state_dict(state)
    assert again._count == 2
    assert not any(p.requires_grad for p in ema.module.parameters())
