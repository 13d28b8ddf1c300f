"""The speed budget: the default grid's time per method and phase must stay within a committed
budget (benchmarks/budget.json), so that a change that slows a phase fails CI and names it.

Seconds on a shared 2-core machine vary by 2x between moments, so the budget is not in
seconds: each phase's seconds per run (the mean over the method's runs, from the records'
own `timings`) are multiplied by a calibration measured in the same CI run, seconds later:
the small CNN's training rate at one thread (`bench.estimate.cpu_rate`, FLOP/s), the rate a
run of the default grid computes at. The product, "work" in GFLOP-equivalents, moves with
the code, not with the moment. A phase fails when its work exceeds its budget times the
tolerance (budget.json's `tolerance`, set from the spread measured across repeated runs and
the machines reached: docs/ci.md, "The speed budget"). Phases whose work and budget are both
under `floor_seconds` at the budget's rate are not judged (timer noise). The floor is in work,
like the budget: contention that slows the calibration tenfold also stretches a tiny phase's
seconds past one (FedAvg's setup read 1.9 s beside two training runs), and a floor in seconds
would judge that noise. A slowdown that is not computation (a sleep) therefore counts for less
work on a slower machine: a plant must be sized in work too (benchmarks/test_budget.py).

    python benchmarks/budget.py RESULTS_FOLDER            # the check, one line per phase
    python benchmarks/budget.py RESULTS_FOLDER --write    # accept: rewrite budget.json

Raising a budget is a deliberate commit of budget.json with the reason in its message.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

BUDGET = Path(__file__).with_name("budget.json")
# timings that are sums or waits, not phases
NOT_PHASES = {"total", "method_total", "waiting_for_cores"}


def phase_seconds(records) -> dict[str, float]:
    """'method phase' -> mean seconds per run of that method, over the given records."""
    per: dict[str, list[float]] = {}
    for r in records:
        for phase, seconds in r.timings.items():
            if phase not in NOT_PHASES and isinstance(seconds, (int, float)):
                per.setdefault(f"{r.config.method} {phase}", []).append(float(seconds))
    return {k: statistics.fmean(v) for k, v in sorted(per.items())}


def calibrate(repeats: int = 3) -> float:
    """GFLOP/s of the small CNN's training at one torch thread: the median of `repeats`
    measurements of about 0.5 s each, made now."""
    import torch

    from bench.estimate import cpu_rate

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        rates = []
        for _ in range(repeats):
            cpu_rate.cache_clear()
            rates.append(cpu_rate())
        return statistics.median(rates) / 1e9
    finally:
        torch.set_num_threads(threads)


def check(work: dict[str, float], budget: dict) -> list[str]:
    """One line per phase over budget x tolerance (empty: within budget)."""
    tolerance, floor = budget["tolerance"], budget["floor_seconds"] * budget["rate"]
    over = []
    for phase, allowed in budget["work"].items():
        got = work.get(phase)
        if got is None or max(got, allowed) < floor:
            continue
        if got > allowed * tolerance:
            over.append(f"{phase}: {got:,.0f} GFLOP-equivalents per run, over its budget "
                        f"{allowed:,.0f} x {tolerance} (x{got / allowed:.2f})")
    return over


def measure(out: str | Path) -> tuple[dict[str, float], float]:
    """(work per phase, the calibration rate) of the default grid's records under `out` (other
    runs stored there, such as CI's PneumoniaMNIST grid, are not the budget's), calibrated now."""
    from bench.grid import grid_configs
    from bench.store import RecordStore

    default = {c.run_id for c in grid_configs("default")}
    seconds = phase_seconds([r for r in RecordStore(out).all_records()
                             if r.config.run_id in default])
    rate = calibrate()
    return {k: v * rate for k, v in seconds.items()}, rate


def main() -> int:
    parser = argparse.ArgumentParser(description="the default grid against the speed budget")
    parser.add_argument("out", help="a results folder holding the default grid's records")
    parser.add_argument("--write", action="store_true", help="rewrite budget.json from it")
    args = parser.parse_args()
    import bench  # noqa: F401  (first: it pins the CPU numerics before torch loads)

    work, rate = measure(args.out)
    if args.write:
        old = json.loads(BUDGET.read_text()) if BUDGET.exists() else {}
        BUDGET.write_text(json.dumps({
            "tolerance": old.get("tolerance", 2.0), "floor_seconds": old.get("floor_seconds", 1.0),
            "rate": rate, "work": {k: round(v, 1) for k, v in work.items()}}, indent=1) + "\n")
        print(f"{BUDGET} written ({len(work)} phases, calibration {rate:.2f} GFLOP/s)")
        return 0
    over = check(work, json.loads(BUDGET.read_text()))
    for line in over:
        print(line)
    print(f"{len(work)} phases, calibration {rate:.2f} GFLOP/s: "
          f"{'OVER BUDGET' if over else 'within budget'}")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
