"""Two suite processes on one machine: alone and two at once, under each CPU setting.

Two kinds of worker, each started as a fresh process as a user's command is:
- `step`: imports the suite, takes turns as a run does (bench/turns.py, unless the setting
  says BENCH_TURNS=0), trains the digits CNN (8 px, batch 64, SGD with momentum, 2 torch
  threads) for STEPS steps after a warm-up and prints its median milliseconds per step over
  blocks of 20;
- `command`: `python -m bench run --methods fedavg --splits silos --executor sequential
  --threads 2` into a folder of its own (the whole command, as a user runs a single job such
  as `bench unlearn`) and prints its wall seconds.

`python benchmarks/contention.py sweep [step|command]` measures, for each setting in SETTINGS,
one worker alone and two at once, and prints a table against the first setting alone (today's
speed before turns): the measurements the suite's threading was chosen from (docs/scaling.md, "Two
commands at once"). The recorded benchmark: benchmarks/test_contention.py.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

STEPS = 400
BLOCK = 20

# The environment of each setting. GOMP_SPINCOUNT: how many times an idle OpenMP thread polls
# for work before it sleeps; libgomp's default is 300,000 when neither it nor OMP_WAIT_POLICY
# is set (0 with OMP_WAIT_POLICY=PASSIVE). BENCH_TURNS=0: no turns (the suite before them).
SETTINGS = {
    "no turns (before)": {"BENCH_TURNS": "0"},
    "turns (the suite's default)": {},
    "turns, GOMP_SPINCOUNT=100000": {"GOMP_SPINCOUNT": "100000"},
    "no turns, GOMP_SPINCOUNT=100000": {"BENCH_TURNS": "0", "GOMP_SPINCOUNT": "100000"},
    "no turns, OMP_WAIT_POLICY=PASSIVE": {"BENCH_TURNS": "0", "OMP_WAIT_POLICY": "PASSIVE"},
}
CLEARED = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "BENCH_TURNS", "BENCH_TURNS_DIR")


def worker(steps: int) -> float:
    import bench  # noqa: F401  (as a user's command: the suite first, then torch)
    import torch

    from bench.methods.models import build_model
    from bench.turns import turns

    torch.set_num_threads(2)
    with turns(2):  # as bench.runner does while a CPU run computes (off with BENCH_TURNS=0)
        return _steps(build_model, steps)


def _steps(build_model, steps: int) -> float:
    import torch
    import torch.nn.functional as F

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


def command_worker() -> float:
    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bench", "run", "--methods", "fedavg", "--splits",
                        "silos", "--executor", "sequential", "--threads", "2", "--out", out],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return time.perf_counter() - t


def measure(setting: str, at_once: int, kind: str = "step", steps: int = STEPS) -> list[float]:
    """Each of `at_once` workers' result (ms per step, or seconds per command), started
    together under SETTINGS[setting] with a turns folder of their own."""
    with tempfile.TemporaryDirectory() as turns_dir:
        env = {k: v for k, v in os.environ.items() if k not in CLEARED}
        env.update(SETTINGS[setting], BENCH_TURNS_DIR=turns_dir)
        args = ["worker", str(steps)] if kind == "step" else ["command"]
        procs = [subprocess.Popen([sys.executable, __file__, *args], env=env,
                                  stdout=subprocess.PIPE, text=True) for _ in range(at_once)]
        out = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        raise RuntimeError(f"a contention worker failed (exit {[p.returncode for p in procs]})")
    return [float(o.strip().splitlines()[-1]) for o in out]


def sweep(kind: str = "step", repeats: int = 3) -> None:
    """Medians over `repeats`; ratios against the first setting alone (today's speed)."""
    rows = []
    for setting in SETTINGS:
        alone = statistics.median(measure(setting, 1, kind)[0] for _ in range(repeats))
        pair = statistics.median(max(measure(setting, 2, kind)) for _ in range(repeats))
        rows.append((setting, alone, pair))
        print(f"measured {setting}: {alone:.2f} / {pair:.2f}", flush=True)
    base = rows[0][1]
    unit = "ms/step" if kind == "step" else "s"
    print(f"| setting ({kind}) | alone ({unit}) | vs before alone | two at once ({unit}, the "
          f"slower) | vs before alone | vs its own alone |")
    print("|---|---|---|---|---|---|")
    for setting, alone, pair in rows:
        print(f"| {setting} | {alone:.2f} | {alone / base:.2f}x | {pair:.2f} | "
              f"{pair / base:.2f}x | {pair / alone:.2f}x |")


if __name__ == "__main__":
    if sys.argv[1:2] == ["worker"]:
        print(f"{worker(int(sys.argv[2])):.4f}")
    elif sys.argv[1:2] == ["command"]:
        print(f"{command_worker():.4f}")
    elif sys.argv[1:2] == ["sweep"]:
        sweep(*sys.argv[2:3])
    else:
        sys.exit("usage: python benchmarks/contention.py worker STEPS | command | "
                 "sweep [step|command]")
