"""The one table of methods and network roles. Pure Python (no torch), so config, presets, reports and the
analyses read it as cheaply as the trainer does.

A *role* is a place a network takes in a method: `primary` (F, the network that is reported and shipped)
and `aux` (A, the auxiliary network that only helps training). Each role names the config fields that
give its model (`model.<role>`) and its clip (`data.<role>` = (frames, stride)), the letter of its
statistics (`loss_s_f`, `mask_a`, ...), and the file its official evaluation is written to.

A *method* declares the roles it trains; `cmpl.methods` holds the Task that implements it. Adding a
method = one `MethodSpec` here + one Task class there (tests check that the two tables agree).

Weight sharing: with `model.aux_shared = true` the `aux` role is played by the primary network itself,
fed A's clip (the paper's Table 3 "Primary" rows and Table 2 rows 2-3: one network, two clips).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Role:
    name: str  # "primary" | "aux": also the field name in ModelConfig and DataConfig
    letter: str  # suffix of the role's statistics: loss_s_<letter>, mask_<letter>, top1_<letter>
    symbol: str  # the paper's letter: F | A
    label: str  # for plots and tables
    eval_file: str  # RUN/<eval_file>, written by cmpl.evaluate

    def clip(self, data_cfg: Any) -> tuple[int, int]:
        """(frames, stride) of this role's clips in a DataConfig."""
        return tuple(getattr(data_cfg, self.name))

    def eval_name(self, ema: bool = False) -> str:
        """RUN/<file> of this role's evaluation; `_ema` before `.json` for its EMA weights."""
        return self.eval_file.replace(".json", "_ema.json") if ema else self.eval_file

    def model_name(self, model_cfg: Any) -> str:
        """Registry name (cmpl.models) of this role's network in a ModelConfig."""
        return getattr(model_cfg, self.name)


ROLES: dict[str, Role] = {
    "primary": Role("primary", "f", "F", "F (primary)", "eval.json"),
    "aux": Role("aux", "a", "A", "A (auxiliary)", "eval_aux.json"),
}


@dataclass(frozen=True)
class MethodSpec:
    name: str
    title: str  # as in tables
    roles: tuple[str, ...]  # the roles whose networks the method trains, primary first
    uses_unlabeled: bool  # whether a step draws an unlabeled batch


METHODS: dict[str, MethodSpec] = {
    spec.name: spec for spec in (
        MethodSpec("supervised", "Supervised", ("primary",), uses_unlabeled=False),
        MethodSpec("fixmatch", "FixMatch", ("primary",), uses_unlabeled=True),
        MethodSpec("cmpl", "CMPL", ("primary", "aux"), uses_unlabeled=True),
    )
}


def role(name: str) -> Role:
    if name not in ROLES:
        raise ValueError(f"unknown network role {name!r}; expected one of {', '.join(ROLES)}")
    return ROLES[name]


def method(name: str) -> MethodSpec:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; expected one of {', '.join(METHODS)}")
    return METHODS[name]


def network_of(role_name: str, *, aux_shared: bool) -> str:
    """The name of the network (checkpoint key) that plays `role_name`: aux is the primary when shared."""
    return "primary" if role_name == "aux" and aux_shared else role(role_name).name
