"""`python -m bench run`: run a grid (default: the digits grid); stored runs are skipped,
stale ones recomputed, so an interrupted grid resumes."""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from ..config import ConfigError
from ..executors import EXECUTORS
from ..methods.checkpoints import DEFAULT_EVERY
from ..monitor import Reporter, tensorboard_writer
from ..protocol import GRIDS
from ..provenance import is_stale
from ..store import LOG_SUFFIX, RecordStore
from . import HELP
from .common import (
    UsageError,
    fmt,
    grid_options,
    out_option,
    print_tables,
    progress_factory,
    say,
    selected_configs,
    warn_useless_samples,
)

EXAMPLES = """examples:
  python -m bench run                                  the default grid on the embedded digits
  python -m bench run --datasets cifar10 --splits dirichlet:0.1 \\
      --methods fedavg,federatedfactory --seeds 0-2 --device cuda
                                                       a real dataset on a GPU, paper scale
  python -m bench run --datasets npz:mydata.npz --methods fedavg,federatedfactory \\
      --splits silos --scale cpu                       your own data, sized for a CPU
  python -m bench run --config experiments/cifar10_gpu.toml
                                                       an experiment file (--write-config)
"""


def add_parser(sub) -> None:
    import argparse

    run = sub.add_parser("run", help=HELP["run"],
                         description="Run a grid: every run is stored as a record; stored "
                                     "runs are skipped, so an interrupted grid resumes.",
                         epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = run.add_argument_group("what to run")
    much = run.add_argument_group("how much")
    where = run.add_argument_group("where")
    how = run.add_argument_group("how to execute")
    other = run.add_argument_group("experiment files and checks")
    grid_options(run, what, much, where)
    much.add_argument("--max-hours", type=float, default=2.0,
                      help="stop before starting when the selection is estimated over this "
                           "many hours on this machine's device (default 2; `bench estimate` "
                           "prices a grid)")
    much.add_argument("--yes", action="store_true",
                      help="start even when the estimate is over --max-hours")
    where.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    where.add_argument("--download", action="store_true", help="download missing datasets")
    out_option(where)
    where.add_argument("--tensorboard", metavar="DIR",
                       help="also write every run's live scalars for TensorBoard under DIR "
                            "(pip install tensorboard)")
    where.add_argument("--mlflow", nargs="?", const="", metavar="URI",
                       help="also log every run of the selection to MLflow once stored: "
                            "config, per-round and final metrics (default URI: "
                            "sqlite:///<out>/mlflow.db; pip install -e '.[mlflow]')")
    how.add_argument("--executor", choices=EXECUTORS,
                     help="sequential, joblib (worker processes on this machine) or ray (a "
                          "local or existing Ray cluster; docs/scaling.md); default: the "
                          "grid's (joblib for the default and science grids, else sequential)")
    how.add_argument("--workers", type=int,
                     help="parallel runs (joblib, local ray); default: cores / --threads")
    how.add_argument("--threads", type=int,
                     help="torch CPU threads per run; default: the grid's (1 for the default "
                          "grid, 2 for the other reference grids: their numbers depend on it), "
                          "else cores / --workers (parallel) or torch's default. Records are "
                          "identical across executors at equal --threads")
    how.add_argument("--ray-address", help="Ray cluster to join, e.g. auto or ray://host:10001 "
                                           "(default: $RAY_ADDRESS, else start a local one)")
    how.add_argument("--gpus-per-run", type=float,
                     help="ray: GPUs per run (default: 1 when the cluster has GPUs)")
    how.add_argument("--clients-at-once", type=int, default=1,
                     help="FedAvg/FedProx/SCAFFOLD: train this many clients of a round as one "
                          "vectorised model (torch.func; for GPUs). Default 1: one by one")
    how.add_argument("--client-threads", type=int, default=1, metavar="N",
                     help="on the CPU, train N clients of a round at once, each in a thread "
                          "with --threads torch threads (default 1 with this flag), for the "
                          "methods whose clients are independent within a round (those that "
                          "vectorise): the bits of one client at a time, up to N times faster "
                          "when one run has the cores to itself. Default 1")
    how.add_argument("--checkpoint-every", type=checkpoint_interval, default=DEFAULT_EVERY,
                     metavar="SECONDS",
                     help="inside a run, save a checkpoint every SECONDS of wall time "
                          f"(default {DEFAULT_EVERY:g}; 0: at every round or epoch; off: "
                          "never save); a killed run started again resumes from it, to the same "
                          "bits (docs/records.md, \"Checkpoints\")")
    how.add_argument("--progress-every", type=float, default=60.0, metavar="SECONDS",
                     help="off a terminal (a log file, nohup, Slurm): one progress line per "
                          "run in progress every SECONDS (default 60; 0: none)")
    other.add_argument("--config", metavar="FILE",
                       help="take the options from an experiment file (TOML); options given "
                            "here override it")
    other.add_argument("--write-config", metavar="FILE",
                       help="write this command's options as an experiment file (with "
                            "--dry-run: write it and run nothing)")
    other.add_argument("--dry-run", action="store_true",
                       help="list the runs and their configs, run nothing")
    other.add_argument("--force", action="store_true", help="rerun runs that are already stored")
    other.add_argument("--keep-stale", action="store_true",
                       help="keep stored runs computed by other code instead of recomputing "
                            "them (tables mark them)")
    run.set_defaults(command_parser=run)  # what --config and --write-config read options from


def checkpoint_interval(text: str) -> float:
    """--checkpoint-every: seconds >= 0, or off (never save: infinitely many seconds, which an
    experiment file keeps as `inf`)."""
    if text == "off":
        return math.inf
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give seconds (>= 0) or off")
    return value


def main(args) -> int:
    import json

    from ..datasets.registry import get_entry
    from ..executors import Plan, run_all, settle
    from ..methods.registry import build_method, method_class
    from ..runner import Execution, check_splits, pick_device

    configs = selected_configs(args)
    if args.dry_run or args.write_config:  # what a real run would refuse, refused here too
        check_splits(configs, args.data_root, skip_missing=True)
    if args.write_config:  # once the selection is known to be valid
        from .experiment import write

        write(args.write_config, args, args.command_parser)
        say(f"experiment written to {args.write_config}; rerun it with `python -m bench run "
            f"--config {args.write_config}`")
    grid = GRIDS["paper" if args.all else args.grid]
    # the device decides first (one run per GPU); on the CPU the grid's executor and thread
    # count (its references' bits depend on the threads: bench/protocol.py)
    plan, execution = settle(
        Plan(args.executor, args.workers, args.ray_address, args.gpus_per_run),
        Execution(args.out, args.device, args.data_root, args.threads, args.clients_at_once,
                  client_threads=args.client_threads, started=time.time(),
                  tensorboard=args.tensorboard,
                  checkpoint_every=args.checkpoint_every),
        grid.executor, grid.threads)
    if args.dry_run:
        for c in configs:
            line = {"run_id": c.run_id, **c.to_dict()}
            method = build_method(c.method, c.method_params)
            summary = method.summary(get_entry(c.dataset).info.channels, c.resolution)
            if summary is not None:  # what the method resolves to at this data shape
                line["summary"] = summary
            print(json.dumps(line, sort_keys=True))
        print(f"{len(configs)} runs (dry run: nothing executed); plan: "
              f"{plan.describe(execution.threads, execution.client_threads)}", file=sys.stderr)
        return 0
    if args.tensorboard:
        tensorboard_writer()  # its package is there, or one line now rather than in a worker
    tracker = None
    if args.mlflow is not None:
        from ..tracking import Tracker, default_uri

        tracker = Tracker(args.mlflow or default_uri(args.out))  # or one line now
    if execution.clients_at_once > 1 and any(
            c.train.norm == "batch" and method_class(c.method).capabilities.vectorises_clients
            for c in configs):
        raise ConfigError("--clients-at-once > 1 cannot vectorise batch norm; use "
                          "--set norm=group (or none), or --clients-at-once 1")
    if plan.executor != "ray":  # a Ray task picks its device where it runs
        device = pick_device(args.device)
    check_splits(configs, args.data_root, args.download)
    store = RecordStore(args.out, warn=say)
    store.remove_orphans()  # temporary files and claims of killed processes of this host
    todo, records, stale = [], {}, []
    for c in configs:
        rec = None if args.force else store.load(c)
        if rec is not None and is_stale(rec) and not args.keep_stale:
            stale.append(c)
            rec = None
        if rec is None:
            todo.append(c)
        else:
            records[c.run_id] = rec
    _guard(todo, args, plan, execution)
    if plan.executor != "ray":  # (a Ray task's numerics are its node's)
        _say_other_numerics(list(records.values()), device, execution.threads)
    if stale:
        say(f"{len(stale)} stored runs were computed by other code (e.g. {stale[0].label}); "
             f"recomputing them, their old records set aside as *.json.stale (--keep-stale "
             f"keeps them instead)")
    if plan.remote:
        where = f"ray cluster at {plan.ray_address}"
    elif plan.executor == "sequential" and not plan.devices:
        where = str(device) + (f", {execution.client_threads} clients at once in threads"
                               if execution.client_threads > 1 else "")
    else:
        where = plan.describe(execution.threads, execution.client_threads)
    say(f"{len(configs)} runs: {len(records)} already stored, {len(todo)} to run "
         f"({where}) -> {store.root}")
    for c in stale:  # set aside only now that the grid is certain to start
        store.retire(c)
    from tqdm.auto import tqdm

    done, t, elsewhere, logged = 0, time.perf_counter(), [], 0
    every = 0 if sys.stderr.isatty() else args.progress_every

    def logs():
        return [p for c in todo for p in store.path(c).parent.glob(f"{c.run_id}*{LOG_SUFFIX}")]
    try:
        with tqdm(total=len(todo), desc="runs", unit="run", dynamic_ncols=True,
                  disable=not sys.stderr.isatty()) as bar, \
                Reporter(logs, every, say, execution.started):
            for c, rec, path in run_all(todo, execution, plan, progress_factory(tqdm), say):
                bar.update(1)
                if rec is None:  # another process holds it
                    elsewhere.append(c)
                    continue
                records[c.run_id] = rec
                done += 1
                if tracker is not None:
                    logged += tracker.log(rec)
                if path is None:
                    tqdm.write(f"[{done}/{len(todo)}] {c.label}: computed by another process",
                               file=sys.stderr)
                    continue
                m = rec.metrics.selected or {}
                diverged = rec.metrics.headline.diverged_at
                tqdm.write(f"[{done}/{len(todo)}] {c.label}: acc {fmt(m.get('accuracy'))}, "
                           f"auroc {fmt(m.get('auroc'))}"
                           f"{f', diverged at {diverged}' if diverged else ''} "
                           f"({rec.timings['total']:.0f} s) -> {path}", file=sys.stderr)
        if elsewhere:
            records.update(_collect(elsewhere, store, execution))
    except KeyboardInterrupt:
        say(f"interrupted: {done} of {len(todo)} runs stored; rerun the same command to resume")
        return 130
    if todo:
        say(f"{len(todo)} runs in {time.perf_counter() - t:.0f} s")
    print_tables([records[c.run_id] for c in configs], Path(args.out), "last_run")
    warn_useless_samples([records[c.run_id] for c in configs])
    if tracker is not None:  # the runs found stored, and any another process computed
        logged += sum(tracker.log(records[c.run_id]) for c in configs)
        say(f"mlflow: {logged} runs logged to {tracker.uri} ({len(configs) - logged} were "
            f"already there)")
    return 0


def _guard(todo: list, args, plan, execution) -> None:
    """Stop before anything runs when the selection is estimated over --max-hours on this
    machine's device (bench/estimate.py), unless --yes; on GPUs, say first when a run's
    estimated peak memory exceeds its GPU's. A remote Ray cluster's size is not known here:
    its selections are not guarded."""
    from ..estimate import forecast
    from ..runner import pick_device

    if not todo or plan.remote:
        return
    device = pick_device(execution.device)
    if device.type == "cuda":
        _guard_memory(todo, execution, plan)
    if args.yes:
        return
    if args.max_hours <= 0:
        raise UsageError("--max-hours must be > 0 (--yes starts a selection of any length)")
    gpus = max(len(set(plan.devices)), 1)
    f = forecast(todo, device.type, gpus, execution.data_root, args.max_hours)
    if f is not None and f.hours > args.max_hours:
        raise UsageError(f.line(args.max_hours))


def _guard_memory(todo: list, execution, plan) -> None:
    """Say, before anything runs, when the largest run's estimated peak memory exceeds the
    smallest GPU the runs use (times the runs that share one: --workers beyond the GPUs). The
    estimate is shapes arithmetic (bench/estimate.py `peak_memory`), not a measurement, so it
    warns rather than stops."""
    import torch

    from ..estimate import peak_memory

    devices = sorted(set(plan.devices)) or [execution.device]
    have = min(torch.cuda.get_device_properties(torch.device(d)).total_memory
               for d in devices)
    sharing = max(1, -(-len(plan.devices) // max(len(devices), 1)))
    need = max((peak_memory(c, execution.data_root) for c in todo), key=lambda m: m.bytes)
    if need.bytes * sharing > have:
        say(f"warning: {need.run} needs about {need.bytes / 2**30:.0f} GiB of GPU memory "
            f"({need.what}){f' x {sharing} runs per GPU' if sharing > 1 else ''}, more than "
            f"the {have / 2**30:.0f} GiB of {devices[0]}: it may run out of memory; lower the "
            f"batch size of that network (`python -m bench list --params METHOD` names the "
            f"method's) or use fewer --workers")


def _say_other_numerics(records: list, device, threads: int | None) -> None:
    """One line when stored runs that are reused were computed with other numerics than
    this command would compute them with (another thread count, unpinned libraries, another
    CPU or torch; methods/numerics.py): the same config, numbers that differ by float
    rounding. `Numerics.differences` is the one comparison (here, in `bench check` and in
    `bench unlearn`)."""
    from ..methods.numerics import current

    here = current(device.type, threads)
    other = [(r, here.differences(r.provenance.numerics))
             for r in records if r.provenance.numerics is not None]
    other = [(r, d) for r, d in other if d]
    if other:
        r, differences = other[0]
        say(f"{len(other)} stored runs were computed with other numerics than this command's "
            f"(e.g. {r.config.label}, this command's -> its: {'; '.join(differences)}); they "
            f"are reused as they are, their numbers differ from this setting's by float "
            f"rounding at most (--force recomputes them)")


def _collect(configs: list, store: RecordStore, execution, poll: float = 1.0) -> dict:
    """The records of runs other processes were computing: wait for them; a run whose process
    died without storing it is computed here."""
    from ..runner import perform

    say(f"{len(configs)} runs are being computed by another process; waiting for them")
    waiting, records, since = list(configs), {}, time.time()
    while waiting:
        if time.time() - since > 600:  # say once in a while what is awaited, and how to stop
            claim = store.claim_path(waiting[0])
            say(f"still waiting for {len(waiting)} runs, e.g. {waiting[0].label}, claimed in "
                f"{claim}; if the process named there is gone, delete that file")
            since = time.time()
        for c in list(waiting):
            rec = store.load(c)
            if (rec is None or is_stale(rec)) and not store.claim_alive(c):
                rec, _ = perform(c, execution)  # None: another process took it over first
            if rec is not None and not is_stale(rec):
                records[c.run_id] = rec
                waiting.remove(c)
        if waiting:
            time.sleep(poll)
    return records
