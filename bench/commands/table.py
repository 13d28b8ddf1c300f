"""`python -m bench table`: mean +- std tables of the stored runs (or the runs one by one)."""
from __future__ import annotations

from pathlib import Path

from ..datasets.base import DataError
from . import HELP
from .common import csv, out_option, print_tables, stored


def add_parser(sub) -> None:
    table = sub.add_parser("table", help=HELP["table"])
    table.add_argument("--datasets", type=csv)
    table.add_argument("--methods", type=csv)
    table.add_argument("--final", action="store_true",
                       help="last-round metrics instead of the validation-selected round")
    table.add_argument("--on", choices=("test", "val"), default="test",
                       help="report test metrics (default) or the validation ones used to tune")
    out_option(table)

    table.add_argument("--runs", action="store_true",
                       help="list the individual runs (ids, seeds) instead of the summary")


def main(args) -> int:
    records = [r for r in stored(args.out)
               if (not args.datasets or r.config.dataset in args.datasets)
               and (not args.methods or r.method in args.methods)]
    if not records:
        raise DataError(f"no stored runs under {args.out} match --datasets / --methods")
    if args.runs:
        from ..report.tables import records_frame

        frame = records_frame(records, "final" if args.final else "selected", args.on)
        print(frame.sort_values(["dataset", "method", "split", "seed"]).to_string(index=False))
        return 0
    print_tables(records, Path(args.out), "summary", final=args.final, on=args.on)
    return 0
