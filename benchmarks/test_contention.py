"""Two suite processes on one machine, alone and two at once, before turns (BENCH_TURNS=0)
and with them (the suite's default, bench/turns.py), as a user's commands run them
(contention.py): the small CNN's training step in a worker process, and the whole command
`python -m bench run --methods fedavg --splits silos`. The .md report (conftest.py) gives
each two-at-once / alone ratio; the goal: with turns, one alone within 10 % of before, two at
once each at most about 2.2x slower than alone. The full table of settings:
`python benchmarks/contention.py sweep [step|command]`."""
from __future__ import annotations

import pytest
from contention import STEPS, measure

SETTINGS = ["no turns (before)", "turns (the suite's default)"]


@pytest.mark.benchmark(group="two processes at once")
@pytest.mark.parametrize("at_once", [1, 2])
@pytest.mark.parametrize("setting", SETTINGS, ids=["before", "turns"])
@pytest.mark.parametrize("kind", ["step", "command"])
def test_two_processes(benchmark, kind, setting, at_once):
    """The slower worker's result (median ms per step, or seconds per command); the
    benchmark's own time is the whole call."""
    results = []
    benchmark.pedantic(lambda: results.append(max(measure(setting, at_once, kind))),
                       rounds=3 if kind == "step" else 1, iterations=1)
    benchmark.extra_info.update(**{"ms_per_step" if kind == "step" else "s_per_command":
                                   sorted(results)[len(results) // 2]},
                                processes=at_once, setting=setting,
                                steps=STEPS if kind == "step" else None)
