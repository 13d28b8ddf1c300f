"""`python -m bench table`: mean +- std tables of the stored runs (or the runs one by one)."""
from __future__ import annotations

from pathlib import Path

from ..datasets.base import DataError
from . import HELP
from .common import also_option, csv, joined, out_option, print_tables, stored


def add_parser(sub) -> None:
    table = sub.add_parser("table", help=HELP["table"])
    table.add_argument("--datasets", type=csv)
    table.add_argument("--methods", type=csv)
    table.add_argument("--final", action="store_true",
                       help="last-round metrics instead of the validation-selected round")
    table.add_argument("--on", choices=("test", "val"), default="test",
                       help="report test metrics (default) or the validation ones used to tune")
    table.add_argument("--tune", action="store_true",
                       help="where runs of several settings share a cell (a sweep: --set "
                            "lr=0.01,0.1), keep the setting with the best mean validation score "
                            "and say which won; test numbers take no part")
    out_option(table)
    also_option(table)

    table.add_argument("--runs", action="store_true",
                       help="list the individual runs (ids, seeds) instead of the summary")
    table.add_argument("--reference", metavar="NAME",
                       help="no runs needed: the numbers a committed tripwire reference expects "
                            "(smoke: what `python -m bench run` prints on the machine it was "
                            "made on; sensitivity, pneumonia)")


def main(args) -> int:
    if args.reference:
        return _reference_table(args)
    records, where = stored(args.out, args.also, args.datasets, args.methods)
    if args.runs:
        from ..report.tables import FRAME_ONLY, records_frame, tune_on_validation

        which = "final" if args.final else "selected"
        frame = tune_on_validation(records, which, args.on)[0] if args.tune else \
            records_frame(records, which, args.on)
        frame = frame.drop(columns=FRAME_ONLY)
        if args.also:  # which folder holds each run, so that one can be found and rerun
            frame["folder"] = frame["run_id"].map(where)
        print(frame.sort_values(["dataset", "method", "split", "seed"]).to_string(index=False))
        return 0
    print_tables(records, Path(args.out), "summary", final=args.final, on=args.on,
                 tune=args.tune, head=joined(args.out, args.also))
    return 0


def _reference_table(args) -> int:
    """A committed reference's expected test accuracy and AUROC (%), method x split, mean over
    its seeds: what a result looks like before anything has run."""
    import pandas as pd

    from ..config import ConfigError
    from ..report.check import load_reference

    if args.final or args.runs or args.tune or args.also or args.on != "test":
        raise ConfigError("--reference shows the test numbers a reference expects; --final, "
                          "--runs, --tune, --also and --on apply to stored runs: drop them or "
                          "--reference")
    ref = load_reference(args.reference)
    cells = pd.DataFrame(ref.get("cells", []))
    if ref.get("layer") != "tripwire" or cells.empty:
        raise ConfigError(f"reference {args.reference!r} is a {ref.get('layer')} reference, "
                          f"checked with `python -m bench check --reference {args.reference}`; "
                          f"a tripwire reference (smoke, sensitivity, pneumonia) has a table")
    datasets = [d.lower() for d in args.datasets or []]
    methods = [m.lower() for m in args.methods or []]
    cells = cells[cells["metric"].isin(("accuracy", "auroc"))
                  & (not datasets or cells["dataset"].str.lower().isin(datasets))
                  & (not methods or cells["method"].str.split("[").str[0].isin(methods))]
    if cells.empty:
        raise DataError(f"reference {args.reference!r} has no cell that matches --datasets / "
                        f"--methods")
    made = ref.get("made_with", {})
    print(f"reference {args.reference} ({ref.get('grid', '?')} grid): expected test metrics (%), "
          f"mean over seeds, made on {made.get('cpu_model', '?')} with "
          f"{made.get('numerics', {}).get('threads', '?')} thread(s) at "
          f"{str(made.get('git_commit', '?'))[:8]}; `python -m bench run --grid "
          f"{ref.get('grid', 'default')}` computes them")
    rows = list(dict.fromkeys(cells["method"]))  # the reference's order
    columns = list(dict.fromkeys(cells["split"]))
    for (dataset, metric), group in cells.groupby(["dataset", "metric"], sort=False):
        table = group.pivot_table(index="method", columns="split", values="expected",
                                  aggfunc="mean")
        table = table.reindex([m for m in rows if m in table.index],
                              columns=[s for s in columns if s in table.columns])
        lines = [f"\n**{dataset}: test {metric} (%), as the reference expects**", "",
                 "| method | " + " | ".join(table.columns) + " |",
                 "|---|" + "---|" * len(table.columns)]
        lines += [f"| {method} | " + " | ".join("" if pd.isna(v) else f"{v:.1f}" for v in row)
                  + " |" for method, row in table.iterrows()]
        print("\n".join(lines))
    return 0
