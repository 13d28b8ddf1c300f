"""`--cpu-durations N`: the N tests that used the most CPU seconds, and the seconds per file.

Why: under `-n 2` on two cores, `--durations` reports wall seconds, and a test's wall seconds
there are mostly what the other worker did meanwhile: the suite's processes take turns on the
cores (bench/turns.py), so a test that starts a 2-thread `bench run` waits whenever the other
worker computes. The same FedPer conformance test read 3 s in one run and 35 s in another
(2026-12-05). CPU seconds are the work a test costs, whatever ran beside it: what to cut, and
what `LONGEST_FIRST` (conftest.py) should be ordered by.

What is counted: the CPU time (user + system) of the test's process and of the child processes
it waited for (`subprocess.run`, a `bench run` it started and killed), per phase (setup, call,
teardown; a module-scoped fixture counts in the setup of its first test, as in `--durations`).
Not counted: a child still alive when the test ends, such as joblib's reusable workers (they
are counted by the test during which they end, if any).
"""
from __future__ import annotations

import collections
import resource

import pytest

_last = [0.0]  # this process's CPU seconds at the end of the previous phase


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def pytest_addoption(parser):
    parser.addoption("--cpu-durations", type=int, default=None, metavar="N",
                     help="show the N tests that used the most CPU seconds (their process and "
                          "the child processes they waited for), and the CPU seconds per file")


def pytest_runtest_logstart(nodeid, location):
    _last[0] = _cpu()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    now = _cpu()
    report.user_properties.append(("cpu_s", now - _last[0]))  # travels back from xdist workers
    _last[0] = now


class _Totals:
    def __init__(self):
        self.per_phase: list[tuple[float, str, str]] = []

    def pytest_runtest_logreport(self, report):
        cpu = dict(report.user_properties).get("cpu_s")
        if cpu is not None:
            self.per_phase.append((cpu, report.when, report.nodeid))

    def pytest_terminal_summary(self, terminalreporter, config):
        n = config.getoption("--cpu-durations")
        tr = terminalreporter
        tr.section(f"most CPU seconds (top {n}: the test's process and the children it waited for)")
        for cpu, when, nodeid in sorted(self.per_phase, reverse=True)[:n]:
            tr.write_line(f"{cpu:8.2f}s {when:<8} {nodeid}")
        per_file = collections.Counter()
        for cpu, _, nodeid in self.per_phase:
            per_file[nodeid.split("::")[0]] += cpu
        tr.write_line(f"CPU seconds per file (all tests: {sum(per_file.values()):.0f} s):")
        for path, cpu in per_file.most_common():
            tr.write_line(f"{cpu:8.1f}s {path}")


def pytest_configure(config):
    # the controller (or a run without xdist) adds up what every worker reported
    if config.getoption("--cpu-durations") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(_Totals(), "cpu_time_totals")
