"""Command line: `python -m bench run | table | list`.

Every bad option or value ends with one line on stderr that says what to do, and exit code 2.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from .config import ConfigError, parse_overrides
from .datasets.base import DataError
from .executors import EXECUTORS
from .grid import expand, parse_seeds
from .protocol import DEFAULT_GRID, all_grid
from .store import CorruptRecord, RecordStore

EXIT_BAD_INPUT = 2
RESULTS_ENV = "BENCH_RESULTS"


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line instead of argparse's usage block
        raise UsageError(f"{message} (see `python -m {self.prog} --help`)")


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="bench", description="Federated learning under label heterogeneity.")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    sub.required = True

    def out_option(sp):
        sp.add_argument("--out", default=os.environ.get(RESULTS_ENV, "results"),
                        help=f"results folder (default: ${RESULTS_ENV} or ./results)")

    def grid_options(sp):
        sp.add_argument("--methods", type=_csv, help="comma list, e.g. fedavg,scaffold")
        sp.add_argument("--datasets", type=_csv, help="comma list, e.g. digits")
        sp.add_argument("--splits", type=_csv,
                        help="comma list: iid, dirichlet:ALPHA, silos, classes:K")
        sp.add_argument("--seeds", help="e.g. 0,1,2 or 0-4")
        sp.add_argument("--all", action="store_true",
                        help="the paper grid: its datasets x every method x silos and "
                             "dirichlet:0.1 x 5 seeds")
        sp.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE",
                        help="override a setting: rounds=30, lr=0.1, n_clients=20, "
                             "fedprox.mu=0.1")
        sp.add_argument("--scale", default="paper", choices=("paper", "cpu"),
                        help="protocol of real datasets: the paper's (GPU) or a reduced one "
                             "that finishes on a CPU (digits is CPU-sized at both)")
        sp.add_argument("--data-root", default=None,
                        help="where datasets live (default: $BENCH_DATA or "
                             "~/.cache/flbench/data)")

    run = sub.add_parser("run", help="run a grid of experiments (default: the digits grid)")
    grid_options(run)
    run.add_argument("--dry-run", action="store_true", help="list the runs and their configs")
    run.add_argument("--force", action="store_true", help="rerun runs that are already stored")
    run.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    run.add_argument("--download", action="store_true", help="download missing datasets")
    run.add_argument("--executor", default="sequential", choices=EXECUTORS,
                     help="sequential (default), joblib (worker processes on this machine) "
                          "or ray (a local or existing Ray cluster; see README, Scaling)")
    run.add_argument("--workers", type=int,
                     help="parallel runs (joblib, local ray); default: cores / --threads")
    run.add_argument("--threads", type=int,
                     help="torch CPU threads per run; default: cores / --workers (parallel), "
                          "torch's default (sequential). Records are identical across "
                          "executors at equal --threads")
    run.add_argument("--ray-address", help="Ray cluster to join, e.g. auto or ray://host:10001 "
                                           "(default: $RAY_ADDRESS, else start a local one)")
    run.add_argument("--gpus-per-run", type=float,
                     help="ray: GPUs per run (default: 1 when the cluster has GPUs)")
    run.add_argument("--clients-at-once", type=int, default=1,
                     help="FedAvg/FedProx/SCAFFOLD: train this many clients of a round as one "
                          "vectorised model (torch.func; for GPUs). Default 1: one by one")
    out_option(run)

    est = sub.add_parser("estimate", help="GPU-hours of a grid per phase, before running it")
    grid_options(est)
    est.add_argument("--tflops", type=float, default=100.0,
                     help="assumed sustained TFLOP/s of one GPU on these networks (default "
                          "100; see README, Scaling)")
    est.add_argument("--gpus", type=int, default=8, help="cluster size for the wall time")

    table = sub.add_parser("table", help="tables of the stored runs (Markdown and CSV)")
    table.add_argument("--datasets", type=_csv)
    table.add_argument("--methods", type=_csv)
    table.add_argument("--final", action="store_true",
                       help="last-round metrics instead of the validation-selected round")
    table.add_argument("--on", choices=("test", "val"), default="test",
                       help="report test metrics (default) or the validation ones used to tune")
    out_option(table)

    table.add_argument("--runs", action="store_true",
                       help="list the individual runs (ids, seeds) instead of the summary")

    unlearn = sub.add_parser("unlearn", help="forget clients of a stored federatedfactory run")
    unlearn.add_argument("--run", required=True, help="run id (or a unique prefix)")
    unlearn.add_argument("--clients", required=True, type=_csv, help="client ids, e.g. 3 or 3,5")
    unlearn.add_argument("--device", default="auto")
    unlearn.add_argument("--data-root", default=None)
    out_option(unlearn)

    report = sub.add_parser("report", help="tables (Markdown, CSV, LaTeX) and figures")
    report.add_argument("--metrics", type=_csv, default=["accuracy", "auroc"],
                        help="metrics of the tables (accuracy, balanced_accuracy, auroc, f1_macro)")
    out_option(report)

    chk = sub.add_parser("check", help="compare stored results with a reference, cell by cell")
    chk.add_argument("--reference", default="smoke",
                     help="a name under results/reference/ (smoke, paper) or a .json path")
    chk.add_argument("--datasets", type=_csv, help="check only these datasets' cells and claims")
    chk.add_argument("--make-reference", metavar="PATH",
                     help="write a reference derived from the stored runs (keeps the claims "
                          "of --reference) instead of checking")
    out_option(chk)

    data = sub.add_parser("data", help="state of the data root: what is present, how to get the rest")
    data.add_argument("--data-root", default=None)
    data.add_argument("--download", type=_csv, metavar="NAMES", help="download these datasets")
    data.add_argument("--all-sizes", action="store_true",
                      help="also list MedMNIST at 64, 128 and 224 px when absent")
    data.add_argument("--datasets", type=_csv, help="show these (npz:PATH, folder:PATH too)")

    prep = sub.add_parser("prepare", help="one-time preprocessing of a dataset (isic2019)")
    prep.add_argument("dataset", choices=("isic2019",))
    prep.add_argument("--resolution", type=int, default=128, help="side in pixels (default 128)")
    prep.add_argument("--data-root", default=None)

    sub.add_parser("list", help="registered methods, datasets and splits")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        commands = {"run": cmd_run, "estimate": cmd_estimate, "table": cmd_table,
                    "unlearn": cmd_unlearn, "report": cmd_report, "check": cmd_check,
                    "data": cmd_data, "prepare": cmd_prepare, "list": cmd_list}
        return commands[args.command](args)
    except (UsageError, ConfigError, DataError, CorruptRecord) as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


def cmd_list(args) -> int:
    from .datasets.registry import DATASETS
    from .datasets.splits import SPLITS, _usage
    from .methods.registry import METHODS, method_params

    print("methods:")
    for name, cls in METHODS.items():
        params = ", ".join(f"{k}={v}" for k, v in method_params(name).items())
        doc = (sys.modules[cls.__module__].__doc__ or "").strip().splitlines()
        print(f"  {name:12s} {doc[0] if doc else ''}{f'  [{params}]' if params else ''}")
    print("datasets (MedMNIST also as NAME_64, NAME_128, NAME_224; your own as npz:PATH or "
          "folder:PATH; `python -m bench data` shows what is present):")
    for name, entry in DATASETS.items():
        if name.endswith(("_64", "_128", "_224")):
            continue
        i = entry.info
        print(f"  {name:15s} {i.n_classes} classes, {i.channels} channel(s), {i.resolution} px")
    print("splits:")
    for name in SPLITS:
        print(f"  {_usage(name).removeprefix('usage: ')}")
    return 0


def _selection(args) -> tuple[list, list, list]:
    """(datasets, blocks of (methods, splits), seeds): a --methods or --splits given on the
    command line replaces that side of every block of the base grid."""
    base = all_grid() if args.all else DEFAULT_GRID
    datasets = args.datasets or base["datasets"]
    if args.methods and args.splits:
        blocks = [(args.methods, args.splits)]
    elif args.methods:
        splits = sorted({s for _, ss in base["blocks"] for s in ss})
        blocks = [(args.methods, splits)]
    elif args.splits:
        blocks = [(ms, args.splits) for ms, _ in base["blocks"]]
    else:
        blocks = base["blocks"]
    seeds = parse_seeds(args.seeds) if args.seeds else base["seeds"]
    return datasets, blocks, seeds


def cmd_run(args) -> int:
    import json

    from .executors import Plan, run_all, settle
    from .methods.registry import METHODS
    from .runner import Execution, check_splits, pick_device

    overrides = parse_overrides(args.overrides)
    configs = expand(*_selection(args), overrides, args.scale)
    if args.dry_run:
        for c in configs:
            print(json.dumps({"run_id": c.run_id, **c.to_dict()}, sort_keys=True))
        print(f"{len(configs)} runs (dry run: nothing executed)", file=sys.stderr)
        return 0
    plan, execution = settle(
        Plan(args.executor, args.workers, args.ray_address, args.gpus_per_run),
        Execution(args.out, args.device, args.data_root, args.threads, args.clients_at_once))
    if execution.clients_at_once > 1 and any(
            c.train.norm == "batch" and getattr(METHODS[c.method], "vectorises_clients", False)
            for c in configs):
        raise ConfigError("--clients-at-once > 1 cannot vectorise batch norm; use "
                          "--set norm=group (or none), or --clients-at-once 1")
    if plan.executor != "ray":  # a Ray task picks its device where it runs
        device = pick_device(args.device)
    check_splits(configs, args.data_root, args.download)
    store = RecordStore(args.out, warn=_say)
    todo, records = [], {}
    for c in configs:
        rec = None if args.force else store.load(c)
        if rec is None:
            todo.append(c)
        else:
            records[c.run_id] = rec
    if plan.executor == "sequential":
        where = str(device)
    elif plan.executor == "ray" and (plan.ray_address or os.environ.get("RAY_ADDRESS")):
        where = f"ray cluster at {plan.ray_address or os.environ['RAY_ADDRESS']}"
    else:
        where = f"{plan.executor}, {plan.workers} workers x {execution.threads} threads"
    _say(f"{len(configs)} runs: {len(records)} already stored, {len(todo)} to run "
         f"({where}) -> {store.root}")
    from tqdm.auto import tqdm

    done, t = 0, time.perf_counter()
    try:
        with tqdm(total=len(todo), desc="runs", unit="run", dynamic_ncols=True,
                  disable=not sys.stderr.isatty()) as bar:
            for c, rec, path in run_all(todo, execution, plan, _progress_factory(tqdm), _say):
                records[c.run_id] = rec
                done += 1
                bar.update(1)
                m = rec["metrics"]["selected"] or {}
                diverged = rec["metrics"].get("diverged_at")
                tqdm.write(f"[{done}/{len(todo)}] {c.label}: acc {_fmt(m.get('accuracy'))}, "
                           f"auroc {_fmt(m.get('auroc'))}"
                           f"{f', diverged at {diverged}' if diverged else ''} "
                           f"({rec['timings']['total']:.0f} s) -> {path}", file=sys.stderr)
    except KeyboardInterrupt:
        _say(f"interrupted: {done} of {len(todo)} runs stored; rerun the same command to resume")
        return 130
    if todo:
        _say(f"{len(todo)} runs in {time.perf_counter() - t:.0f} s")
    _print_tables([records[c.run_id] for c in configs], Path(args.out), "last_run")
    return 0


def cmd_estimate(args) -> int:
    import pandas as pd

    from .estimate import run_costs, summarise

    if args.tflops <= 0 or args.gpus < 1:
        raise UsageError("--tflops must be > 0 and --gpus >= 1")
    configs = expand(*_selection(args), parse_overrides(args.overrides), args.scale)
    costs = [c for config in configs for c in run_costs(config, args.data_root)]
    table, t = summarise(costs, args.tflops, args.gpus)
    with pd.option_context("display.max_rows", None, "display.width", 200,
                           "display.float_format", "{:,.1f}".format):
        print(table.to_string(index=False))
    print(f"\n{t['runs']} runs, {t['eflop']:,.1f} EFLOP: {t['gpu_hours']:,.0f} GPU-hours at "
          f"{args.tflops:g} TFLOP/s sustained; longest run {t['longest_run_hours']:,.1f} h "
          f"({t['longest_run']}), {t['longest_chain_hours']:,.1f} h with its generators as "
          f"parallel tasks; on {args.gpus} GPUs about {t['wall_hours']:,.0f} h wall")
    print("by phase: " + ", ".join(f"{p} {h:,.0f} h" for p, h in t["by_phase"].items()))
    return 0


def _progress_factory(tqdm):
    """Bars over rounds on a terminal; in a log (CI) only the one line per finished run."""
    def progress(total: int, desc: str):
        return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True,
                    disable=not sys.stderr.isatty())
    return progress


def cmd_table(args) -> int:
    records = [r for r in _stored(args.out)
               if (not args.datasets or r["config"]["dataset"] in args.datasets)
               and (not args.methods or r["config"]["method"] in args.methods)]
    if not records:
        raise DataError(f"no stored runs under {args.out} match --datasets / --methods")
    if args.runs:
        from .report.tables import records_frame

        frame = records_frame(records, "final" if args.final else "selected", args.on)
        print(frame.sort_values(["dataset", "method", "split", "seed"]).to_string(index=False))
        return 0
    _print_tables(records, Path(args.out), "summary", final=args.final, on=args.on)
    return 0


def _stored(out: str) -> list[dict]:
    records = RecordStore(out, warn=_say).all_records()
    if not records:
        raise DataError(f"no stored runs under {out}; run `python -m bench run` first")
    return records


def cmd_report(args) -> int:
    from .report.figures import all_figures
    from .report.tables import SCALAR_METRICS, latex, markdown, records_frame, summarise

    bad = [m for m in args.metrics if m not in SCALAR_METRICS]
    if bad:
        raise UsageError(f"--metrics {','.join(bad)}: valid choices: {', '.join(SCALAR_METRICS)}")
    records = _stored(args.out)
    folder = Path(args.out) / "report"
    folder.mkdir(parents=True, exist_ok=True)
    summary = summarise(records_frame(records))
    summary.to_csv(folder / "summary.csv", index=False)
    (folder / "tables.md").write_text(markdown(summary, args.metrics))
    (folder / "tables.tex").write_text(latex(summary, args.metrics))
    figures = all_figures(records, Path(args.out) / "runs", folder / "figures")
    print(markdown(summary, args.metrics))
    _say(f"{len(records)} runs -> {folder}/tables.md, tables.tex, summary.csv and "
         f"{len(figures) // 2} figures (PNG + PDF) in {folder}/figures")
    return 0


def cmd_check(args) -> int:
    import json

    from .report.check import check, load_reference, make_reference

    if args.make_reference:
        records = _stored(args.out)
        old = load_reference(args.reference) if args.reference else {}
        n_test = {r["config"]["dataset"]: r["dataset_info"]["sizes"]["test"] for r in records}
        ref = make_reference(records, Path(args.make_reference).stem,
                             old.get("description", ""), n_test, old.get("claims"))
        Path(args.make_reference).write_text(json.dumps(ref, indent=1) + "\n")
        _say(f"wrote {len(ref['cells'])} cells and {len(ref['claims'])} claims to "
             f"{args.make_reference}")
        return 0
    reference = load_reference(args.reference)
    if args.datasets:
        keep = set(args.datasets)
        reference["cells"] = [c for c in reference["cells"] if c["dataset"] in keep]
        reference["claims"] = [c for c in reference.get("claims", [])
                               if {c["left"]["dataset"], c["right"]["dataset"]} <= keep]
    records = RecordStore(args.out, warn=_say).all_records()
    table, passed = check(records, reference)
    import pandas as pd

    with pd.option_context("display.max_rows", None, "display.width", 200):
        print(table.to_string(index=False))
    counts = table["verdict"].value_counts().to_dict()
    _say(f"check {reference.get('name', args.reference)}: "
         + ", ".join(f"{n} {v}" for v, n in counts.items())
         + (" -> PASSED" if passed else " -> FAILED"))
    return 0 if passed else 1


def cmd_unlearn(args) -> int:
    from .config import RunConfig
    from .runner import execute, pick_device
    from .unlearn import comparison, forget_config

    try:
        clients = [int(k) for k in args.clients]
    except ValueError:
        raise UsageError(f"--clients {','.join(args.clients)}: expected integers") from None
    store = RecordStore(args.out, warn=_say)
    before = store.find(args.run)
    config = forget_config(RunConfig.from_dict(before["config"]), clients)
    device = pick_device(args.device)
    from tqdm.auto import tqdm

    t = time.perf_counter()
    after, artifacts = execute(config, device, args.data_root, progress=_progress_factory(tqdm),
                               cache_dir=Path(args.out) / "cache")
    after["unlearning"] = comparison(before, after, clients)
    after["unlearning"]["seconds"] = time.perf_counter() - t
    path = store.write(after, artifacts)
    u = after["unlearning"]
    print(f"forgot clients {clients} of run {before['run_id']} (classes {u['forgotten_classes']}) "
          f"in {u['seconds']:.0f} s -> {path}")
    for mode, m in u["modes"].items():
        print(f"\n{mode} mode: accuracy {m['accuracy_before']:.3f} -> {m['accuracy_after']:.3f}")
        print("| class | before | after |\n|---|---|---|")
        for c, (b, a) in enumerate(zip(m["per_class_before"], m["per_class_after"])):
            mark = " (forgotten)" if c in u["forgotten_classes"] else ""
            print(f"| {c}{mark} | {_fmt(b)} | {_fmt(a)} |")
    return 0


def _print_tables(records: list[dict], out: Path, name: str, final: bool = False,
                  on: str = "test") -> None:
    from .report.tables import markdown, records_frame, summarise

    which = "final" if final else "selected"
    summary = summarise(records_frame(records, which, on))
    round_name = "final round" if final else "validation-selected round"
    text = markdown(summary, title=f"{on} {{metric}} (%), {round_name}")
    stem = f"{name}_{which}" + ("_val" if on == "val" else "")
    tables = out / "tables"
    tables.mkdir(parents=True, exist_ok=True)
    summary.to_csv(tables / f"{stem}.csv", index=False)
    (tables / f"{stem}.md").write_text(text)
    print(text)
    _say(f"tables written to {tables}/{stem}.md and .csv")


def cmd_data(args) -> int:
    from .datasets.registry import DATASETS, get_entry
    from .datasets.root import data_root

    root = data_root(args.data_root)
    for name in args.download or []:
        entry = get_entry(name)
        if entry.family in ("embedded", "user"):
            raise UsageError(f"{name}: nothing to download ({entry.how_to_get})")
        entry.load(root, download_missing=True)
        _say(f"{name}: downloaded to {root}")
    print(f"data root: {root}  (--data-root, or $BENCH_DATA)")
    names = args.datasets or list(DATASETS)
    rows = []
    for name in names:
        entry = get_entry(name)
        paths = entry.files(root)
        present = all(p.exists() for p in paths)
        if not (present or args.all_sizes or args.datasets) and name.endswith(("_64", "_128",
                                                                                 "_224")):
            continue
        size = sum(p.stat().st_size for p in paths if p.exists())
        state = "present" if present else "missing"
        check = entry.verify(root) if present and entry.verify else ""
        i = entry.info
        rows.append((name, f"{i.n_classes} classes, {i.channels}x{i.resolution}px", state,
                     f"{size / 1e6:.1f} MB" if size else "", check,
                     "" if present else entry.how_to_get,
                     str(paths[0]) if paths else "(in the package)"))
    width = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        line = "  ".join(r[i].ljust(width[i]) for i in range(5))
        print(f"{line}  {r[5] or r[6]}")
    return 0


def cmd_prepare(args) -> int:
    from tqdm.auto import tqdm

    from .datasets import isic2019
    from .datasets.root import data_root

    if args.resolution < 8:
        raise UsageError(f"--resolution {args.resolution}: must be at least 8")
    root = data_root(args.data_root)
    n = len(isic2019._read_tables(root))
    with tqdm(total=n, desc="resizing images", unit="img") as bar:
        path = isic2019.prepare(root, args.resolution, bar)
    _say(f"isic2019: {n} images at {args.resolution} px -> {path}")
    return 0


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _say(msg: str) -> None:
    print(msg, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
