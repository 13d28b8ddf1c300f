"""What each numerics pin costs (methods/numerics.py): the default grid's two kinds of work,
timed as fresh `python -m bench run` processes under each set of switches, interleaved.

Two workloads, each at 1 torch thread as the default grid runs them:
- `baseline`: FedAvg under silos (the default grid's 17 baseline runs are all this shape:
  the digits CNN, 15 rounds of 10 local epochs);
- `federatedfactory`: FederatedFactory under silos with its generators trained in the run
  (ten generators at 1/8 of the preset's length, 100 samples per class, 10 classifier
  epochs: the diffusion UNet's share of the work as in the default grid).

Each setting starts unpinned (FLBENCH_NUMERICS=native) and sets its own switches, so the
pins can be priced one at a time; `pinned` is the suite's default. The settings run in turn
REPEATS times (interleaved, so a slow moment of a shared machine hits every setting alike);
the table gives each setting's median wall seconds and its ratio to `native`.

    python benchmarks/numerics_cost.py [REPEATS]    # default 3; about 3.5 minutes a repeat

The result of a run is in docs/numerics.md with its date.
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time

SETTINGS = {
    "native": {"FLBENCH_NUMERICS": "native"},
    "ATen AVX2": {"FLBENCH_NUMERICS": "native", "ATEN_CPU_CAPABILITY": "avx2"},
    "ATen + oneDNN AVX2": {"FLBENCH_NUMERICS": "native", "ATEN_CPU_CAPABILITY": "avx2",
                           "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "pinned (+ MKL CNR COMPATIBLE)": {},
}
CLEARED = ("FLBENCH_NUMERICS", "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_CBWR",
           "MKL_ENABLE_INSTRUCTIONS")
COMMON = ["--threads", "1", "--executor", "sequential", "--splits", "silos"]
WORKLOADS = {
    "baseline": ["--methods", "fedavg"],
    "federatedfactory": ["--methods", "federatedfactory",
                         "--set", "federatedfactory.gen_images_seen=1600",
                         "--set", "federatedfactory.samples_per_class=100",
                         "--set", "federatedfactory.classifier_epochs=10"],
}


def timed(workload: str, setting: dict) -> float:
    env = {k: v for k, v in os.environ.items() if k not in CLEARED} | setting
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bench", "run", *COMMON, *WORKLOADS[workload],
                        "--out", out], env=env, check=True, capture_output=True)
        return time.perf_counter() - t0


def main(repeats: int = 3) -> None:
    times = {(w, s): [] for w in WORKLOADS for s in SETTINGS}
    for r in range(repeats):
        for w in WORKLOADS:
            for s, env in SETTINGS.items():
                times[w, s].append(timed(w, env))
                print(f"repeat {r + 1}: {w}, {s}: {times[w, s][-1]:.1f} s", file=sys.stderr)
    print(f"| setting | {' | '.join(f'{w} (median s, x native)' for w in WORKLOADS)} |")
    print(f"|---|{'---|' * len(WORKLOADS)}")
    for s in SETTINGS:
        cells = []
        for w in WORKLOADS:
            med, base = statistics.median(times[w, s]), statistics.median(times[w, "native"])
            cells.append(f"{med:.1f} (x{med / base:.2f})")
        print(f"| {s} | {' | '.join(cells)} |")
    print(f"\n{repeats} interleaved repeats; every sample: "
          + "; ".join(f"{w}/{s}: {', '.join(f'{t:.1f}' for t in ts)}"
                      for (w, s), ts in times.items()))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
