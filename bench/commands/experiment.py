"""Experiment files: every option of `bench run`, `--set` keys included, in one TOML file
that can be committed beside a paper and rerun (`bench run --config exp.toml`).

Keys are the long options without their dashes (`data-root` or `data_root`); lists are TOML
arrays; `--set` keys go in a `[set]` table, flat (`"fedprox.mu" = 0.1`) or nested
(`[set.fedprox]`); a `[sweep]` table (`lr = [0.01, 0.1]`) runs every combination of its
values, as a comma list in `--set` does, for `bench table --tune` to choose on validation. The file's values come first and the command line's after them, so an
option given on the command line overrides the file (a `--set` key given in both takes the
command line's value). `bench run ... --write-config exp.toml` writes the options of a command
line as such a file; reading it back selects the same runs.

Flags of the moment stay on the command line: --config itself, --write-config, --dry-run and
--yes (a file never starts a run past the time guard by itself).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # the same parser, before it joined the standard library
    import tomli as tomllib

from .common import UsageError

COMMAND_LINE_ONLY = ("help", "config", "write_config", "dry_run", "yes")
SET_TABLE = "set"
SWEEP_TABLE = "sweep"  # KEY = [V1, V2]: one run per value (bench/config.py)


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """File key (the long option without dashes) -> its action."""
    out = {}
    for action in parser._actions:
        longs = [s for s in action.option_strings if s.startswith("--")]
        if longs and action.dest not in COMMAND_LINE_ONLY and action.dest != "overrides":
            out[longs[0][2:]] = action
    return out


def _valid(parser) -> str:
    return ", ".join([*_options(parser), SET_TABLE, SWEEP_TABLE])


def read(path: str, parser: argparse.ArgumentParser) -> list[str]:
    """The file as command-line tokens for `parser` (to be placed before the user's own)."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as e:
        raise UsageError(f"--config {path}: cannot read it ({e.strerror})") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"--config {path}: not valid TOML ({e})") from None
    options, tokens = _options(parser), []
    for key, value in data.items():
        if key == SET_TABLE:
            if not isinstance(value, dict):
                raise UsageError(f"--config {path}: `{SET_TABLE}` must be a table of KEY = VALUE "
                                 f"(e.g. [set] rounds = 30)")
            for k, v in _flatten(value).items():
                if isinstance(v, list) and _sweeps(path, f"{k}={_text(v)}"):
                    raise UsageError(f"--config {path}: [{SET_TABLE}] {k} holds one value; "
                                     f"a list of values to try goes in [{SWEEP_TABLE}]")
                tokens += ["--set", f"{k}={_text(v)}"]
            continue
        if key == SWEEP_TABLE:
            tokens += _sweep_tokens(path, value)
            continue
        action = options.get(key.replace("_", "-"))
        if action is None:
            raise UsageError(f"--config {path}: unknown key {key!r}; valid keys: "
                             f"{_valid(parser)}")
        flag = action.option_strings[-1]
        if isinstance(action, argparse._StoreTrueAction):
            if not isinstance(value, bool):
                raise UsageError(f"--config {path}: {key} must be true or false")
            tokens += [flag] if value else []
        else:
            tokens += [flag, _text(value)]
    return tokens


def _sweeps(path: str, item: str) -> bool:
    """Whether the --set item's comma list is a sweep (not one list-valued setting)."""
    from ..config import ConfigError, swept_values

    try:
        return swept_values(item) is not None
    except ConfigError as e:
        raise UsageError(f"--config {path}: {e}") from None


def _sweep_tokens(path: str, table) -> list[str]:
    """A [sweep] table (KEY = [V1, V2, ...]) as --set comma lists: one run per combination."""
    if not isinstance(table, dict):
        raise UsageError(f"--config {path}: `{SWEEP_TABLE}` must be a table of KEY = [V1, V2] "
                         f"(e.g. [sweep] lr = [0.01, 0.1])")
    tokens = []
    for k, v in _flatten(table).items():
        if not isinstance(v, list) or not v:
            raise UsageError(f"--config {path}: [{SWEEP_TABLE}] {k} must be a list of values, "
                             f"e.g. {k} = [{_text(v)}]")
        item = f"{k}={_text(v)}"
        if len(v) > 1 and not _sweeps(path, item):
            raise UsageError(f"--config {path}: [{SWEEP_TABLE}] {k} holds a list itself and "
                             f"cannot be swept; set one value in [{SET_TABLE}]")
        tokens += ["--set", item]
    return tokens


def _flatten(table: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in table.items():
        if isinstance(v, dict):
            out |= _flatten(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


def _text(value) -> str:
    """A TOML value as the command line spells it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_text(v) for v in value)
    return str(value)


def _value(text: str):
    """A command-line value as the file spells it: int, float, true / false, else a string."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for typ in (int, float):
        try:
            return typ(text)
        except ValueError:
            pass
    return text


def write(path: str, args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Write the options of `args` that differ from their defaults (and the grid) as an
    experiment file; an existing file is never overwritten."""
    import tomli_w

    from ..datasets.files import write_text

    target = Path(path)
    if target.is_dir():
        raise UsageError(f"--write-config {path}: is a folder; give a file name, e.g. "
                         f"{target / 'study.toml'}")
    if target.exists():
        raise UsageError(f"--write-config {path}: the file exists; choose another name or "
                         f"delete it first")
    body = {}
    for key, action in _options(parser).items():
        value = getattr(args, action.dest, None)
        if value is None or (value == parser.get_default(action.dest) and key != "grid"):
            continue
        body[key] = value
    from ..config import swept_values

    sets, sweeps = {}, {}
    for item in args.overrides:
        k, _, v = item.partition("=")
        values = swept_values(item)
        if values is None:
            sets[k] = _value(v)
        else:
            sweeps[k] = [_value(x) for x in values]
    if sets:
        body[SET_TABLE] = sets
    if sweeps:
        body[SWEEP_TABLE] = sweeps
    header = ("# an experiment of flbench: `python -m bench run --config "
              f"{target.name}` (options given on the command line override these)\n")
    write_text(target, header + tomli_w.dumps(body))
