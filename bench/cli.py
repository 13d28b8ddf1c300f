"""Command line: `python -m bench COMMAND`, one module per command in `bench/commands/`:
run, status, estimate, table, report, check, unlearn, data, prepare, list.

Every bad option or value ends with one line on stderr that says what to do, and exit code 2.
"""
from __future__ import annotations

import argparse
import sys

import importlib

from .commands import HELP, UsageError

EXIT_BAD_INPUT = 2
# command -> its module in bench/commands/, imported only when the command runs (so that
# `python -m bench --help` imports no torch)
MODULES = {"run": "run", "estimate": "estimate", "table": "table", "report": "report",
           "check": "check", "unlearn": "unlearn", "data": "data", "prepare": "prepare",
           "list": "listing", "status": "status"}


def command_module(name: str):
    return importlib.import_module(f".commands.{MODULES[name]}", __package__)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of argparse's usage block
        raise UsageError(f"{message} (see `python -m {self.prog} --help`)")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser: every command listed with its line of HELP, and `command`'s own options
    (its module imported) when one is given."""
    p = _Parser(prog="bench", description="Federated learning under label heterogeneity.")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    sub.required = True
    for name in MODULES:
        if name == command:
            command_module(name).add_parser(sub)
        else:
            sub.add_parser(name, help=HELP[name])
    return p


def _command_of(argv: list[str]) -> str | None:
    """The command named in `argv` (its first word that is one), if any."""
    return next((a for a in argv if a in MODULES), None)


def _bad_input() -> tuple[type, ...]:
    """The errors that end a command with one line and exit code 2 (imported when one is
    raised: they live beside torch)."""
    from .config import ConfigError
    from .datasets.base import DataError
    from .methods.registry import MethodError
    from .store import CorruptRecord

    return UsageError, ConfigError, DataError, CorruptRecord, MethodError


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        parser = build_parser(_command_of(argv))
        args = parser.parse_args(argv)
        if getattr(args, "config", None):  # the file's options first, the command line's after
            from .commands import experiment

            at = argv.index(args.command) + 1
            tokens = experiment.read(args.config, args.command_parser)
            args = parser.parse_args([*argv[:at], *tokens, *argv[at:]])
        return command_module(args.command).main(args)
    except Exception as e:  # noqa: BLE001 - re-raised unless it is bad input
        if not isinstance(e, _bad_input()):
            raise
        print(f"bench: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
