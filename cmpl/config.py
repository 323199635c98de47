"""Typed run configuration: one tree of small `kw_only` dataclasses, TOML, checked overrides.

Each component receives only its own section (`cfg.data`, `cfg.model`, ...). A config is built from a
named preset (`cmpl/presets.py`) or a TOML file written by this module, then `section.key=value`
overrides are applied with their types checked (`cmpl/cli.py` parses them from the command line). User
errors raise `ConfigError`; the CLIs turn it into one line on stderr and exit code 2.

    python -m cmpl.config --preset tiny --optim.lr=0.05        # print the resolved TOML
    python -m cmpl.config --preset k400_1pct_r50 > my.toml
    python -m cmpl.config --config my.toml --runtime.seed=1
    python -m cmpl.config --list                                # preset names
"""
from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import tomli_w

from cmpl.registry import METHODS


class ConfigError(ValueError):
    """A user error in a preset name, TOML file or override; the message is one line."""


def _choice(default: str, *choices: str) -> Any:
    return field(default=default, metadata={"choices": choices})


@dataclass(kw_only=True)
class DataConfig:
    root: str = "data/synthetic"  # dataset folder in the ARCHITECTURE.md section 1 format
    split: str = "1pct_seed0"  # labeled subset: ROOT/splits/<split>.txt; the rest of train.csv is unlabeled
    primary: tuple[int, int] = (8, 8)  # (frames, stride) of F's clips: the paper's 8x8
    aux: tuple[int, int] = (16, 4)  # (frames, stride) of A's clips: the paper's 16x4
    time_offset: float = 0.0  # max temporal shift t_s (seconds) between F's and A's clips (paper Sec. 3.3)
    crop_size: int = 224  # training crop side (pixels)
    short_side: int = 256  # training frames are resized to this short side before cropping
    labeled_batch: int = 2  # B_l per process
    unlabeled_batch: int = 10  # B_u per process
    eval_batch: int = 1  # videos per eval batch per process (each holds clips x crops views)
    eval_clips: int = 10  # official test: clips uniformly over the video (paper Sec. 4.1)
    eval_crops: int = 3  # official test: spatial crops per clip
    eval_crop_size: int = 256  # official test crop side
    eval_short_side: int = 256  # official test resize
    val_clips: int = 10  # periodic validation during training (cheaper settings on CPU presets)
    val_crops: int = 3
    device: str = _choice("auto", "auto", "cuda", "cpu")  # where loaders decode (DALI); auto: cuda if available
    num_threads: int = 2  # DALI CPU threads per loader
    # Augmentation of the training views. flip: horizontal flips in the labeled and strong views (off for
    # content a mirror changes, such as digits); strong_jitter: how far the strong crop's anchor may stray
    # from the weak (centre) crop, as a fraction of the free range (1: anywhere, the FixMatch-for-video
    # default; a small object can fall out of a far crop); ra_translate: RandAugment's largest shift as a
    # fraction of the crop (DALI's 100/224; FixMatch's RandAugment 0.3).
    flip: bool = True
    strong_jitter: float = 1.0
    ra_translate: float = 100 / 224


@dataclass(kw_only=True)
class ModelConfig:
    primary: str = "resnet3d50"  # F, a name in cmpl.models.names()
    aux: str = "resnet3d50_w1_4"  # A (cmpl only); the paper shrinks F's width fourfold
    layout: str = _choice("cmpl", "cmpl", "slowonly")  # stem/kernel layout of cmpl.models
    dropout: float = 0.5  # dropout before the classifier
    num_classes: int = 0  # 0: count the lines of ROOT/classes.txt
    # The aux role is played by the primary network itself, fed A's clip (paper Table 3 "Primary" rows,
    # Table 2 rows 2-3); model.aux is then unused.
    aux_shared: bool = False
    # conv1 of both networks: "imagenet" (7x7 stride 2 + max-pool, the paper's), "small" (3x3 stride 2, no
    # pool) or "cifar" (3x3 stride 1, no pool) for clips of a few dozen pixels (cmpl/models/blocks.py).
    stem: str = _choice("imagenet", "imagenet", "small", "cifar")


@dataclass(kw_only=True)
class MethodConfig:
    name: str = _choice("cmpl", *METHODS)  # cmpl.registry.METHODS
    scheme: str = _choice(
        "cross", "cross", "self_first", "opposite_first", "maximum", "average", "fixmatch"
    )  # pseudo-labeling scheme (paper Appendix A)
    threshold: float = 0.9  # tau: confidence needed for a pseudo-label
    lambda_u: float = 5.0  # lambda: weight of the unsupervised losses (5 at 1%, 2 at 10%)
    aux_supervised: bool = True  # keep L_s^A (paper Table 6)
    aux_unsupervised: bool = True  # keep L_u^A (paper Table 6)
    # How the weak (pseudo-label) views go through a network, without gradient and with BN in train mode:
    # "train" keeps dropout active (each pseudo-label is one dropout sample); "no_dropout" switches dropout
    # off for that forward, so the pseudo-label is the network's deterministic prediction.
    weak_forward: str = _choice("train", "train", "no_dropout")
    # > 0: distribution alignment (ReMixMatch) of each network's weak predictions, with this momentum for the
    # running mean prediction (cmpl/dist_align.py; 0.99 ~ ReMixMatch's 128-batch window). 0: off (the paper).
    dist_align: float = 0.0
    # > 0: lambda ramps linearly from 0 to `lambda_u` over this many optimizer steps (the ramp-up of Mean Teacher
    # and MixMatch), so the few, often wrong, pseudo-labels of the first steps weigh little. 0: off (the paper).
    lambda_warmup_steps: int = 0


@dataclass(kw_only=True)
class OptimConfig:
    lr: float = 0.1  # base LR at `base_batch`; scaled linearly to the actual global batch
    base_batch: int = 192  # global batch the base LR is for: the paper's 16 GPUs x (2 + 10)
    # Which videos count in that global batch: "all" (labeled + unlabeled, the paper's rule, so the
    # semi-supervised methods run at a higher LR than the supervised baseline) or "labeled" (every method
    # gets the same LR, for a comparison where only the unlabeled loss differs).
    scale_by: str = _choice("all", "all", "labeled")
    momentum: float = 0.9
    weight_decay: float = 1e-4  # the paper: 1e-4 for K400, 1e-3 for UCF-101
    nesterov: bool = False  # Nesterov momentum (FixMatch's SGD)
    decay_norm_and_bias: bool = True  # false: no weight decay on BatchNorm weights and biases (FixMatch's)
    # > 0: keep an exponential moving average of every network's weights (and BN buffers) with this decay
    # per step; evaluation then reports the EMA networks beside the raw ones (FixMatch evaluates its EMA).
    ema_decay: float = 0.0


@dataclass(kw_only=True)
class ScheduleConfig:
    epochs: float = 200.0  # cosine schedule length in epochs
    # What one epoch is: one pass over the unlabeled set ("unlabeled", as in the FixMatch-style video
    # codebases, and the reading used by the paper presets) or over the labeled set ("labeled").
    epoch_unit: str = _choice("unlabeled", "unlabeled", "labeled")
    warmup_epochs: float = 0.0  # linear warmup from 0 (paper: none)
    # > 0: the warmup is this many optimizer steps, whatever an epoch is (overrides warmup_epochs). With a
    # fixed `steps` budget, warmup in epochs grows with the labeled set: 15 labeled epochs were 15 of 600
    # steps at 1 label per class but 480 of 600 with every video labeled.
    warmup_steps: int = 0
    max_steps: int = 0  # stop after this many optimizer steps (0: run the whole schedule); LR unchanged
    # > 0: the schedule is this many optimizer steps whatever the labeled/unlabeled set sizes (epochs and
    # warmup_epochs then count in units of steps / steps-per-epoch as usual); 0: epochs x steps per epoch.
    steps: int = 0


@dataclass(kw_only=True)
class RuntimeConfig:
    seed: int = 0  # seeds python, numpy, torch (+ rank after model init) and the loaders
    device: str = _choice("auto", "auto", "cuda", "cpu")  # training device; auto: cuda if available
    amp: str = _choice("auto", "auto", "bf16", "fp16", "off")  # auto: bf16 on GPU, off on CPU
    channels_last: bool = True  # channels_last_3d for models and inputs
    compile: bool = False  # torch.compile the models
    compile_loss: bool = False  # the fused, torch.compile'd pseudo-label loss (cmpl/losses.py)
    sync_bn: bool = False  # SyncBatchNorm under DDP


@dataclass(kw_only=True)
class RunConfig:
    dir: str = "runs/demo"  # run folder (ARCHITECTURE.md section 5); rerunning resumes from it
    checkpoint_every: int = 1000  # save last.pt every N optimizer steps (and at the end)
    keep_last: int = 2  # checkpoints kept: last.pt, last.1.pt, ... (resume falls back to an older readable one)
    log_every: int = 50  # log statistics every N steps (the only host-device sync points)
    eval_every: int = 0  # validate every N steps (0: only at the end)
    progress: bool = True  # tqdm bar on rank 0


@dataclass(kw_only=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    run: RunConfig = field(default_factory=RunConfig)


SECTIONS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Config))


def _fields(section: str) -> dict[str, dataclasses.Field]:
    cls = typing.get_type_hints(Config)[section]
    return {f.name: f for f in dataclasses.fields(cls)}


def _field_type(section: str, key: str) -> Any:
    cls = typing.get_type_hints(Config)[section]
    return typing.get_type_hints(cls)[key]


def _coerce(name: str, tp: Any, value: Any, choices: Sequence[str] = ()) -> Any:
    """Convert a CLI string or a TOML value to `tp`, or raise ConfigError naming `name`."""
    origin = typing.get_origin(tp)
    if origin is tuple:
        args = typing.get_args(tp)
        if isinstance(value, str):
            parts = [p for p in value.strip("()[] ").split(",") if p.strip()]
        elif isinstance(value, (list, tuple)):
            parts = list(value)
        else:
            raise ConfigError(f"{name}: expected {len(args)} comma-separated values, got {value!r}")
        if len(parts) != len(args):
            raise ConfigError(f"{name}: expected {len(args)} comma-separated values, got {value!r}")
        return tuple(_coerce(name, a, p) for a, p in zip(args, parts))
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        try:
            return int(str(value).strip())
        except ValueError:
            raise ConfigError(f"{name}: expected an integer, got {value!r}") from None
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        try:
            return float(str(value).strip())
        except ValueError:
            raise ConfigError(f"{name}: expected a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        if choices and value not in choices:
            raise ConfigError(f"{name}: {value!r} is not one of {', '.join(choices)}")
        return value
    raise TypeError(f"unsupported config type {tp} for {name}")  # a bug in this module, not user input


def _lookup(section: str, key: str | None = None) -> dataclasses.Field | None:
    if section not in SECTIONS:
        raise ConfigError(f"unknown config section {section!r}; valid sections: {', '.join(SECTIONS)}")
    if key is None:
        return None
    fields = _fields(section)
    if key not in fields:
        raise ConfigError(
            f"unknown config key {section}.{key}; valid keys of [{section}]: {', '.join(fields)}"
        )
    return fields[key]


def set_value(cfg: Config, dotted: str, value: Any) -> None:
    """Set `section.key` on `cfg` in place, converting and checking `value` (str or TOML value)."""
    section, _, key = dotted.partition(".")
    if not key or "." in key:
        raise ConfigError(f"config keys look like section.key, got {dotted!r}; sections: {', '.join(SECTIONS)}")
    f = _lookup(section, key)
    assert f is not None
    choices = f.metadata.get("choices", ())
    setattr(getattr(cfg, section), key, _coerce(dotted, _field_type(section, key), value, choices))


def to_dict(cfg: Config) -> dict[str, dict[str, Any]]:
    """Plain nested dict (tuples become lists), as written to TOML and into checkpoints."""

    def plain(v: Any) -> Any:
        return list(v) if isinstance(v, tuple) else v

    return {s: {k: plain(v) for k, v in dataclasses.asdict(getattr(cfg, s)).items()} for s in SECTIONS}


def from_dict(d: Mapping[str, Any], *, base: Config | None = None) -> Config:
    """Build a Config from a nested dict (TOML / checkpoint), every value checked; missing keys keep
    the defaults of `base` (or of the dataclasses)."""
    cfg = _deepcopy(base) if base is not None else Config()
    for section, values in d.items():
        _lookup(section)
        if not isinstance(values, Mapping):
            raise ConfigError(f"[{section}] must be a table, got {values!r}")
        for key, value in values.items():
            set_value(cfg, f"{section}.{key}", value)
    return cfg


def _deepcopy(cfg: Config) -> Config:
    return Config(**{s: dataclasses.replace(getattr(cfg, s)) for s in SECTIONS})


def dumps(cfg: Config) -> str:
    """The resolved config as TOML text."""
    return tomli_w.dumps(to_dict(cfg))


def load(path: str | Path) -> Config:
    """Read a TOML file written by `dumps` (or by hand; missing keys take the defaults)."""
    p = Path(path)
    try:
        with p.open("rb") as fh:
            d = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {p}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{p}: invalid TOML: {e}") from None
    try:
        return from_dict(d)
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None


def save(cfg: Config, path: str | Path) -> None:
    """Write the TOML atomically."""
    from cmpl.atomic import write_text

    write_text(path, dumps(cfg))


def apply_overrides(cfg: Config, overrides: Sequence[tuple[str, str | None]]) -> Config:
    """Return a copy of `cfg` with the overrides applied (types checked)."""
    out = _deepcopy(cfg)
    for dotted, value in overrides:
        if value is None:
            section, _, key = dotted.partition(".")
            f = _lookup(section, key) if key else None
            if f is None or _field_type(section, key) is not bool:
                raise ConfigError(f"--{dotted} needs a value (--{dotted}=VALUE)")
            value = "true"
        set_value(out, dotted, value)
    return out



# ---- value checks -------------------------------------------------------------------------------------------
# The dataclasses above hold types and defaults; the ranges live here, in one table, so that `validate` can
# reject a value no run could use (a negative step count, a batch of 0, a threshold of 2) in one line, before
# anything is built or written. Each entry: (section.key, predicate on each number of the value, what it
# must be). A key added to the tree without an entry here is only type-checked.
def _at_least(n: float) -> tuple[Callable[[float], bool], str]:
    return (lambda v: v >= n), f">= {n:g}"


def _above(n: float) -> tuple[Callable[[float], bool], str]:
    return (lambda v: v > n), f"> {n:g}"


def _within(lo: float, hi: float, *, hi_open: bool = False) -> tuple[Callable[[float], bool], str]:
    return ((lambda v: lo <= v < hi) if hi_open else (lambda v: lo <= v <= hi),
            f"in [{lo:g}, {hi:g}{')' if hi_open else ']'}")


_FINITE_POSITIVE = ((lambda v: 0 < v < float("inf")), "> 0 and finite")
RANGES: tuple[tuple[str, tuple[Callable[[float], bool], str], str], ...] = (
    # (key, (predicate, text), note added to the message)
    ("data.primary", _at_least(1), "frames and stride"),
    ("data.aux", _at_least(1), "frames and stride"),
    ("data.time_offset", _at_least(0), "seconds"),
    ("data.crop_size", _at_least(1), "pixels"),
    ("data.short_side", _at_least(1), "pixels"),
    ("data.labeled_batch", _at_least(1), "videos per process"),
    ("data.unlabeled_batch", _at_least(1), "videos per process"),
    ("data.eval_batch", _at_least(1), "videos per process"),
    ("data.eval_clips", _at_least(1), ""),
    ("data.eval_crops", _at_least(1), ""),
    ("data.eval_crop_size", _at_least(1), "pixels"),
    ("data.eval_short_side", _at_least(1), "pixels"),
    ("data.val_clips", _at_least(1), ""),
    ("data.val_crops", _at_least(1), ""),
    ("data.num_threads", _at_least(1), ""),
    ("model.dropout", _within(0, 1, hi_open=True), ""),
    ("model.num_classes", _at_least(0), "0: count ROOT/classes.txt"),
    ("method.threshold", _within(0, 1), "a confidence"),
    ("method.lambda_u", _at_least(0), ""),
    ("method.dist_align", _within(0, 1, hi_open=True), "0: off"),
    ("method.lambda_warmup_steps", _at_least(0), "0: off"),
    ("optim.lr", _above(0), ""),
    ("optim.base_batch", _at_least(1), "videos"),
    ("optim.momentum", _within(0, 1, hi_open=True), ""),
    ("optim.weight_decay", _at_least(0), ""),
    ("optim.ema_decay", _within(0, 1, hi_open=True), "0: no EMA"),
    ("data.strong_jitter", _within(0, 1), "a fraction of the free range"),
    ("data.ra_translate", _within(0, 1), "a fraction of the crop"),
    ("schedule.epochs", _FINITE_POSITIVE, ""),
    ("schedule.warmup_epochs", _at_least(0), ""),
    ("schedule.warmup_steps", _at_least(0), "0: warmup_epochs"),
    ("schedule.max_steps", _at_least(0), "0: the whole schedule"),
    ("schedule.steps", _at_least(0), "0: epochs x steps per epoch"),
    ("run.checkpoint_every", _at_least(1), "steps"),
    ("run.keep_last", _at_least(1), "checkpoints"),
    ("run.log_every", _at_least(1), "steps"),
    ("run.eval_every", _at_least(0), "0: only at the end"),
)


def validate(cfg: Config) -> Config:
    """Raise ConfigError (one line: key, allowed range, value) for the first value outside `RANGES`; return
    `cfg`. Called wherever a config is built for a run (cmpl.cli.resolve, the Trainer, cmpl.evaluate)."""
    for dotted, (ok, text), note in RANGES:
        section, _, key = dotted.partition(".")
        value = getattr(getattr(cfg, section), key)
        numbers = value if isinstance(value, tuple) else (value,)
        if not all(ok(v) for v in numbers):
            shown = ", ".join(f"{v:g}" for v in numbers)
            raise ConfigError(f"{dotted} must be {text}{f' ({note})' if note else ''}, got {shown}")
    return cfg


if __name__ == "__main__":
    # The body lives in cmpl.cli, which uses the imported cmpl.config, not this __main__ copy of it (this block
    # belongs to the module `__main__`, so it closes no import circle: tests/test_imports.py).
    from cmpl.cli import config_main
    from preprocess.entry import run_main

    run_main(config_main)
