"""The same FedAvg job through this suite and through Flower's simulation engine (flower.py):
wall time of the job and of the whole command, time per round, peak memory summed over the
processes (RSS and PSS) and the final round's test accuracy; the .md report (conftest.py)
gives Flower / suite for each. Needs Flower: `pip install -e '.[compare]'`."""
from __future__ import annotations

import pytest
from flower import SIDES, flower_available, measure


@pytest.mark.benchmark(group="Flower side by side")
@pytest.mark.parametrize("side", list(SIDES))
def test_fedavg_job(benchmark, side):
    if not flower_available():  # the suite's side alone compares with nothing
        pytest.skip("Flower is not installed: pip install -e '.[compare]'")
    results = []
    benchmark.pedantic(lambda: results.append(measure(side)), rounds=1, iterations=1)
    (result,) = results
    assert result["test_accuracy"] > 0.9, result  # the same job: both sides learn digits
    benchmark.extra_info.update(result)
