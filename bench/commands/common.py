"""What the commands share: option groups, the selected grid, output helpers.

Every bad option or value ends with one line on stderr that says what to do, and exit code 2
(bench/cli.py turns these exceptions into that line).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from ..datasets.base import DataError
from ..datasets.files import write_text
from ..grid import grid_configs, parse_seeds
from ..protocol import GRIDS
from ..records import Record
from ..store import RecordStore
from . import UsageError  # noqa: F401  (the commands import it from here)

RESULTS_ENV = "BENCH_RESULTS"


def csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def out_option(sp) -> None:
    sp.add_argument("--out", default=os.environ.get(RESULTS_ENV, "results"),
                    help=f"results folder (default: ${RESULTS_ENV} or ./results)")


def grid_options(sp, what=None, much=None, where=None) -> None:
    """The options that select a grid; `what`, `much` and `where` are the argument groups
    they go in (default: the parser itself)."""
    what, much, where = what or sp, much or sp, where or sp
    what.add_argument("--grid", default="default", choices=GRIDS,
                      help="a named grid (`python -m bench list` describes them); default: "
                           "the default grid (the baselines under iid, dirichlet:0.1 "
                           "and silos, FederatedFactory and FedCVAE-Ens under "
                           "silos, on the embedded digits, seed 0); --methods, --datasets, "
                           "--splits and --seeds narrow or replace its lists")
    what.add_argument("--all", action="store_true",
                      help="the paper grid (--grid paper): its datasets x every method x "
                           "silos and dirichlet:0.1 x 5 seeds")
    what.add_argument("--methods", type=csv, help="comma list, e.g. fedavg,scaffold "
                                                  "(`python -m bench list`)")
    what.add_argument("--datasets", type=csv,
                      help="comma list, e.g. digits,cifar10, or your own: npz:PATH, folder:PATH")
    what.add_argument("--splits", type=csv,
                      help="comma list: iid, dirichlet:ALPHA, and the pathological splits silos "
                           "(one class per client, one client per class), classes:K (K classes "
                           "per client; also pathological:K) and shards:S (McMahan et al.'s "
                           "label-sorted shards, S per client); natural (the dataset's own "
                           "clients, e.g. ISIC2019's hospitals)")
    what.add_argument("--seeds", help="e.g. 0,1,2 or 0-4")
    much.add_argument("--scale", choices=("paper", "cpu"),
                      help="protocol of real datasets: the paper's (ResNet-50, 200 rounds: "
                           "GPU-sized) or a reduced one that finishes on a CPU (digits is "
                           "CPU-sized at both); default: the grid's (cpu for the pneumonia and "
                           "colour grids, paper for the others)")
    much.add_argument("--set", dest="overrides", action="append", default=[],
                      metavar="KEY=VALUE",
                      help="override a setting, repeatable: rounds=30, lr=0.1, n_clients=20, "
                           "client_fraction=0.5, and METHOD.PARAM=VALUE for a method's own "
                           "(`python -m bench list --params METHOD` lists them)")
    where.add_argument("--data-root", default=None,
                       help="where datasets live (default: $BENCH_DATA or "
                            "~/.cache/flbench/data)")



def selected_configs(args) -> list:
    """The resolved configs of the grid selected on the command line."""
    return grid_configs("paper" if args.all else args.grid, args.overrides, args.scale,
                        _names(args.datasets), _methods(args.methods), args.splits,
                        parse_seeds(args.seeds) if args.seeds else None)


def _methods(names: list[str] | None) -> list[str] | None:
    """--methods as the field writes them: any case (`FedAvg`), and `all` for every
    registered method."""
    if not names:
        return names
    from ..methods.registry import MethodError, register_references, registered

    # module:Class, a method of the user's own: registered for this process and its workers
    refs = [n for n in names if ":" in n]
    try:
        own = register_references(refs) if refs else []
    except MethodError as e:
        raise UsageError(str(e)) from None
    lowered = [n.lower() for n in names if ":" not in n]
    if lowered == ["all"]:
        return list(registered())
    return lowered + own


def _names(datasets: list[str] | None) -> list[str] | None:
    """Registered dataset names in any case (`CIFAR10`); the user's files keep theirs."""
    from ..datasets import userdata

    return datasets and [d if d.startswith(userdata.PREFIXES) else d.lower() for d in datasets]


def progress_factory(tqdm):
    """Bars over rounds on a terminal; in a log (CI) only the one line per finished run."""
    def progress(total: int, desc: str):
        return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True,
                    disable=not sys.stderr.isatty())
    return progress


def also_option(sp) -> None:
    sp.add_argument("--also", action="append", default=[], metavar="DIR",
                    help="another results folder whose runs join those of --out, repeatable: "
                         "seeds or settings run on other machines or in other sessions; "
                         "what is written goes under --out")


def stored(out: str, also: list[str] = (), datasets=None,
           methods=None) -> tuple[list[Record], dict[str, str]]:
    """The valid records under `out` and under each folder of `also`, of `datasets` and
    `methods` where given (None: all). A run (one config, so one run id) stored in two of the
    folders is refused: counted twice it would raise a cell's n and shrink its std. Also
    returned: the folder each record was read from, by run id."""
    seen = {}
    for i, folder in enumerate((out, *also)):
        first = seen.setdefault(Path(folder).resolve(), i)
        if first != i:
            again = "the --out folder" if first == 0 else also[first - 1]
            raise DataError(f"--also {folder} names {again} again; name each folder once")
        if i and not (Path(folder) / "runs").is_dir():
            raise DataError(f"--also {folder}: no results folder there (it has no runs/); "
                            f"name a folder that `python -m bench run --out` wrote")
    records, where = [], {}
    for folder in (out, *also):
        for r in RecordStore(folder, warn=say).all_records():
            if r.run_id in where:
                raise DataError(
                    f"run {r.run_id[:8]} ({r.method} on {r.config.dataset}, {r.config.split}, "
                    f"seed {r.config.seed}) is stored under both {where[r.run_id]} and "
                    f"{folder}; keep one copy, or leave one of the folders out")
            where[r.run_id] = folder
            records.append(r)
    if not records:
        raise DataError(f"no stored runs under {', '.join((out, *also))}; run `python -m bench "
                        f"run` first (`python -m bench table --reference smoke` shows what it "
                        f"prints)")
    records = [r for r in records if (not datasets or r.config.dataset in datasets)
               and (not methods or r.method in methods)]
    if not records:
        raise DataError(f"no stored runs under {', '.join((out, *also))} match "
                        f"--datasets / --methods")
    if also:
        say(f"{len(records)} runs: " + ", ".join(
            f"{sum(1 for r in records if where[r.run_id] == folder)} from {folder}"
            for folder in (out, *also)))
    return records, where


def joined(out: str, also: list[str]) -> str:
    """The line that heads tables read from several folders (`--also`), so that a table
    written under --out says it holds other folders' runs too; "" for --out alone."""
    return f"Runs of {', '.join((out, *also))} (`--also`).\n\n" if also else ""


def print_tables(records: list[Record], out: Path, name: str, final: bool = False,
                  on: str = "test", tune: bool = False, head: str = "") -> None:
    from ..report.tables import (
        choices_markdown,
        markdown,
        quality_frame,
        quality_markdown,
        records_frame,
        summarise,
        tune_on_validation,
    )

    which = "final" if final else "selected"
    if tune:
        frame, choices = tune_on_validation(records, which, on)
    else:
        frame, choices = records_frame(records, which, on), None
    summary = summarise(frame)
    round_name = "final round" if final else "validation-selected round"
    text = head + markdown(summary, title=f"{on} {{metric}} (%), {round_name}")
    if tune:
        text += "\n" + (choices_markdown(choices) or "No cell holds runs of more than one "
                         "setting: nothing to tune.\n")
    quality = quality_markdown(quality_frame(records))
    text += f"\n{quality}" if quality else ""
    stem = f"{name}_{which}" + ("_val" if on == "val" else "") + ("_tuned" if tune else "")
    tables = out / "tables"
    tables.mkdir(parents=True, exist_ok=True)
    write_text(tables / f"{stem}.csv", summary.to_csv(index=False))
    write_text(tables / f"{stem}.md", text)
    print(text)
    say(f"tables written to {tables}/{stem}.md and .csv")
    several = frame.groupby(["dataset", "base", "split"])["setting"].nunique()
    if not tune and (several > 1).any():
        say(f"{int((several > 1).sum())} cells hold runs of several settings, shown as rows of "
            f"their own; `--tune` keeps, per dataset, method and split, the setting best on "
            f"validation")


def warn_useless_samples(records: list[Record]) -> None:
    """One line per run whose synthetic images a reference classifier finds close to chance
    (methods/sample_quality.py), so that a useless generator is never silent."""
    from ..methods.sample_quality import verdict

    for r in records:
        line = verdict(r.extra.get("sample_quality"))
        if line:
            c = r.config
            say(f"warning: {c.method} on {c.dataset} {c.split} seed {c.seed} "
                f"[{r.run_id[:8]}]: {line}")


def fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def say(msg: str) -> None:
    print(msg, file=sys.stderr)
