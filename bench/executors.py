"""Executors: where the runs of a grid execute. Each yields (config, record, path) per finished run.

- `sequential`: one run after the other in this process, with progress bars over rounds.
- `joblib`: a pool of worker processes on this machine (loky); each run is pinned to
  `threads` torch threads so that workers x threads does not oversubscribe the cores.
- `ray`: a run is a Ray task; it connects to an existing cluster (`--ray-address`, or
  $RAY_ADDRESS) or starts a local one. On a cluster with GPUs each task asks for one GPU.

Every run is `runner.perform`: the task computes the run and writes its record atomically
to the results folder (on a cluster: a shared filesystem), so a crashed worker or node loses
at most its own run and rerunning the same command resumes. The order in which runs finish
depends on the executor; the records do not (at equal threads per run).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Iterator

from .config import ConfigError, RunConfig
from .runner import Execution, perform

EXECUTORS = ("sequential", "joblib", "ray")


@dataclass(frozen=True)
class Plan:
    """The executor's own settings (the per-run settings are in `Execution`)."""

    executor: str = "sequential"
    workers: int | None = None  # parallel runs (joblib: processes; ray local: CPUs to use)
    ray_address: str | None = None  # None: $RAY_ADDRESS, else start a local instance
    gpus_per_run: float | None = None  # ray: None = 1 when the cluster has GPUs and device != cpu


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def settle(plan: Plan, execution: Execution) -> tuple[Plan, Execution]:
    """Fill in the defaults: workers = cores / threads (or the cores), threads = cores /
    workers, so that a parallel plan never runs more torch threads than there are cores."""
    if plan.executor not in EXECUTORS:
        raise ConfigError(f"--executor {plan.executor!r}: valid choices: {', '.join(EXECUTORS)}")
    for name, value in (("--workers", plan.workers), ("--threads", execution.threads)):
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    if execution.clients_at_once < 1:
        raise ConfigError(f"--clients-at-once must be >= 1, got {execution.clients_at_once}")
    if plan.executor == "sequential":
        return plan, execution
    cores = available_cores()
    workers = plan.workers or max(1, cores // (execution.threads or 1))
    threads = execution.threads or max(1, cores // workers)
    from dataclasses import replace

    return replace(plan, workers=workers), replace(execution, threads=threads)


Finished = tuple[RunConfig, dict, "os.PathLike"]


def run_all(configs: list[RunConfig], execution: Execution, plan: Plan,
            progress: Callable | None = None) -> Iterator[Finished]:
    """Run `configs` with the plan's executor, yielding each run as soon as it is stored."""
    if not configs:
        return iter(())
    return {"sequential": _sequential, "joblib": _joblib, "ray": _ray}[plan.executor](
        configs, execution, plan, progress)


def _sequential(configs, execution, plan, progress):
    for c in configs:
        record, path = perform(c, execution, progress)
        yield c, record, path


def _task(config: RunConfig, execution: Execution):
    record, path = perform(config, execution)
    return config, record, path


def _joblib(configs, execution, plan, progress):
    from joblib import Parallel, delayed, parallel_config

    # inner_max_num_threads caps OpenMP / BLAS in each worker; perform() pins torch as well
    with parallel_config(backend="loky", inner_max_num_threads=execution.threads):
        yield from Parallel(n_jobs=plan.workers, return_as="generator_unordered")(
            delayed(_task)(c, execution) for c in configs)


def _ray(configs, execution, plan, progress):
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install 'ray[default]' "
                          "(or pip install -e '.[cluster]')") from None
    address = plan.ray_address or os.environ.get("RAY_ADDRESS")
    started_here = not ray.is_initialized()
    if started_here:
        if address:
            ray.init(address=address, log_to_driver=False)
        else:  # a local instance sized to this machine's share for the grid
            ray.init(num_cpus=plan.workers * execution.threads, include_dashboard=False,
                     log_to_driver=False, object_store_memory=256 * 2**20)
    try:
        gpus = plan.gpus_per_run
        if gpus is None:
            has_gpus = ray.cluster_resources().get("GPU", 0) > 0
            gpus = 1 if has_gpus and execution.device != "cpu" else 0
        if gpus and execution.device.startswith("cuda:"):
            raise ConfigError("--device cuda:N with --executor ray: Ray assigns each task its "
                              "GPU; use --device auto or cuda")
        task = ray.remote(num_cpus=execution.threads, num_gpus=gpus, max_retries=2)(_task)
        pending = [task.remote(c, execution) for c in configs]
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                try:
                    yield ray.get(done[0])
                except ray.exceptions.RayTaskError as e:
                    raise e.as_instanceof_cause() from None
        finally:
            for ref in pending:  # interrupted or failed: stop what has not finished
                ray.cancel(ref, force=True)
    finally:
        if started_here:
            ray.shutdown()
