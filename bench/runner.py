"""One run as one call: config -> dataset -> split -> method -> metrics -> record."""
from __future__ import annotations

import contextlib
import datetime
import functools
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .config import NO_SPLIT, ConfigError, RunConfig
from .datasets.base import DataError, ImageDataset
from .datasets.registry import load_dataset
from .datasets.splits import parse_split
from .environment import environment
from .methods import numerics
from .methods.base import Part, RunContext
from .methods.checkpoints import DEFAULT_EVERY, Checkpoint
from .methods.data import DeviceData
from .methods.evaluation import with_per_client
from .methods.models import build_model, count_parameters
from .methods.registry import build_method, method_class
from .methods.rng import Streams
from .monitor import RunLog
from .provenance import is_stale, provenance
from .records import Record
from .store import RecordStore
from .turns import turns
from .unlearn import check_exclusions


@dataclass(frozen=True)
class Execution:
    """How and where runs execute: none of it is part of a run's identity (its config hash).

    Records are bitwise identical across executors and machines of the same kind when
    `threads` is the same (the CPU's float reductions depend on the thread count).
    """

    out: str = "results"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    data_root: str | None = None
    threads: int | None = None  # torch CPU threads per run (None: torch's default)
    clients_at_once: int = 1  # >1: train that many clients of a round as one vectorised model
    client_threads: int = 1  # >1: on the CPU, train that many clients of a round at once
    started: float = 0.0  # time.time() at the command's start: later records are reused
    claims: bool = True  # claim each run (bench/store.py); off under Ray, which retries tasks
    tensorboard: str | None = None  # also write the live logs' scalars there (bench/monitor.py)
    # seconds of wall time between checkpoints inside a run (methods/checkpoints.py); None: off
    checkpoint_every: float | None = DEFAULT_EVERY

    @property
    def cache_dir(self) -> Path:
        return Path(self.out) / "cache"


def run_context(config: RunConfig, device: torch.device, data_root: str | None = None,
                cache_dir: Path | None = None, clients_at_once: int = 1,
                progress=None, run_numerics: numerics.Numerics | None = None,
                checkpoint: Checkpoint | None = None,
                client_threads: int = 1) -> tuple[RunContext, list[np.ndarray]]:
    """What a method's `run` (or `do_part`) sees, complete: the data on `device`, the run's
    client partition, its random streams, numerics (default: this process's) and checkpoint
    (default: off). Also returns the partition as index arrays."""
    dataset = cached_dataset(config.dataset, data_root)
    data = DeviceData(dataset, config.resolution, device)
    partition = client_indices(config, dataset)
    ctx = RunContext(data, [torch.from_numpy(p).to(device) for p in partition], config.train,
                     Streams(config.seed), cache_dir=cache_dir, clients_at_once=clients_at_once,
                     client_threads=client_threads,
                     numerics=run_numerics or numerics.current(device.type),
                     checkpoint=checkpoint or Checkpoint.off(), dp=config.dp,
                     **({"progress": progress} if progress else {}))
    return ctx, partition


def _part_context(config: RunConfig, execution: Execution, device: torch.device,
                  progress=None, checkpoint: Checkpoint | None = None):
    """Listed in the command's process or done in a worker, a part is keyed by the threads
    its run computes with (`execution.threads`), not by those of the process that lists it."""
    ctx, _ = run_context(config, device, execution.data_root, execution.cache_dir,
                         progress=progress, checkpoint=checkpoint,
                         run_numerics=numerics.current(device.type, execution.threads))
    return ctx, build_method(config.method, config.method_params)


def pending_parts(config: RunConfig, execution: Execution, device_type: str) -> list[Part]:
    """Pieces of the run an executor may do ahead as tasks of their own (`Method.parts`, e.g.
    generators not yet cached for `device_type`, where the parts will run); the run then
    finds their results in the cache. Listed from data on the CPU, whatever that device."""
    if not method_class(config.method).capabilities.parts:
        return []
    ctx, method = _part_context(config, execution, torch.device("cpu"))
    return method.parts(ctx, device_type)


def perform_part(config: RunConfig, execution: Execution, part: Part) -> Part:
    """Do one part of a run where it executes (its result goes to the shared cache)."""
    if execution.threads:
        torch.set_num_threads(execution.threads)
    device = pick_device(execution.device)
    with RunLog(RecordStore(execution.out).log_path(config, part),
                f"{config.label} part {part}", config.run_id, execution.tensorboard) as log, \
            _cpu_turns(device):
        # no folder of its own: the part's work (a module) checkpoints under its cache key
        ctx, method = _part_context(config, execution, device, log.progress,
                                    Checkpoint(None, {}, execution.checkpoint_every, device))
        method.do_part(ctx, part)
    return part


def _cpu_turns(device: torch.device, client_threads: int = 1):
    """On the CPU, take turns with the machine's other suite processes (bench/turns.py), for
    the torch threads of each of the run's client threads."""
    return turns(torch.get_num_threads() * client_threads) if device.type == "cpu" \
        else contextlib.nullcontext()


def perform(config: RunConfig, execution: Execution,
            progress=None) -> tuple[dict | None, Path | None]:
    """One run as a task: compute it and store its record atomically from where it ran, so
    a crashed worker loses at most this run. Returns the record and where it was written;
    (record, None) when another process computed it meanwhile; (None, None) when another
    live process holds the run (it is computing it)."""
    store = RecordStore(execution.out)
    if execution.claims and not store.claim(config):
        return None, None
    try:
        path = store.path(config)
        if path.exists() and path.stat().st_mtime >= execution.started:
            record = store.load(config)  # computed meanwhile by another process
            if record is not None and not is_stale(record):
                return record, None
        if execution.threads:
            torch.set_num_threads(execution.threads)
        device = pick_device(execution.device)
        with RunLog(store.log_path(config), config.label, config.run_id,
                    execution.tensorboard, inner=progress) as log:
            record, artifacts = execute(config, device, execution.data_root, log.progress,
                                        execution.cache_dir, execution.clients_at_once,
                                        store.checkpoint_path(config),
                                        execution.checkpoint_every, execution.client_threads)
            path = store.write(record, artifacts)
            Checkpoint(store.checkpoint_path(config), {}).clear()  # the record holds it all
            log.selected = record.metrics.selected
        return record, path
    finally:
        if execution.claims:
            store.release(config)


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device {name!r}: valid choices: auto, cpu, cuda, cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name!r}: valid choices: auto, cpu, cuda, cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available here; use --device cpu")
    if device.type == "cuda" and os.environ.get(DETERMINISTIC) == "1":
        # bitwise repeatable GPU runs, at a cost (docs/scaling.md, "Determinism on a GPU");
        # cuBLAS needs CUBLAS_WORKSPACE_CONFIG=:4096:8 set before CUDA starts
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True)
    return device


DETERMINISTIC = "FLBENCH_DETERMINISTIC"  # "1": deterministic algorithms on a GPU


@functools.lru_cache(maxsize=4)
def cached_dataset(name: str, root: str | None) -> ImageDataset:
    """Datasets are loaded once per process and shared by the runs of a grid."""
    return load_dataset(name, root)


def client_indices(config: RunConfig, dataset: ImageDataset) -> list[np.ndarray]:
    """The run's partition of the training indices (the whole set for pooled methods)."""
    labels = dataset.y_train.numpy()
    if config.split == NO_SPLIT:
        return [np.arange(len(labels))]
    spec = parse_split(config.split)
    groups = None if dataset.groups_train is None else dataset.groups_train.numpy()
    return spec(labels, config.n_clients, Streams(config.seed).numpy("split"), groups)


def check_splits(configs: list[RunConfig], data_root: str | None = None,
                 download_missing: bool = False, skip_missing: bool = False) -> None:
    """Draw every partition of a grid before running any of it, so an impossible split
    (too few samples for a Dirichlet draw, silos with the wrong client count) or clients left
    out that the partition does not have stops the grid with a clear error before anything is
    computed. `skip_missing` (a dry run): datasets absent here are not checked."""
    missing = {}
    for name in dict.fromkeys(c.dataset for c in configs):
        try:
            cached_dataset(name, data_root)
        except DataError as e:
            if not download_missing:
                missing[name] = str(e)
                continue
            try:  # fetch it, then load it through the cache like every other dataset
                load_dataset(name, data_root, download_missing=True)
                cached_dataset(name, data_root)
            except DataError as e2:
                missing[name] = str(e2)
    if missing and not skip_missing:  # every missing dataset in one message
        raise DataError(" | ".join(missing.values()))
    clients: dict[tuple, int] = {}
    for c in configs:
        if c.dataset in missing:
            continue
        key = (c.dataset, c.split, c.n_clients, c.seed)
        if key not in clients:
            clients[key] = len(client_indices(c, cached_dataset(c.dataset, data_root)))
        if c.method_params.get("exclude_clients"):
            check_exclusions(c, clients[key])


def execute(config: RunConfig, device: torch.device, data_root: str | None = None,
            progress=None, cache_dir: Path | None = None, clients_at_once: int = 1,
            checkpoint_path: Path | None = None,
            checkpoint_every: float | None = None,
            client_threads: int = 1) -> tuple[Record, dict]:
    """Run `config`; return its record (not yet stored) and its artifacts (name -> image).
    With a `checkpoint_path`, the run checkpoints there every `checkpoint_every` seconds and
    resumes what a killed process of the same code and numerics left there."""
    t0 = time.perf_counter()
    run_numerics = numerics.current(device.type)
    prov = provenance(config.method, config.dataset, run_numerics)
    # a checkpoint holds to the same code, libraries and numerics as the record (provenance),
    # and to the settings that change the bits without changing the run: the vectorised client
    # path equals the looped one to float tolerance only
    identity = {"run": config.run_id, **prov.to_dict(), "clients_at_once": clients_at_once}
    checkpoint = Checkpoint(checkpoint_path, identity, checkpoint_every, device) \
        if checkpoint_path is not None and checkpoint_every is not None else None
    # client threads change no bits (each client's training is the same kernels at the same
    # thread count), so a checkpoint taken with them resumes without them and back
    ctx, partition = run_context(config, device, data_root, cache_dir, clients_at_once, progress,
                                 run_numerics, checkpoint, client_threads)
    dataset = cached_dataset(config.dataset, data_root)
    labels = dataset.y_train.numpy()
    t1 = time.perf_counter()
    method = build_method(config.method, config.method_params)
    with _cpu_turns(device, ctx.client_threads if method.capabilities.vectorises_clients
                    else 1) as shared:
        waited = shared.waited if shared else 0.0
        result = method.run(ctx)
        waited = (shared.waited if shared else 0.0) - waited
    t2 = time.perf_counter()
    n_classes = dataset.info.n_classes
    counts = [np.bincount(labels[p], minlength=n_classes).tolist() for p in partition]
    # each client served on its own label distribution; a pooled run has no clients
    metrics = with_per_client(result.metrics, counts) if method.capabilities.uses_split \
        else result.metrics
    record = Record(
        run_id=config.run_id,
        config=config,
        dataset_info={"n_classes": n_classes, "class_names": list(dataset.info.class_names),
                      "sizes": dataset.sizes, "metric": dataset.info.metric},
        split={"client_sizes": [len(p) for p in partition], "client_class_counts": counts},
        model_parameters=_parameter_count(config, dataset),
        metrics=metrics,
        curves=result.curves,
        communication=result.communication,
        timings={"setup": t1 - t0, **result.timings, "method_total": t2 - t1,
                 "total": t2 - t0,
                 # of the total, the wait for cores other suite processes held
                 "waiting_for_cores": waited},
        extra=result.extra,
        audit=result.audit,
        dp=result.dp,
        environment={**environment(device), "clients_at_once": clients_at_once,
                     "client_threads": ctx.client_threads},
        provenance=prov,
        checkpoints=ctx.checkpoint.summary() if ctx.checkpoint.on else None,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    return record, result.artifacts


def _parameter_count(config: RunConfig, dataset: ImageDataset) -> int:
    with torch.device("meta"):  # shapes only: no memory, no draw from any RNG
        model = build_model(config.train.model, dataset.info.channels, dataset.info.n_classes,
                            config.resolution, config.train.norm)
    return count_parameters(model)
