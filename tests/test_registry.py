"""cmpl.registry (methods and roles), cmpl.components (the builders) and the weight-shared auxiliary."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import cpu_step, random_clip_batches, write_synthetic
from test_models import _unzero_residual_gammas

from cmpl import cli, components, config, presets, registry
from cmpl.analysis import report
from cmpl.evaluate import load_network, network_clip
from cmpl.methods import TASKS, build_task
from cmpl.trainer import Trainer, due

REPO = Path(__file__).resolve().parents[1]


def test_every_method_has_one_task_and_known_roles():
    assert set(TASKS) == set(registry.METHODS)
    for name, spec in registry.METHODS.items():
        assert TASKS[name].spec is spec
        assert spec.roles[0] == "primary" and set(spec.roles) <= set(registry.ROLES)
    # every reader of the method list reads the registry
    assert config.MethodConfig.__dataclass_fields__["name"].metadata["choices"] == tuple(registry.METHODS)
    assert report.METHODS == tuple(registry.METHODS)
    assert {p.method.name for p in map(presets.get, presets.names())} == set(registry.METHODS)


def test_roles_name_their_clip_model_and_eval_file():
    cfg = presets.get("demo")
    assert registry.role("primary").clip(cfg.data) == cfg.data.primary == network_clip(cfg, "primary")
    assert registry.role("aux").clip(cfg.data) == cfg.data.aux == network_clip(cfg, "aux")
    assert registry.role("aux").model_name(cfg.model) == cfg.model.aux
    assert [r.eval_file for r in registry.ROLES.values()] == ["eval.json", "eval_aux.json"]
    assert registry.network_of("aux", aux_shared=True) == "primary"
    assert registry.network_of("aux", aux_shared=False) == "aux"
    with pytest.raises(ValueError, match="unknown network role 'teacher'"):
        registry.role("teacher")


def test_build_networks_separate_and_shared():
    cfg = presets.get("tiny")
    separate = components.build_networks(cfg.model, ("primary", "aux"), num_classes=3)
    assert separate["primary"] is not separate["aux"]
    assert list(components.distinct(separate)) == ["primary", "aux"]
    cfg.model.aux_shared = True
    shared = components.build_networks(cfg.model, ("primary", "aux"), num_classes=3)
    assert shared["aux"] is shared["primary"]
    assert list(components.distinct(shared)) == ["primary"]
    # the optimizer steps each shared parameter once
    params = [p for m in shared.values() for p in m.parameters()]
    opt, _ = components.build_optimizer(cfg.optim, cfg.schedule, params, lr=0.1, steps_per_epoch=2)
    assert len(opt.param_groups[0]["params"]) == len(list(shared["primary"].parameters()))


def test_shared_aux_step_trains_the_one_network_on_both_clips():
    """Table 3's "Primary" auxiliary: one network fed F's and A's clips; every parameter gets a gradient."""
    cfg = presets.get("tiny")
    cfg.model.aux_shared = True
    torch.manual_seed(0)
    nets = components.build_networks(cfg.model, ("primary", "aux"), num_classes=3)
    _unzero_residual_gammas(nets["primary"])  # else the zero-init gammas hide the branch convs' gradients
    seen = []
    nets["primary"].register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape[:3])))
    task = build_task(cfg.method, nets)
    opt, sched = components.build_optimizer(cfg.optim, cfg.schedule, [*nets["primary"].parameters()], lr=0.1,
                                            steps_per_epoch=1)
    step = cpu_step(task, opt, sched)
    labeled, unlabeled = random_clip_batches()
    out = step(labeled, unlabeled)
    assert torch.isfinite(out["loss"]) and {"loss_s_a", "loss_u_a"} <= set(out)
    assert sorted(seen) == sorted([(4, 3, 4), (4, 3, 8), (6, 3, 4), (6, 3, 8)])  # weak F, weak A, joint F, A
    for name, p in nets["primary"].named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_due_schedule():
    run = presets.get("tiny").run
    run.log_every, run.eval_every, run.checkpoint_every = 2, 3, 4
    assert due(1, 10, run) == (False, False, False)
    assert due(2, 10, run) == (True, False, False)
    assert due(3, 10, run) == (False, True, False)
    assert due(4, 10, run) == (True, False, True)
    assert due(10, 10, run) == (True, True, True)
    run.eval_every = 0
    assert not due(3, 10, run).validate


def test_cli_is_apart_from_config():
    cfg, opts = cli.resolve(["--preset", "tiny", "--model.aux_shared", "--out", "x"], options=("out",))
    assert cfg.model.aux_shared and opts["out"] == "x"
    assert not hasattr(config, "parse_argv") and not hasattr(config, "resolve")
    r = subprocess.run([sys.executable, "-m", "cmpl.config", "--preset", "nope"], cwd=REPO, capture_output=True,
                       text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "unknown preset 'nope'" in r.stderr


def test_trainer_with_shared_aux_saves_one_network(tmp_path):
    data = write_synthetic(tmp_path / "data", per_class=2)
    cfg = config.apply_overrides(presets.get("tiny"), [
        ("data.root", str(data)), ("run.dir", str(tmp_path / "run")), ("model.aux_shared", "true"),
        ("schedule.max_steps", "2"), ("run.eval_every", "0")])
    trainer = Trainer(cfg, echo=lambda s: None)
    assert cfg.model.num_classes == 0 and trainer.cfg.model.num_classes == 3  # the caller's config is untouched
    last = trainer.run()
    assert {"top1_f", "top1_a"} <= set(last["val"])
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert list(state["models"]) == ["primary"] and state["classes"] == trainer.classes
    assert state["fps"] > 0  # predict/export need the training frame rate without the dataset folder
    net, loaded_cfg, _ = load_network(tmp_path / "run" / "checkpoints" / "last.pt", "aux")
    assert loaded_cfg.model.aux_shared
    for k, v in net.state_dict().items():
        assert torch.equal(v, state["models"]["primary"][k]), k
