"""Command-line frame shared by every cmpl entry point: `--preset NAME` / `--config FILE` (neither: the
`digits` preset, the small-data recipe, as for every command that takes them), then `--section.key=value` overrides (cmpl.config
checks their types and ranges), other named options, and one-line errors.

    python -m cmpl.config                                       # the digits preset as TOML
    python -m cmpl.config --preset tiny --optim.lr=0.05        # print the resolved TOML
    python -m cmpl.config --preset k400_1pct_r50 > my.toml
    python -m cmpl.config --config my.toml --runtime.seed=1
    python -m cmpl.config --list                                # preset names
"""
from __future__ import annotations

import sys
import typing
from typing import Any, Sequence

from cmpl import presets
from cmpl.config import Config, ConfigError, apply_overrides, dumps, load, validate

DEFAULT_PRESET = "digits"  # what every command taking --preset / --config uses without either (cmpl.study too)


def parse_argv(
    argv: Sequence[str], *, options: Sequence[str] = (), flags: Sequence[str] = ()
) -> tuple[dict[str, Any], list[tuple[str, str | None]]]:
    """Split a command line into named options and `section.key` overrides.

    `options` take a value (`--out X` / `--out=X`), `flags` take none. Everything else must be
    `--section.key=value`, `--section.key value` or a bare `--section.key` (true, for bools).
    Returns (options dict, [(dotted key, value or None)]).
    """
    opts: dict[str, Any] = {}
    overrides: list[tuple[str, str | None]] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        if not tok.startswith("--"):
            raise ConfigError(f"unexpected argument {tok!r}; options look like --section.key=value")
        name, eq, value = tok[2:].partition("=")
        if name in flags:
            opts[name] = True
        elif name in options or "." in name:
            if not eq:
                nxt = argv[i + 1] if i + 1 < len(argv) else None
                is_value = nxt is not None and not (nxt.startswith("--") and len(nxt) > 2)
                if is_value:
                    value, i = nxt, i + 1
                elif name in options:
                    raise ConfigError(f"--{name} needs a value")
                else:
                    value = None  # bare flag: only valid for bools, checked in apply_overrides
            if name in options:
                opts[name] = value
            else:
                overrides.append((name, value))
        else:
            valid = ", ".join(f"--{o}" for o in (*options, *flags))
            raise ConfigError(f"unknown option --{name}; valid: {valid}, or --section.key=value")
        i += 1
    return opts, overrides


def resolve(
    argv: Sequence[str],
    *,
    default_preset: str = DEFAULT_PRESET,
    options: Sequence[str] = (),
    flags: Sequence[str] = (),
) -> tuple[Config, dict[str, Any]]:
    """`--preset NAME` or `--config FILE` (else `default_preset`), then overrides; types and ranges checked.

    Returns the config and the other named options. Raises ConfigError on user errors.
    """
    opts, overrides = parse_argv(argv, options=("preset", "config", *options), flags=flags)
    if opts.get("preset") and opts.get("config"):
        raise ConfigError("give either --preset or --config, not both")
    if opts.get("config"):
        cfg = load(opts["config"])
    else:
        cfg = presets.get(opts.get("preset") or default_preset)
    cfg = validate(apply_overrides(cfg, overrides))
    _check_models(cfg)
    return cfg, opts


def _check_models(cfg: Config) -> None:
    """Model names are checked here, so a typo is one line naming the key, not a traceback at build time."""
    from cmpl import models  # here, not at the top: `python -m cmpl.config` needs no torch otherwise

    for key in ("primary", "aux"):
        name = getattr(cfg.model, key)
        if name not in models.names():
            raise ConfigError(f"model.{key}: unknown model {name!r}; valid names: {', '.join(models.names())}")


def fail(message: str) -> typing.NoReturn:
    """One line on stderr and exit code 2: how every CLI of the project reports a user error."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def run_cli(doc: str, argv: Sequence[str] | None, body: typing.Callable[[list[str]], None],
            errors: tuple[type[Exception], ...] = ()) -> None:
    """The frame every CLI of cmpl shares: `-h` prints `doc`; a ConfigError (or one of `errors`) raised by
    `body(argv)` becomes one line on stderr and exit code 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "-h" in args or "--help" in args:
        print(doc)
        return
    try:
        body(args)
    except (ConfigError, *errors) as e:
        fail(str(e))


def _print_config(argv: list[str]) -> None:
    if "--list" in argv:
        print("\n".join(presets.names()))
        return
    cfg, _ = resolve(argv)
    sys.stdout.write(dumps(cfg))


def config_main(argv: Sequence[str] | None = None) -> None:
    """`python -m cmpl.config`: print the resolved config as TOML (or the preset names)."""
    run_cli(__doc__, argv, _print_config)


__all__ = ["DEFAULT_PRESET", "config_main", "fail", "parse_argv", "resolve", "run_cli"]
