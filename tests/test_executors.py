"""The three executors store identical records for a tiny grid; Ray runs for real, locally."""
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import main
from bench.config import ConfigError
from bench.executors import Plan, settle
from bench.runner import Execution
from bench.store import RecordStore
from helpers import ROOT, stored_records, tiny_overrides
from helpers import TINY_FF_CLI

GRID = ["--methods", "fedavg,scaffold,centralized,federatedfactory", "--splits", "silos",
        "--seeds", "0", *tiny_overrides(), *TINY_FF_CLI]
# what legitimately differs between two computations of the same run
VOLATILE = ("timings", "created", "environment", "checksum")


def _records(out: Path) -> dict:
    records = {}
    for f in sorted((out / "runs").rglob("*.json")):
        r = RecordStore.read(f).to_dict()
        for m in r["extra"].get("modules", []):  # trained here, or found in the cache
            m.pop("cache")
        records[r["run_id"]] = {k: v for k, v in r.items() if k not in VOLATILE}
    return records


def _module_log(out: Path) -> list:
    (record,) = [RecordStore.read(f) for f in (out / "runs").rglob("*.json")
                 if "federatedfactory" in f.parts]
    return [m["cache"] for m in record.extra["modules"]]


def _run(out: Path, *extra: str) -> int:
    return main(["run", *GRID, "--threads", "1", "--out", str(out), *extra])


@pytest.fixture(scope="module")
def sequential(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("sequential")
    assert _run(out, "--executor", "sequential") == 0
    records = _records(out)
    assert len(records) == 4
    assert set(_module_log(out)) == {"miss"}  # the run trained its own generators
    return records


@pytest.mark.slow
def test_joblib_records_equal_sequential(sequential, tmp_path, capsys):
    assert _run(tmp_path, "--executor", "joblib", "--workers", "2") == 0
    assert _records(tmp_path) == sequential
    err = capsys.readouterr().err
    assert "joblib, 2 workers x 1 threads" in err
    # the generators (one per silo) were tasks of their own; the run found them cached
    assert "10 parts of 1 runs (generators) run as tasks of their own first" in err
    assert set(_module_log(tmp_path)) == {"hit"}
    # every record was written by its worker; a second call finds them all and runs nothing
    assert _run(tmp_path, "--executor", "joblib", "--workers", "2") == 0
    assert "4 already stored, 0 to run" in capsys.readouterr().err


@pytest.mark.slow
def test_ray_records_equal_sequential(sequential, tmp_path):
    """Ray starts in a `bench run` process of its own, as a user runs it: Ray's C++ core can
    abort the process that called `ray.init`, and inside a pytest-xdist worker that abort took
    the worker down and hung the whole test session (twice in CI, docs/ci.md)."""
    pytest.importorskip("ray", reason="Ray is an optional dependency: pip install -e '.[cluster]'")
    proc = subprocess.run([sys.executable, "-m", "bench", "run", *GRID, "--threads", "1",
                           "--out", str(tmp_path), "--executor", "ray", "--workers", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _records(tmp_path) == sequential
    assert set(_module_log(tmp_path)) == {"hit"}


def test_record_says_how_it_was_computed(tmp_path, capsys):
    """The thread count changes CPU float rounding (why --threads is pinned above), so the
    record keeps it, and the vectorisation setting."""
    assert main(["run", *GRID[2:], "--methods", "fedavg", "--threads", "2", "--out",
                 str(tmp_path)]) == 0
    (record,) = stored_records(tmp_path)
    assert record.environment["clients_at_once"] == 1
    assert record.provenance.numerics.threads == 2
    # asked again with another thread count: reused, and said so in one line
    capsys.readouterr()
    assert main(["run", *GRID[2:], "--methods", "fedavg", "--threads", "1", "--out",
                 str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "1 already stored, 0 to run" in err
    assert "1 stored runs were computed with other numerics" in err and "threads 1 -> 2" in err


def test_settle_never_oversubscribes(monkeypatch):
    monkeypatch.setattr("bench.executors.available_cores", lambda: 8)
    plan, ex = settle(Plan("joblib"), Execution(device="cpu"))
    assert (plan.workers, ex.threads) == (8, 1)
    plan, ex = settle(Plan("joblib", workers=2), Execution(device="cpu"))
    assert (plan.workers, ex.threads) == (2, 4)
    plan, ex = settle(Plan("ray"), Execution(threads=4))
    assert (plan.workers, ex.threads) == (2, 4)
    plan, ex = settle(Plan("sequential"), Execution(device="cpu"))
    assert ex.threads is None  # torch's own default
    plan, ex = settle(Plan(), Execution(device="cpu"), "joblib", 1)  # the grid's defaults
    assert (plan.executor, plan.workers, ex.threads) == ("joblib", 8, 1)


@pytest.mark.parametrize("args, message", [
    (["--executor", "dask"], "invalid choice: 'dask'"),
    (["--executor", "joblib", "--workers", "0"], "--workers must be >= 1"),
    (["--threads", "0", "--executor", "joblib"], "--threads must be >= 1"),
    (["--clients-at-once", "0"], "--clients-at-once must be >= 1"),
    (["--executor", "ray", "--gpus-per-run", "-1"], "--gpus-per-run must be >= 0"),
])
def test_bad_executor_options_exit_2(tmp_path, capsys, args, message):
    assert main(["run", *GRID, "--out", str(tmp_path), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_settle_rejects_unknown_executor():
    with pytest.raises(ConfigError, match="valid choices: sequential, joblib, ray"):
        settle(Plan("mpi"), Execution())


def test_unreachable_ray_cluster_is_one_line(tmp_path):
    """As a user sees it, in a process of its own: Ray's connection log (its Python logger and
    its C++ core, which writes to file descriptor 2 directly: 22 lines before) is silenced
    until it is connected, so the grid's summary and the suite's error are all there is."""
    import subprocess
    import sys

    pytest.importorskip("ray", reason="Ray is an optional dependency: pip install -e '.[cluster]'")
    out = subprocess.run([sys.executable, "-m", "bench", "run", *GRID, "--threads", "1",
                          "--out", str(tmp_path), "--executor", "ray", "--ray-address", "auto"],
                         capture_output=True, text=True, timeout=300)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, out.stderr
    assert len(lines) == 2 and "to run (ray cluster at auto)" in lines[0], out.stderr
    assert lines[1].startswith("bench: error: --ray-address auto: cannot join the cluster")
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_worker_starts_without_the_generator_and_report_libraries():
    """Each joblib worker imports the runner (and the command line's process the CLI) before
    its first run. diffusers (which brings torch._dynamo) and medmnist (its evaluator brings
    scikit-learn's metrics) cost a process seconds each, and a run on digits needs neither:
    they are imported where they are used (docs/protocol.md)."""
    import subprocess
    import sys

    code = ("import sys, bench.cli, bench.runner; "
            "from bench.datasets.registry import load_dataset; load_dataset('digits'); "
            "print(sorted(m for m in ('diffusers', 'medmnist') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_joblib_starts_a_run_when_its_parts_are_done_ahead_of_runs_not_yet_started(
        monkeypatch):
    """The scheduler, with a thread pool standing in for loky's processes: parts first; a run
    is submitted only once every part it needs has finished (no worker waits for parts), and
    then ahead of the runs without parts that have not started; a part two runs share is done
    once."""
    import types
    from concurrent.futures import ThreadPoolExecutor

    from joblib.externals import loky

    from bench import executors
    from bench.methods.base import Part
    from bench.runner import Execution

    started = []
    shared, own = Part("module/k0/c0", "a"), Part("module/k1/c1", "b")
    needs = {"ff1": [shared, own], "ff2": [shared]}

    def part_task(config, execution, part):
        started.append(part.name)
        return part

    def run_task(config, execution, *after):
        assert all(p.name in started for p in needs.get(config.run_id, [])), config.run_id
        started.append(config.run_id)
        return config, None, None

    monkeypatch.setattr(executors, "perform_part", part_task)
    monkeypatch.setattr(executors, "_task", run_task)
    monkeypatch.setattr(executors, "pending_parts", lambda c, e, d: needs.get(c.run_id, []))
    monkeypatch.setattr(loky, "get_reusable_executor",
                        lambda max_workers, env: ThreadPoolExecutor(max_workers))
    configs = [types.SimpleNamespace(run_id=r) for r in ("a", "ff1", "b", "ff2", "c")]
    done = list(executors._joblib(configs, Execution(out="unused", device="cpu", threads=1),
                                  executors.Plan("joblib", workers=1), None, lambda m: None))
    assert sorted(c.run_id for c, _, _ in done) == ["a", "b", "c", "ff1", "ff2"]
    # ff2 needs the shared part only: ready first
    assert started == ["module/k0/c0", "module/k1/c1", "ff2", "ff1", "a", "b", "c"]


@pytest.mark.slow
def test_a_grid_started_from_a_process_that_imported_torch_first_finishes(tmp_path):
    """A notebook or script imports torch before the suite, so its process cannot pin the CPU
    numerics (methods/numerics.py) while the joblib workers it starts can. A part is keyed by
    the numerics of the worker that computes it, not of the process that listed it: before,
    the worker re-listed the run's parts, matched keys, and failed with "is not a part of this
    run here"."""
    import json
    import os

    from bench.methods.numerics import PINS
    from helpers import TINY_FF

    sets = [x for item in [*TINY_FF, "federatedfactory.gen_images_seen=64",
                           "federatedfactory.modes=server", "rounds=2", "local_epochs=1"]
            for x in ("--set", item)]
    argv = ["run", "--methods", "fedavg,federatedfactory", "--splits", "silos", "--seeds", "0",
            "--executor", "joblib", "--workers", "2", "--threads", "1",
            "--out", str(tmp_path / "out"), *sets]
    script = f"import torch, sys\nfrom bench.cli import main\nsys.exit(main({argv!r}))\n"
    # a fresh shell's environment: not the pins this test process set
    env = {k: v for k, v in os.environ.items() if k not in PINS}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    stored = [json.loads(p.read_text()) for p in (tmp_path / "out" / "runs").rglob("*.json")]
    assert sorted(r["config"]["method"] for r in stored) == ["fedavg", "federatedfactory"]
    # computed in the workers, which pinned the numerics before their torch loaded
    assert {r["provenance"]["numerics"]["pins"] for r in stored} == {"avx2+mkl-cnr"}
