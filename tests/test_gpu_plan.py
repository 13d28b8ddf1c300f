"""The GPU path as far as a CPU can take it (no GPU here): the execution plan for 0, 1, 2 and 8
mocked GPUs, the README's GPU command and experiments/cifar10_gpu.toml planning the same
execution, the memory guard, and the joblib scheduler giving each run a GPU of its own.

The mock is `torch.cuda.is_available` / `device_count` / `get_device_properties`: what the
suite asks torch about GPUs, and all it asks before a run starts computing."""
import json
import re
import threading
import time
import types
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from bench import executors
from bench.cli import main
from bench.commands.run import _guard_memory
from bench.config import parse_overrides, resolve
from bench.executors import Plan, settle
from bench.runner import Execution
from helpers import ROOT

GIB = 2**30
# the README's command, "A real dataset on a GPU"
README_GPU = ["run", "--datasets", "cifar10", "--splits", "dirichlet:0.1", "--methods",
              "fedavg,federatedfactory", "--seeds", "0-2", "--device", "cuda", "--download",
              "--yes"]


@pytest.fixture
def gpus(monkeypatch):
    """mock(n, memory=141 GiB): a machine with n visible GPUs."""
    def mock(n, memory=141 * GIB):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(torch.cuda, "get_device_properties",
                            lambda d: types.SimpleNamespace(total_memory=memory,
                                                            name="mocked GPU"))
        monkeypatch.setattr(executors, "available_cores", lambda: 16)
    return mock


@pytest.mark.parametrize("n, executor, devices", [
    (0, "joblib", ()),  # the CPU: the grid's executor (here the default grid's, joblib)
    (1, "sequential", ("cuda",)),
    (2, "joblib", ("cuda:0", "cuda:1")),
    (8, "joblib", tuple(f"cuda:{i}" for i in range(8))),
])
def test_one_run_per_gpu_whatever_the_grid(gpus, n, executor, devices):
    gpus(n)
    plan, ex = settle(Plan(), Execution(device="auto"), "joblib", 1)
    assert (plan.executor, plan.devices) == (executor, devices)
    if n == 0:  # a worker per core, one thread each: the default grid's references
        assert (plan.workers, ex.threads) == (16, 1)
    elif n > 1:  # one worker per GPU, the cores shared among them
        assert (plan.workers, ex.threads) == (n, 16 // n)
    else:
        assert ex.threads == 16


def test_explicit_choices_win_on_gpus(gpus):
    gpus(2)
    plan, _ = settle(Plan(workers=4), Execution(device="cuda"), "joblib", 1)
    assert plan.devices == ("cuda:0", "cuda:1", "cuda:0", "cuda:1")  # asked: 2 runs per GPU
    assert "share a GPU" in plan.describe(4)
    plan, _ = settle(Plan(), Execution(device="cuda:1"), "joblib", 1)
    assert (plan.executor, plan.devices) == ("sequential", ("cuda:1",))
    plan, _ = settle(Plan(), Execution(device="cpu"), "joblib", 1)  # the CPU asked for
    assert (plan.executor, plan.devices) == ("joblib", ())
    plan, ex = settle(Plan("ray", gpus_per_run=0.5), Execution(device="cuda"))
    assert plan.devices == () and plan.gpus_per_run == 0.5  # Ray places its own tasks


def _plan_line(capsys, args) -> tuple[str, list[str]]:
    capsys.readouterr()
    assert main(args) == 0
    out, err = capsys.readouterr()
    (line,) = [x for x in err.splitlines() if "plan:" in x]
    return line.split("plan: ")[1], [json.loads(x)["run_id"] for x in out.splitlines()]


@pytest.mark.parametrize("n", [2, 8])
def test_the_readme_gpu_command_and_its_experiment_file_plan_one_run_per_gpu(
        gpus, n, tmp_path, capsys):
    gpus(n)
    written = tmp_path / "study.toml"
    plan, runs = _plan_line(capsys, [*README_GPU, "--dry-run", "--write-config", str(written)])
    assert plan == (f"joblib, {n} workers x {16 // n} threads on "
                    f"{', '.join(f'cuda:{i}' for i in range(n))} (one run per GPU at a time)")
    assert _plan_line(capsys, ["run", "--config", str(written), "--dry-run"]) == (plan, runs)
    # the committed experiment file (grid "paper") plans the same execution of the same runs
    exp, exp_runs = _plan_line(capsys, ["run", "--config",
                                        str(ROOT / "experiments/cifar10_gpu.toml"),
                                        "--methods", "fedavg,federatedfactory",
                                        "--splits", "dirichlet:0.1", "--dry-run"])
    assert (exp, sorted(exp_runs)) == (plan, sorted(runs))


def test_one_gpu_runs_one_run_at_a_time(gpus, capsys):
    gpus(1)
    plan, _ = _plan_line(capsys, [*README_GPU, "--dry-run"])
    assert plan == "sequential, one run at a time, 16 threads on cuda (one run per GPU at a time)"


def test_a_run_over_the_gpus_memory_is_said_before_anything_runs(gpus, capsys):
    config = resolve("cifar10", "federatedfactory", "silos", 0)  # the paper's generator
    gpus(1, memory=16 * GIB)
    plan, ex = settle(Plan(), Execution(device="cuda"))
    _guard_memory([config], ex, plan)
    assert re.search(r"warning: .* needs about \d+ GiB of GPU memory \(a generator at 32 px, "
                     r"batch 512.*more than the 16 GiB of cuda", capsys.readouterr().err)
    for fits, memory in (([config], 141 * GIB),  # an H200
                         ([resolve("cifar10", "fedavg", "silos", 0,
                                   parse_overrides(["batch_size=8"]))], 16 * GIB)):
        gpus(1, memory=memory)
        _guard_memory(fits, ex, plan)
        assert "warning" not in capsys.readouterr().err
    gpus(2, memory=24 * GIB)  # two runs per GPU asked for: twice the memory
    plan, ex = settle(Plan(workers=4), Execution(device="cuda"))
    _guard_memory([config], ex, plan)
    assert "x 2 runs per GPU" in capsys.readouterr().err


def test_joblib_gives_each_run_a_free_gpu(monkeypatch, gpus):
    """With a thread pool standing in for loky's processes and 2 mocked GPUs: 7 runs of
    unequal length, never two on one GPU at a time, both GPUs used."""
    from joblib.externals import loky

    gpus(2)
    lock, running, seen = threading.Lock(), {}, []

    def run_task(config, execution):
        with lock:
            assert execution.device not in running.values(), (execution.device, running)
            running[config.run_id] = execution.device
            seen.append(execution.device)
        time.sleep(0.01 * (1 + int(config.run_id) % 3))
        with lock:
            del running[config.run_id]
        return config, None, None

    monkeypatch.setattr(executors, "_task", run_task)
    monkeypatch.setattr(executors, "pending_parts", lambda c, e, d: [])
    monkeypatch.setattr(loky, "get_reusable_executor",
                        lambda max_workers, env: ThreadPoolExecutor(max_workers))
    plan, ex = settle(Plan(), Execution(out="unused", device="cuda"))
    configs = [types.SimpleNamespace(run_id=str(i), label=str(i)) for i in range(7)]
    done = list(executors._joblib(configs, ex, plan, None, lambda m: None))
    assert len(done) == 7 and set(seen) == {"cuda:0", "cuda:1"}


def test_a_remote_cluster_is_decided_once_in_settle(monkeypatch):
    """Ray's address is read from --ray-address or $RAY_ADDRESS once, by `settle`; the
    command's guard and the executor ask the plan (`Plan.remote`), not the environment."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    local, _ = settle(Plan("ray"), Execution(device="cpu"))
    assert not local.remote and local.ray_address is None
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    remote, execution = settle(Plan("ray"), Execution(device="cpu"))
    assert remote.remote and remote.ray_address == "10.0.0.5:6379" and not execution.claims
    given, _ = settle(Plan("ray", ray_address="auto"), Execution(device="cpu"))
    assert given.ray_address == "auto"
    plain, _ = settle(Plan("joblib"), Execution(device="cpu"))
    assert not plain.remote  # $RAY_ADDRESS matters to Ray only
