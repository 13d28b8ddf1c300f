"""`python -m bench unlearn`: forget clients of a stored FederatedFactory or FedCVAE-Ens run,
retrain, compare."""
from __future__ import annotations

import time
from pathlib import Path

from ..monitor import RunLog
from ..provenance import is_stale
from ..records import label
from ..store import RecordStore
from . import HELP
from .common import UsageError, csv, fmt, out_option, progress_factory, say


def add_parser(sub) -> None:
    unlearn = sub.add_parser("unlearn", help=HELP["unlearn"])
    unlearn.add_argument("--run", required=True, help="run id (or a unique prefix)")
    unlearn.add_argument("--clients", required=True, type=csv, help="client ids, e.g. 3 or 3,5")
    unlearn.add_argument("--device", default="auto")
    unlearn.add_argument("--data-root", default=None)
    out_option(unlearn)


def main(args) -> int:
    from ..runner import execute, pick_device
    from ..methods import numerics
    from ..unlearn import comparison, forget_config

    try:
        clients = [int(k) for k in args.clients]
    except ValueError:
        raise UsageError(f"--clients {','.join(args.clients)}: expected integers") from None
    store = RecordStore(args.out, warn=say)
    before = store.find(args.run)
    if is_stale(before):  # its numbers are not this code's: a comparison would mislead
        raise UsageError(f"run {before.run_id} was computed by other code than the current "
                         f"one; recompute it first with `python -m bench run` (same options)")
    config = forget_config(before.config, clients, len(before.split["client_sizes"]))
    device = pick_device(args.device)
    stored = before.provenance.numerics
    # records of a GPU run, or of schema 2 without numerics, keep threads in `environment`
    threads = (stored.threads if stored is not None else None) \
        or before.environment.get("torch_threads")
    if device.type == "cpu":
        if threads:
            # the run's own thread count (CPU float rounding depends on it): the unlearned run
            # is then bit for bit the run that never had the clients, as the grid computes it
            import torch

            torch.set_num_threads(threads)
        differs = numerics.current("cpu", threads).differences(stored) if stored \
            else ["numerics not recorded"]
        if differs:
            say(f"run {before.run_id} was computed with other numerics than this process's "
                f"({'; '.join(differs)}): the unlearned run differs from it by rounding too "
                f"(docs/numerics.md)")
    from tqdm.auto import tqdm

    t = time.perf_counter()
    with RunLog(store.log_path(config), f"{config.label} (unlearning {clients})",
                config.run_id, inner=progress_factory(tqdm)) as log:
        after, artifacts = execute(config, device, args.data_root, progress=log.progress,
                                   cache_dir=Path(args.out) / "cache")
        u = {**comparison(before, after, clients), "seconds": time.perf_counter() - t}
        path = store.write(after.replace(unlearning=u), artifacts)
        log.selected = after.metrics.selected
    print(f"forgot clients {clients} of run {before.run_id} (classes {u['forgotten_classes']}) "
          f"in {u['seconds']:.0f} s -> {path}")
    for mode, m in u["modes"].items():
        print(f"\n{label(config.method, mode)}: accuracy {m['accuracy_before']:.3f} -> {m['accuracy_after']:.3f}")
        print("| class | before | after |\n|---|---|---|")
        for c, (b, a) in enumerate(zip(m["per_class_before"], m["per_class_after"])):
            mark = " (forgotten)" if c in u["forgotten_classes"] else ""
            print(f"| {c}{mark} | {fmt(b)} | {fmt(a)} |")
    return 0
