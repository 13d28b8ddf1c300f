"""Two suite processes on one machine: the small CNN's training step alone and two at once.

One worker (`python benchmarks/contention.py worker STEPS`) imports the suite as a user's
command does, trains the digits CNN (8 px, batch 64, SGD with momentum, 2 torch threads) for
STEPS steps after a warm-up and prints its median milliseconds per step over blocks of 20.
`python benchmarks/contention.py sweep` measures, for each spin count in SPINCOUNTS, one
worker alone and two at once, and prints a table: the measurements to choose the suite's
OpenMP wait setting from (a first sweep on 2 cores, 2026-11-23: no spin count alone keeps
two 2-thread processes within 2.2x of one alone; PASSIVE costs a process alone 2.8x).
The recorded benchmark: benchmarks/test_contention.py.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

STEPS = 400
BLOCK = 20

# GOMP_SPINCOUNT: how many times an idle OpenMP thread polls for work before it sleeps.
# libgomp's default is 300,000 when neither it nor OMP_WAIT_POLICY is set (0 with
# OMP_WAIT_POLICY=PASSIVE); every row of the sweep names it.
SPINCOUNTS = ["300000", "100000", "30000", "10000", "1000", "0"]


def worker(steps: int) -> float:
    import bench  # noqa: F401  (as a user's command: the suite first, then torch)
    import torch
    import torch.nn.functional as F

    from bench.methods.models import build_model

    torch.set_num_threads(2)
    g = torch.Generator().manual_seed(0)
    model = build_model("cnn", 1, 10, 8)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4)
    x, y = torch.randn(64, 1, 8, 8, generator=g), torch.randint(0, 10, (64,), generator=g)

    def step():
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    for _ in range(50):
        step()
    blocks = []
    for _ in range(steps // BLOCK):
        t = time.perf_counter()
        for _ in range(BLOCK):
            step()
        blocks.append((time.perf_counter() - t) / BLOCK * 1e3)
    return statistics.median(blocks)


def measure(spincount: str | None, at_once: int, steps: int = STEPS) -> list[float]:
    """Milliseconds per step of each of `at_once` workers started together, with OpenMP's
    wait setting unset (libgomp's default, as a user has it) or GOMP_SPINCOUNT=spincount."""
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    if spincount is not None:
        env["GOMP_SPINCOUNT"] = spincount
    procs = [subprocess.Popen([sys.executable, __file__, "worker", str(steps)], env=env,
                              stdout=subprocess.PIPE, text=True) for _ in range(at_once)]
    out = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError(f"a contention worker failed (exit {[p.returncode for p in procs]})")
    return [float(o.strip().splitlines()[-1]) for o in out]


def sweep(repeats: int = 3) -> None:
    """Medians over `repeats`; ratios against libgomp's default alone (today's speed)."""
    rows = []
    for spincount in SPINCOUNTS:
        alone = statistics.median(measure(spincount, 1)[0] for _ in range(repeats))
        pair = statistics.median(max(measure(spincount, 2)) for _ in range(repeats))
        rows.append((spincount, alone, pair))
        print(f"measured GOMP_SPINCOUNT={spincount}: {alone:.2f} / {pair:.2f} ms", flush=True)
    base = rows[0][1]
    print("| GOMP_SPINCOUNT | alone (ms/step) | vs default alone | two at once (ms/step, slower "
          "of the two) | vs default alone |")
    print("|---|---|---|---|---|")
    for spincount, alone, pair in rows:
        print(f"| {spincount} | {alone:.2f} | {alone / base:.2f}x | {pair:.2f} | "
              f"{pair / base:.2f}x |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        print(f"{worker(int(sys.argv[2])):.4f}")
    elif sys.argv[1:2] == ["sweep"]:
        sweep()
    else:
        sys.exit("usage: python benchmarks/contention.py worker STEPS | sweep")
