"""`python -m bench check`: compare stored runs with a reference (docs/checks.md)."""
from __future__ import annotations

from ..config import ConfigError
from ..store import RecordStore
from . import HELP
from .common import csv, out_option, say


def add_parser(sub) -> None:
    chk = sub.add_parser("check", help=HELP["check"])
    chk.add_argument("--reference", default="smoke",
                     help="a name under bench/references/ (smoke, sensitivity, science, "
                          "peers, pneumonia, paper) or a .json path")
    chk.add_argument("--datasets", type=csv, help="check only these datasets' cells and claims")
    chk.add_argument("--make-reference", metavar="PATH",
                     help="tripwire references: write a new one made from the stored runs of "
                          "its grid to PATH (accepting an intended change) and print what moved")
    chk.add_argument("--spread-from", type=csv, metavar="DIR,...",
                     help="with --make-reference: results folders holding the same grid run "
                          "under other numerics (--threads N, FLBENCH_NUMERICS=native), or "
                          "earlier references (.json) of the same runs made on another machine; "
                          "the reference's cross-environment tolerance is measured from them")
    chk.add_argument("--data-root", default=None, help="with --make-reference: the data root")
    out_option(chk)


def main(args) -> int:
    import json

    import pandas as pd

    from ..report.check import (
        check_reference,
        failure_lines,
        load_reference,
        passed,
        reference_diff,
        remake_tripwire,
    )
    from ..datasets.files import write_text

    reference = load_reference(args.reference)
    store = RecordStore(args.out, warn=say)
    if args.spread_from and not args.make_reference:
        raise ConfigError("--spread-from goes with --make-reference")
    if args.make_reference:
        others = [load_reference(d) if d.endswith(".json") else RecordStore(d, warn=say)
                  for d in args.spread_from or []]
        new = remake_tripwire(reference, store, args.data_root, others)
        write_text(args.make_reference, json.dumps(new, indent=1) + "\n")
        moved = reference_diff(reference, new)
        for line in moved:
            print(line)
        say(f"wrote {len(new['cells'])} cells to {args.make_reference}; "
             f"{len(moved)} moved against {args.reference}")
        return 0
    table = check_reference(reference, store, args.datasets)
    if table.attrs.get("environment"):
        say(table.attrs["environment"])
    with pd.option_context("display.max_rows", None, "display.width", 200,
                           "display.float_format", "{:.2f}".format):
        print(table.to_string(index=False))
    for line in failure_lines(reference, table, store):
        say(line)
    ok = passed(table)
    counts = table["verdict"].value_counts().to_dict()
    say(f"check {reference.get('name', args.reference)} ({reference['layer']}): "
         + ", ".join(f"{n} {v}" for v, n in counts.items()) + (" -> PASSED" if ok else
                                                                " -> FAILED"))
    return 0 if ok else 1
