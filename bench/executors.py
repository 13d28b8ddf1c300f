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

The parallel executors also split runs into their independent parts where a method has them
(`runner.pending_parts`: FederatedFactory's generators, one per client and class held) and
run each part as a task of its own before the run, which then finds them in the cache
(`<out>/cache`). Without this, a FederatedFactory run's generators train one after the other
in one task, and the longest such run bounds a grid's wall time however many workers there
are (docs/scaling.md).
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from dataclasses import dataclass, replace
from typing import Callable, Iterator

from .config import ConfigError, RunConfig
from .methods import numerics
from .methods.base import Part
from .methods.registry import REFERENCES
from .runner import Execution, pending_parts, perform, perform_part

EXECUTORS = ("sequential", "joblib", "ray")


@dataclass(frozen=True)
class Plan:
    """The executor's own settings (the per-run settings are in `Execution`)."""

    executor: str | None = None  # None: `settle` chooses (one run per GPU, else the grid's)
    workers: int | None = None  # parallel runs (joblib: processes; ray local: CPUs to use)
    # a cluster to join; `settle` reads $RAY_ADDRESS into it; None: start a local instance
    ray_address: str | None = None
    gpus_per_run: float | None = None  # ray: None = 1 when the cluster has GPUs and device != cpu
    # joblib and sequential on GPUs: the device of each worker slot ("cuda:0", "cuda:1", ...);
    # a run takes a free slot's device, so no two runs share a GPU unless --workers asks for it
    devices: tuple[str, ...] = ()

    @property
    def remote(self) -> bool:
        """Runs go to a Ray cluster whose size and devices are not known here."""
        return self.executor == "ray" and self.ray_address is not None

    def describe(self, threads: int | None, client_threads: int = 1) -> str:
        """One line for people: executor, workers x threads, devices."""
        what = {"sequential": "sequential, one run at a time"}.get(
            self.executor, f"{self.executor}, {self.workers} workers x {threads} threads")
        if self.executor == "sequential" and threads:
            what += f", {threads} threads"
        if client_threads > 1:
            what += f", {client_threads} clients at once in threads"
        if self.devices:
            shared = len(self.devices) > len(set(self.devices))
            what += (f" on {', '.join(dict.fromkeys(self.devices))}" +
                     (" (runs share a GPU: --workers)" if shared else
                      " (one run per GPU at a time)"))
        return what


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def visible_gpus(device: str) -> int:
    """How many GPUs the runs of `--device` may use here: 0 on the CPU, 1 for `cuda:N`, every
    visible one for `auto` and `cuda` (CUDA_VISIBLE_DEVICES narrows them)."""
    if device == "cpu" or device.startswith("cuda:"):
        return int(device.startswith("cuda:"))
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def settle(plan: Plan, execution: Execution, default_executor: str = "sequential",
           default_threads: int | None = None) -> tuple[Plan, Execution]:
    """Fill in the defaults, device first. On GPUs (`--device auto` or `cuda` with GPUs
    visible, or `cuda:N`) a run gets a GPU of its own: with neither --executor nor --workers,
    one GPU runs sequentially and several run on joblib with one worker per GPU, each run on a
    free one; the grid's executor and thread count (set for the CPU references' bits) do not
    apply there. On the CPU: workers = cores / threads (or the cores), threads = cores /
    workers, so that a parallel plan never runs more torch threads than there are cores."""
    if plan.executor is not None and plan.executor not in EXECUTORS:
        raise ConfigError(f"--executor {plan.executor!r}: valid choices: {', '.join(EXECUTORS)}")
    for name, value in (("--workers", plan.workers), ("--threads", execution.threads)):
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be >= 1, got {value}")
    if plan.gpus_per_run is not None and plan.gpus_per_run < 0:
        raise ConfigError(f"--gpus-per-run must be >= 0, got {plan.gpus_per_run}")
    if execution.clients_at_once < 1:
        raise ConfigError(f"--clients-at-once must be >= 1, got {execution.clients_at_once}")
    if execution.client_threads < 1:
        raise ConfigError(f"--client-threads must be >= 1, got {execution.client_threads}")
    if execution.client_threads > 1 and execution.clients_at_once > 1:
        raise ConfigError("--client-threads and --clients-at-once each train several clients "
                          "at once: give one of them (threads on a CPU, vectorised on a GPU)")
    gpus = visible_gpus(execution.device) if plan.executor != "ray" else 0
    if gpus:
        executor = plan.executor or ("sequential" if gpus == 1 and plan.workers is None
                                     else "joblib")
        slots = (plan.workers or gpus) if executor == "joblib" else 1
        names = [execution.device] if execution.device.startswith("cuda:") else \
            (["cuda"] if gpus == 1 else [f"cuda:{i}" for i in range(gpus)])
        plan = replace(plan, executor=executor, devices=tuple(names[i % len(names)]
                                                              for i in range(slots)))
        if executor == "joblib":
            plan = replace(plan, workers=slots)
        threads = execution.threads or max(1, available_cores() // slots)
        return plan, replace(execution, threads=threads)
    plan = replace(plan, executor=plan.executor or default_executor)
    # N client threads each run the run's torch threads: one each unless asked otherwise
    execution = replace(execution, threads=execution.threads or default_threads or (
        1 if execution.client_threads > 1 else None))
    if plan.executor == "ray":  # a node that died cannot release its claims: Ray retries instead
        execution = replace(execution, claims=False)
        plan = replace(plan, ray_address=plan.ray_address or os.environ.get("RAY_ADDRESS"))
    if plan.executor == "sequential":
        return plan, execution
    cores = available_cores()
    per_run = execution.client_threads  # torch threads of a run = threads x client threads
    workers = plan.workers or max(1, cores // ((execution.threads or 1) * per_run))
    threads = execution.threads or max(1, cores // (workers * per_run))
    return replace(plan, workers=workers), replace(execution, threads=threads)


Finished = tuple[RunConfig, dict, "os.PathLike"]


def run_all(configs: list[RunConfig], execution: Execution, plan: Plan,
            progress: Callable | None = None, say: Callable[[str], None] = lambda m: None
            ) -> Iterator[Finished]:
    """Run `configs` with the plan's executor, yielding each run as soon as it is stored."""
    if not configs:
        return iter(())
    return {"sequential": _sequential, "joblib": _joblib, "ray": _ray}[plan.executor](
        configs, execution, plan, progress, say)


def _sequential(configs, execution, plan, progress, say):
    for c in configs:
        record, path = perform(c, execution, progress)
        yield c, record, path


def _task(config: RunConfig, execution: Execution, *after):
    """One run (`after`: the parts it waits for, already done when it starts)."""
    record, path = perform(config, execution)
    return config, record, path


def _parts(configs, execution, say, device_type: str) -> dict[str, list[Part]]:
    """Each run's pending parts, listed once, here; a part that several runs share (an equal
    value: the same work) is done once."""
    parts = {c.run_id: pending_parts(c, execution, device_type) for c in configs}
    n = len({p for ps in parts.values() for p in ps})
    if n:
        say(f"{n} parts of {sum(1 for p in parts.values() if p)} runs (generators) run as "
            f"tasks of their own first")
    return parts


def _owned(configs, parts: dict[str, list[Part]]) -> list[tuple[RunConfig, Part]]:
    """(config, part) for each distinct part, with the first run that names it."""
    seen: dict[Part, RunConfig] = {}
    for c in configs:
        for part in parts[c.run_id]:
            seen.setdefault(part, c)
    return [(c, part) for part, c in seen.items()]


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _joblib(configs, execution, plan, progress, say):
    """A pool of `plan.workers` processes (joblib's loky), fed from here so that no worker
    ever waits: the parts first (the long generators start at once), then each run whose
    parts are all done (its futures resolved), then the runs without parts. At most one task
    per worker is in flight, so a run whose parts finish jumps ahead of the runs not yet
    submitted. On GPUs each task takes the device of a free worker slot (`plan.devices`) and
    gives it back when it ends: one run per GPU at a time. A worker killed from outside (the
    OOM killer, a kill -9) breaks the pool: each task it took down is submitted once more to a
    fresh pool and resumes from its checkpoint (methods/checkpoints.py); a task taken down
    twice stops the command."""
    from concurrent.futures import FIRST_COMPLETED, wait

    from joblib.externals.loky import get_reusable_executor
    from joblib.externals.loky.process_executor import BrokenProcessPool

    from .runner import pick_device

    device_type = pick_device(execution.device).type
    parts = _parts(configs, execution, say, device_type)
    owned = _owned(configs, parts)
    free = list(plan.devices)  # the devices of the slots no task holds now
    # tasks: (the part it does or None for a run, its config, tries so far)
    todo_parts = [(part, c, 0) for c, part in owned]
    waiting = {c.run_id: (c, set(parts[c.run_id])) for c in configs if parts[c.run_id]}
    ready: list = []  # runs whose parts are all done, and tasks to try again
    plain = [(None, c, 0) for c in configs if not parts[c.run_id]]
    # each worker caps OpenMP / BLAS at the run's threads; perform() pins torch as well
    env = {k: str(execution.threads) for k in THREAD_VARIABLES}
    pool = get_reusable_executor(max_workers=plan.workers, env=env)
    in_flight: dict = {}  # future -> (its task, the device it holds or None)

    def submit(task):
        part, config, _ = task
        device = free.pop(0) if free else None
        exe = replace(execution, device=device) if device else execution
        future = pool.submit(perform_part, config, exe, part) if part is not None else \
            pool.submit(_task, config, exe)
        in_flight[future] = (task, device)

    try:
        while todo_parts or waiting or ready or plain or in_flight:
            while len(in_flight) < plan.workers and (todo_parts or ready or plain):
                submit((todo_parts or ready or plain).pop(0))
            done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in done:
                task, device = in_flight.pop(future)
                if device is not None:
                    free.append(device)
                part, config, tries = task
                try:
                    out = future.result()  # a failed task raises here, as it would in the run
                except BrokenProcessPool as e:  # its worker (or another one) was killed
                    what = f"{config.label}" + (f" part {part}" if part else "")
                    if tries:
                        raise RuntimeError(f"a worker running {what} was killed twice ({e}); "
                                           f"out of memory? Use fewer --workers") from None
                    say(f"a worker was killed while running {what}: trying it once more "
                        f"(it resumes from its last checkpoint)")
                    ready.insert(0, (part, config, 1))
                    pool = get_reusable_executor(max_workers=plan.workers, env=env)
                    continue
                if part is None:
                    yield out
                    continue
                for run_id, (c, left) in list(waiting.items()):
                    left.discard(part)
                    if not left:
                        ready.append((None, c, 0))
                        del waiting[run_id]
    finally:
        if in_flight:  # failed or interrupted: stop the tasks still running
            pool.shutdown(wait=False, kill_workers=True)


@contextlib.contextmanager
def _silenced():
    """Standard error closed at the file-descriptor level (Ray's C++ core writes there
    directly, bypassing Python), restored afterwards."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _ray(configs, execution, plan, progress, say):
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install 'ray[default]' "
                          "(or pip install -e '.[cluster]')") from None
    address = plan.ray_address
    started_here = not ray.is_initialized()
    # a worker pins its numerics when it imports the suite (bench/__init__.py); the switches
    # travel with the job so that an unpinned driver (FLBENCH_NUMERICS=native) has unpinned
    # workers on every node
    # workers on every node; so do the user's own methods named as module:Class
    env = {k: os.environ[k] for k in (*numerics.PINS, numerics.SWITCH, REFERENCES)
           if k in os.environ}
    if started_here:
        if address:
            try:
                with _silenced():  # Ray's own connection log (Python and C++), until connected
                    ray.init(address=address, log_to_driver=False,
                             logging_level=logging.ERROR, runtime_env={"env_vars": env})
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise ConfigError(f"--ray-address {address}: cannot join the cluster "
                                  f"({str(e).splitlines()[0] if str(e) else type(e).__name__});"
                                  f" start it with `ray start --head`, or leave the option out "
                                  f"for a local instance") from None
        else:  # a local instance sized to this machine's share for the grid
            ray.init(num_cpus=plan.workers * execution.threads * execution.client_threads,
                     include_dashboard=False,
                     log_to_driver=False, object_store_memory=256 * 2**20,
                     runtime_env={"env_vars": env})
    refs = []
    try:
        gpus = plan.gpus_per_run
        if gpus is None:
            has_gpus = ray.cluster_resources().get("GPU", 0) > 0
            gpus = 1 if has_gpus and execution.device != "cpu" else 0
        if gpus and execution.device.startswith("cuda:"):
            raise ConfigError("--device cuda:N with --executor ray: Ray assigns each task its "
                              "GPU; use --device auto or cuda")
        resources = dict(num_cpus=execution.threads * execution.client_threads, num_gpus=gpus,
                         max_retries=2)
        run_task = ray.remote(**resources)(_task)
        part_task = ray.remote(**resources)(perform_part)
        parts = _parts(configs, execution, say, "cuda" if gpus else "cpu")
        tasks = {part: part_task.remote(c, execution, part) for c, part in _owned(configs, parts)}
        refs += tasks.values()
        pending = []
        for c in configs:  # a run's task starts once its parts' tasks are done
            pending.append(run_task.remote(c, execution, *[tasks[p] for p in parts[c.run_id]]))
        refs += pending
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                yield ray.get(done[0])
            except ray.exceptions.RayTaskError as e:
                raise e.as_instanceof_cause() from None
        refs = []  # every task finished: nothing to cancel
    finally:
        # interrupted or failed: stop what has not finished. Never after a normal end: a
        # cancel racing with a finished task's reply aborts Ray's core ("Tried to complete
        # task that was not pending", ray-project/ray#54798; seen once in CI under load)
        for ref in refs:
            ray.cancel(ref, force=True)
        if started_here:
            ray.shutdown()
