"""Command line: `python -m bench COMMAND`, one module per command in `bench/commands/`:
run, status, estimate, table, report, check, unlearn, data, prepare, list.

Every bad option or value ends with one line on stderr that says what to do, and exit code 2.
"""
from __future__ import annotations

import argparse
import sys

from .commands import (
    check,
    data,
    estimate,
    experiment,
    listing,
    prepare,
    report,
    run,
    status,
    table,
    unlearn,
)
from .commands.common import UsageError
from .config import ConfigError
from .datasets.base import DataError
from .store import CorruptRecord

EXIT_BAD_INPUT = 2
COMMANDS = {"run": run, "estimate": estimate, "table": table, "report": report, "check": check,
            "unlearn": unlearn, "data": data, "prepare": prepare, "list": listing,
            "status": status}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of argparse's usage block
        raise UsageError(f"{message} (see `python -m {self.prog} --help`)")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="bench", description="Federated learning under label heterogeneity.")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    sub.required = True
    for module in COMMANDS.values():
        module.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if getattr(args, "config", None):  # the file's options first, the command line's after
            argv = list(sys.argv[1:] if argv is None else argv)
            at = argv.index(args.command) + 1
            tokens = experiment.read(args.config, args.command_parser)
            args = parser.parse_args([*argv[:at], *tokens, *argv[at:]])
        return COMMANDS[args.command].main(args)
    except (UsageError, ConfigError, DataError, CorruptRecord) as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
