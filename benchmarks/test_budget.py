"""The speed budget (benchmarks/budget.py): CI's default grid within budget.json, and a planted
slowdown caught; `python -m bench --help` within its import budget.

CI runs the default grid first and points FLBENCH_GRID_RESULTS at its results folder, so the
grid is measured where it already ran; elsewhere that test skips with the reason."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench.grid import grid_configs
from bench.runner import cached_dataset, execute
from budget import BUDGET, calibrate, check, measure, phase_seconds

RESULTS = os.environ.get("FLBENCH_GRID_RESULTS")
HELP_SECONDS = 1.5  # `python -m bench --help`, warm cache (issue: under 1.5 s)


@pytest.fixture(scope="module")
def budget() -> dict:
    return json.loads(BUDGET.read_text())


@pytest.mark.skipif(not RESULTS, reason="FLBENCH_GRID_RESULTS (set by .ci/run after the "
                                        "default grid) names no results folder")
def test_the_default_grid_is_within_its_speed_budget(budget):
    work, rate = measure(RESULTS)
    assert set(budget["work"]) <= set(work), "a budgeted phase was not measured"
    over = check(work, budget, rate)
    assert not over, "\n".join(over + [f"(calibration {rate:.2f} GFLOP/s)"])


def _fedavg_silos_work(rate: float) -> dict[str, float]:
    # the default grid's FedAvg under silos with one local epoch instead of ten: the same 15
    # rounds (so 15 aggregations), a tenth of the training, which only lowers "fedavg train"
    (config,) = grid_configs("default", ["local_epochs=1"], methods=["fedavg"], splits=["silos"])
    cached_dataset(config.dataset, None)  # loaded once per process, as a grid's worker has it
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the default grid computes
    try:
        record, _ = execute(config, torch.device("cpu"))
    finally:
        torch.set_num_threads(threads)
    return {k: v * rate for k, v in phase_seconds([record]).items()}


def test_a_planted_slowdown_in_one_methods_round_fails_the_budget(budget, monkeypatch):
    """FedAvg under silos at the default grid's settings (one local epoch) passes; with 0.1 s
    slept in each round's aggregation (a plant: the source is unchanged) it fails, naming the
    phase and no other."""
    from bench.methods.weight_averaging import WeightAveraging

    rate = calibrate()
    assert not check(_fedavg_silos_work(rate), budget, rate)
    aggregate = WeightAveraging.aggregate

    def slow(self, *args):
        time.sleep(0.1)
        return aggregate(self, *args)
    monkeypatch.setattr(WeightAveraging, "aggregate", slow)
    over = check(_fedavg_silos_work(rate), budget, rate)
    assert [line.split(":")[0] for line in over] == ["fedavg aggregate"], over


def test_the_floor_is_this_machines_seconds_so_a_slower_machine_still_judges_the_plant(budget):
    """The plant above (0.1 s in each of 15 aggregations: 1.5 s a run) judged on a machine
    that calibrates at half the budget's rate: 1.5 s there is half the work-equivalents it is
    at the budget's rate. The floor (1 s) is this machine's seconds, so the phase is still
    judged; a floor at the budget's rate (floor_seconds x budget["rate"]) let it through,
    which is how CI missed the plant on a machine calibrating under about 22.5 GFLOP/s (the
    budget's rate: 33.8)."""
    for rate in (budget["rate"] / 2, budget["rate"], budget["rate"] * 2):
        planted = {"fedavg aggregate": (1.5 + 0.003) * rate}
        assert [line.split(":")[0] for line in check(planted, budget, rate)] \
            == ["fedavg aggregate"], rate
        # under the floor here (0.9 s a run, budget 0.1): not judged, at any rate
        assert check({"fedavg aggregate": 0.9 * rate}, budget, rate) == [], rate


def test_help_is_within_its_import_budget():
    seconds = []
    for _ in range(3):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bench", "--help"], check=True,
                       capture_output=True, cwd=Path(__file__).parent.parent)
        seconds.append(time.perf_counter() - t0)
    assert statistics.median(seconds) < HELP_SECONDS, seconds
