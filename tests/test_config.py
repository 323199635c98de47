"""Config tree: presets, typed overrides, clean CLI failures, lossless TOML round trip."""
from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest

from cmpl import cli, config, presets
from cmpl.config import ConfigError


@pytest.mark.parametrize("name", presets.names())
def test_every_preset_builds_and_round_trips(name, tmp_path):
    cfg = presets.get(name)
    path = tmp_path / "c.toml"
    config.save(cfg, path)
    assert config.load(path) == cfg
    assert config.dumps(config.load(path)) == config.dumps(cfg)


def test_paper_presets_follow_the_paper():
    for ds, wd in (("ucf101", 1e-3), ("k400", 1e-4)):
        for pct, lam in ((1, 5.0), (10, 2.0)):
            for bb in ("r18", "r50"):
                cmpl = presets.get(f"{ds}_{pct}pct_{bb}")
                assert (cmpl.method.name, cmpl.method.scheme) == ("cmpl", "cross")
                assert cmpl.optim.weight_decay == wd and cmpl.method.lambda_u == lam
                assert cmpl.method.threshold == 0.9 and cmpl.schedule.epochs == 200
                assert (cmpl.data.labeled_batch, cmpl.data.unlabeled_batch) == (2, 10)
                assert (cmpl.data.primary, cmpl.data.aux) == ((8, 8), (16, 4))
                assert cmpl.model.primary == {"r18": "resnet3d18", "r50": "resnet3d50"}[bb]
                assert presets.get(f"{ds}_{pct}pct_{bb}_fixmatch").method.name == "fixmatch"
                assert presets.get(f"{ds}_{pct}pct_{bb}_supervised").method.name == "supervised"
    abl = presets.get("k400_ablation")
    assert abl.schedule.epochs == 50 and abl.data.split == "1pct_seed0"
    assert abl.data.time_offset == 0.0  # Tables 3, 4, 6 and Table 5's t_s = 1: no temporal-location shift


def test_overrides_apply_with_types():
    cfg = config.apply_overrides(presets.get("tiny"), [
        ("optim.lr", "0.5"), ("runtime.compile", None), ("data.primary", "2,3"), ("runtime.seed", "7"),
        ("method.aux_supervised", "false"), ("data.root", "/x"), ("method.scheme", "average"),
    ])
    assert cfg.optim.lr == 0.5 and cfg.runtime.compile is True and cfg.data.primary == (2, 3)
    assert cfg.runtime.seed == 7 and cfg.method.aux_supervised is False and cfg.data.root == "/x"
    assert cfg.method.scheme == "average"
    assert presets.get("tiny").optim.lr != 0.5  # presets are fresh objects, never mutated


def test_parse_argv_forms():
    opts, ov = cli.parse_argv(["--preset", "tiny", "--data.root", "d", "--optim.lr=1", "--runtime.compile"],
                                 options=("preset",))
    assert opts == {"preset": "tiny"}
    assert ov == [("data.root", "d"), ("optim.lr", "1"), ("runtime.compile", None)]


@pytest.mark.parametrize("override, words", [
    (("optim.lr", "abc"), ["optim.lr", "number"]),
    (("runtime.seed", "1.5"), ["runtime.seed", "integer"]),
    (("runtime.compile", "maybe"), ["runtime.compile", "true or false"]),
    (("data.primary", "1,2,3"), ["data.primary", "2"]),
    (("method.name", "mixmatch"), ["method.name", "cmpl", "fixmatch", "supervised"]),
    (("optim.foo", "1"), ["optim.foo", "lr", "base_batch", "momentum", "weight_decay"]),
    (("nosuch.key", "1"), ["nosuch", "data", "model", "method", "optim", "schedule", "runtime", "run"]),
    (("optim.lr", None), ["optim.lr", "needs a value"]),
])
def test_bad_overrides_name_the_key(override, words):
    with pytest.raises(ConfigError) as e:
        config.apply_overrides(presets.get("tiny"), [override])
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_bad_toml_value_names_file_and_key(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text('[optim]\nlr = "fast"\n')
    with pytest.raises(ConfigError, match=r"bad\.toml: optim\.lr"):
        config.load(p)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "cmpl.config", *args], capture_output=True, text=True)


def test_cli_prints_toml_that_loads_back(tmp_path):
    r = _cli("--preset", "k400_1pct_r50_fixmatch", "--optim.lr=0.2", "--data.root", "data/k")
    assert r.returncode == 0, r.stderr
    path = tmp_path / "c.toml"
    path.write_text(r.stdout)
    again = _cli("--config", str(path))
    assert again.returncode == 0 and again.stdout == r.stdout
    cfg = config.load(path)
    assert cfg.optim.lr == 0.2 and cfg.data.root == "data/k" and cfg.method.name == "fixmatch"


@pytest.mark.parametrize("args", [
    ("--preset", "tiny", "--optim.lr=abc"),
    ("--preset", "tiny", "--optim.nope=1"),
    ("--preset", "no_such_preset"),
    ("--config", "/no/such/file.toml"),
    ("--preset", "tiny", "stray"),
    ("--preset", "tiny", "--schedule.max_steps=-5"),
    ("--preset", "tiny", "--method.threshold=1.5"),
])
def test_cli_user_errors_exit_2_with_one_line(args):
    r = _cli(*args)
    assert r.returncode == 2
    assert r.stdout == "" and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr


def test_unknown_model_name_is_a_config_error_naming_the_key():
    from cmpl.cli import resolve

    with pytest.raises(ConfigError, match=r"model\.primary: unknown model 'resnet3d10_w1_2'; valid names: "):
        resolve(["--preset", "demo", "--model.primary=resnet3d10_w1_2"])
    cfg, _ = resolve(["--preset", "demo", "--model.aux=resnet3d18_w1_4"])
    assert cfg.model.aux == "resnet3d18_w1_4"


@pytest.mark.parametrize("override, words", [
    (("schedule.max_steps", "-5"), ["schedule.max_steps must be >= 0", "got -5"]),
    (("schedule.steps", "-1"), ["schedule.steps must be >= 0", "got -1"]),
    (("schedule.epochs", "0"), ["schedule.epochs must be > 0 and finite", "got 0"]),
    (("schedule.warmup_steps", "-3"), ["schedule.warmup_steps", "got -3"]),
    (("data.labeled_batch", "0"), ["data.labeled_batch must be >= 1", "got 0"]),
    (("data.unlabeled_batch", "-2"), ["data.unlabeled_batch", "got -2"]),
    (("data.eval_batch", "0"), ["data.eval_batch", "got 0"]),
    (("data.primary", "0,8"), ["data.primary must be >= 1 (frames and stride)", "got 0, 8"]),
    (("data.aux", "16,0"), ["data.aux", "got 16, 0"]),
    (("data.crop_size", "0"), ["data.crop_size", "got 0"]),
    (("data.eval_clips", "0"), ["data.eval_clips", "got 0"]),
    (("data.time_offset", "-1"), ["data.time_offset", "got -1"]),
    (("method.threshold", "1.5"), ["method.threshold must be in [0, 1]", "got 1.5"]),
    (("method.threshold", "-0.1"), ["method.threshold", "got -0.1"]),
    (("method.lambda_u", "-1"), ["method.lambda_u", "got -1"]),
    (("model.dropout", "1"), ["model.dropout must be in [0, 1)", "got 1"]),
    (("optim.lr", "0"), ["optim.lr must be > 0", "got 0"]),
    (("optim.lr", "nan"), ["optim.lr", "got nan"]),
    (("optim.base_batch", "0"), ["optim.base_batch", "got 0"]),
    (("run.keep_last", "0"), ["run.keep_last must be >= 1", "got 0"]),
    (("run.checkpoint_every", "0"), ["run.checkpoint_every", "got 0"]),
    (("run.log_every", "0"), ["run.log_every", "got 0"]),
])
def test_values_no_run_could_use_are_one_line_errors(override, words):
    cfg = config.apply_overrides(presets.get("tiny"), [override])  # the type is fine: only validate refuses it
    with pytest.raises(ConfigError) as e:
        config.validate(cfg)
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg
    with pytest.raises(ConfigError):
        cli.resolve(["--preset", "tiny", f"--{override[0]}={override[1]}"])


def test_every_range_names_a_key_and_every_preset_is_in_range():
    for dotted, _, _ in config.RANGES:
        section, key = dotted.split(".")
        assert hasattr(getattr(config.Config(), section), key), dotted
    for name in presets.names():
        config.validate(presets.get(name))
    edge = [("schedule.max_steps", "0"), ("method.threshold", "0"), ("method.threshold", "1"),
            ("optim.lr", "inf"), ("run.eval_every", "0"), ("model.num_classes", "0"), ("method.lambda_u", "0")]
    config.validate(config.apply_overrides(presets.get("tiny"), edge))  # limits that are meaningful values


def test_every_command_defaults_to_the_same_preset():
    """cmpl.config, cmpl.train and cmpl.study (and every command built on cli.resolve) use `digits` without
    --preset."""
    from cmpl import study

    assert cli.DEFAULT_PRESET == study.DEFAULT_PRESET == "digits"
    cfg, _ = cli.resolve([])
    assert cfg == presets.get("digits")
    r = _cli()
    assert r.returncode == 0 and config.from_dict(tomllib.loads(r.stdout)) == presets.get("digits")
