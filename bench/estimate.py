"""The cost of a grid on paper: GPU-hours per run and phase, before anything runs.

Each method states its own work (`Method.cost`, methods/cost.py): the images through each of
its networks and the FLOPs per image, counted on the meta device. This module makes the
`Workload` a method prices (the run's facts: dataset sizes, the partition's class counts, the
classifier) and keeps the arithmetic: sums per phase, GPU-hours, wall time on N GPUs, the guard
of `bench run` and the memory estimate. GPU-hours need one assumption, the sustained
throughput a GPU reaches on these networks (`tflops`), which is printed with the result so the
figures can be rescaled; measure it on your GPU with the benchmark suite
(benchmarks/test_speed.py, rates in images/s) to replace the assumption.

Dataset sizes and labels come from the data when present, else from the official sizes
(MedMNIST's own `INFO`; CIFAR-10, CIFAR-100, Fashion-MNIST, SVHN and Fed-ISIC2019 below)
with balanced labels, partitioned by the run's real split.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from .config import NO_SPLIT, RunConfig
from .datasets.base import DataError
from .datasets.registry import get_entry
from .methods.cost import Cost, UnitCost, Workload, classifier_bytes, classifier_flops
from .methods.models import build_model
from .methods.registry import build_method

# official (train + val, test) sizes where no package states them; train is split into train
# and val by the loaders (10 % stratified), as here
OFFICIAL = {"cifar10": {"train": 45_000, "val": 5_000, "test": 10_000},
            "cifar100": {"train": 45_000, "val": 5_000, "test": 10_000},
            "fashionmnist": {"train": 54_000, "val": 6_000, "test": 10_000},
            "svhn": {"train": 65_931, "val": 7_326, "test": 26_032},  # 10 % of each class
            "isic2019": {"train": 16_737, "val": 1_860, "test": 4_650}}  # FLamby folds
VAL_FRACTION = 0.1


@dataclass
class PhaseCost:
    run: str  # run label
    dataset: str
    method: str
    phase: str
    images: float  # images through the network in this phase (with repeats)
    flops: float
    tasks: int = 1  # independent tasks the phase splits into (a run's parts)


def _run_name(config) -> str:
    """A run's label and id: runs of a sweep share the label, not the id."""
    return f"{config.label} [{config.run_id[:8]}]"


def sizes_and_labels(dataset: str, data_root: str | None = None):
    """({train, val, test} sizes, training labels or None when the data is absent)."""
    from .runner import cached_dataset

    try:
        data = cached_dataset(dataset, data_root)
        return data.sizes, data.y_train.numpy()
    except DataError:  # absent: the official sizes
        pass
    if dataset in OFFICIAL:
        return OFFICIAL[dataset], None
    import medmnist

    flag = dataset.split("_")[0]
    if flag in medmnist.INFO:
        return dict(medmnist.INFO[flag]["n_samples"]), None
    raise DataError(f"{dataset}: its size is unknown until its data is under the data root "
                    f"(`python -m bench data`)")


def workload(config: RunConfig, data_root: str | None = None) -> Workload:
    """The facts a method prices a run by: sizes, and images per (client, class) under the
    run's real split of the data's labels (balanced labels of the official size when the data
    is absent)."""
    from .datasets.splits import parse_split
    from .methods.rng import Streams

    info = get_entry(config.dataset).info
    n, labels = sizes_and_labels(config.dataset, data_root)
    if labels is None:
        labels = np.arange(n["train"]) % info.n_classes
    if config.split == NO_SPLIT:
        parts = [np.arange(len(labels))]
    else:
        spec = parse_split(config.split)
        groups = np.arange(len(labels)) % max(info.natural_clients, 1) \
            if spec.kind.needs_groups else None
        parts = spec(labels, config.n_clients, Streams(config.seed).numpy("split"), groups)
    counts = np.stack([np.bincount(labels[p], minlength=info.n_classes) for p in parts])
    return Workload(config.dataset, info.channels, info.n_classes, config.resolution, dict(n),
                    counts, config.train)


def run_cost(config: RunConfig, data_root: str | None = None) -> Cost:
    """What the run's method says it costs (`Method.cost`)."""
    return build_method(config.method, config.method_params).cost(workload(config, data_root))


def run_costs(config: RunConfig, data_root: str | None = None) -> list[PhaseCost]:
    label = _run_name(config)
    return [PhaseCost(label, config.dataset, config.method, p.name, float(p.images),
                      float(p.flops), p.tasks) for p in run_cost(config, data_root).phases]


def unit_costs(config: RunConfig, data_root: str | None = None) -> list[UnitCost]:
    """The units of the run's work its method's authors logged times for (may be none)."""
    return list(run_cost(config, data_root).units)


def summarise(costs: list[PhaseCost], tflops: float, gpus: int):
    """(table per dataset, method and phase; totals). GPU-hours = FLOPs / sustained rate.

    Tasks: a run's parts (its generators, bench/executors.py) and the rest of the run, which
    starts after them. The wall time on `gpus` GPUs is the larger of the longest such chain
    and a longest-task-first packing of every task onto the least loaded GPU.
    """
    import pandas as pd

    frame = pd.DataFrame([vars(c) for c in costs])
    frame["gpu_hours"] = frame["flops"] / (tflops * 1e12) / 3600
    table = (frame.groupby(["dataset", "method", "phase"], sort=False)
             .agg(runs=("run", "nunique"), images=("images", "sum"), pflops=("flops", "sum"),
                  gpu_hours=("gpu_hours", "sum")).reset_index())
    table["pflops"] /= 1e15
    per_run = frame.groupby("run")["gpu_hours"].sum()
    parts = frame[frame["tasks"] > 1]
    one_part = (parts["gpu_hours"] / parts["tasks"]).groupby(parts["run"]).max()
    rest = per_run - parts.groupby("run")["gpu_hours"].sum().reindex(per_run.index).fillna(0)
    chain = rest + one_part.reindex(per_run.index).fillna(0)
    loads = [0.0] * gpus
    tasks = (parts["gpu_hours"] / parts["tasks"]).repeat(parts["tasks"]).tolist()
    for hours in sorted(tasks + rest.tolist(), reverse=True):
        loads[loads.index(min(loads))] += hours
    totals = {"runs": len(per_run), "eflop": frame["flops"].sum() / 1e18,
              "gpu_hours": per_run.sum(), "longest_run": per_run.idxmax(),
              "longest_run_hours": per_run.max(), "longest_chain_hours": chain.max(),
              "wall_hours": max(max(loads), chain.max()),
              "by_phase": frame.groupby("phase")["gpu_hours"].sum()
              .sort_values(ascending=False).to_dict()}
    return table, totals


# --- the guard of `bench run`: no multi-day run started by accident ---------------------
@dataclass(frozen=True)
class Memory:
    """A run's estimated peak device memory, bytes, and its largest part in words."""

    run: str
    bytes: float
    what: str


def peak_memory(config: RunConfig, data_root: str | None = None) -> Memory:
    """The most device memory one run needs: its data on the device (uint8 images at the run's
    resolution, as methods/data.py keeps them) plus the largest network it trains: the
    classifier, or one its method names (`Cost.networks`: FederatedFactory's generators). An
    estimate for the guard of `bench run` on GPUs, not a measurement
    (benchmarks/gpu_check.sh measures it)."""
    work = workload(config, data_root)
    r, c, t = config.resolution, work.channels, config.train
    data = sum(work.sizes.values()) * c * r * r
    largest = (classifier_bytes(t.model, c, work.n_classes, r, t.norm, t.batch_size),
               f"{t.model} at {r} px, batch {t.batch_size}")
    for network in run_cost(config, data_root).networks:
        if network.bytes > largest[0]:
            largest = (network.bytes, network.what)
    return Memory(_run_name(config), data + largest[0],
                  f"{largest[1]}, data {data / 2**30:.1f} GiB")


ASSUMED_GPU_TFLOPS = 100.0  # `bench estimate --tflops`'s default: sustained, one GPU
FASTEST_CPU = 5e12  # FLOP/s: no CPU sustains this on these networks (a bound, not a rate)


@dataclass
class Forecast:
    hours: float  # wall time of the selection on this machine's device
    runs: int
    longest: str  # the longest run's label
    longest_hours: float
    rate: str  # the rate it was computed with, in words

    def line(self, limit: float) -> str:
        return (f"this selection of {self.runs} runs would take about {_hours(self.hours)} on "
                f"{self.rate}, over the {limit:g} h limit (longest run: {self.longest}, "
                f"{_hours(self.longest_hours)}); use --scale cpu for the reduced protocol, "
                f"narrow it (--methods, --datasets, --seeds), or add --yes to start it anyway")


def forecast(configs: list[RunConfig], device_type: str, gpus: int = 1,
             data_root: str | None = None, limit_hours: float | None = None
             ) -> Forecast | None:
    """The selection's wall time on this machine: `bench estimate`'s FLOPs at the assumed
    GPU rate (on `gpus` GPUs), or on the CPU at a rate measured here (`cpu_rate`). With
    `limit_hours`, None when the FLOPs cannot reach it even at `FASTEST_CPU` (nothing is
    measured then)."""
    costs = [c for config in configs for c in run_costs(config, data_root)]
    if not costs:
        return None
    if device_type == "cpu":
        flops = sum(c.flops for c in costs)
        if limit_hours is not None and flops / FASTEST_CPU / 3600 <= limit_hours:
            return None
        rate, units = cpu_rate(), 1
        words = f"this CPU (measured {rate / 1e9:,.0f} GFLOP/s on the suite's small CNN)"
    else:
        rate, units = ASSUMED_GPU_TFLOPS * 1e12, gpus
        words = (f"{gpus} GPU{'s' if gpus > 1 else ''} (assumed {ASSUMED_GPU_TFLOPS:g} TFLOP/s "
                 f"sustained each; `bench estimate --tflops` to rescale)")
    _, t = summarise(costs, rate / 1e12, units)
    return Forecast(t["wall_hours"], t["runs"], t["longest_run"], t["longest_run_hours"], words)


@functools.lru_cache(maxsize=1)
def cpu_rate(seconds: float = 0.5) -> float:
    """FLOP/s this CPU sustains training the suite's small CNN (32 px colour images, batch 64)
    with torch's current threads: measured once per process, in about `seconds`."""
    import time

    torch_gen = torch.Generator().manual_seed(0)
    model = build_model("cnn", 3, 10, 32, "group")
    x = torch.randn(64, 3, 32, 32, generator=torch_gen)
    y = torch.randint(0, 10, (64,), generator=torch_gen)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)

    def step():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    step()  # warm-up: allocation and dispatch
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        step()
        n += 1
    per_image = classifier_flops("cnn", 3, 10, 32, "group", True)
    return n * 64 * per_image / (time.perf_counter() - t0)


def _hours(h: float) -> str:
    if h < 1 / 60:
        return f"{h * 3600:.0f} s"
    return f"{h * 60:.0f} min" if h < 1 else f"{h:,.0f} h" if h >= 10 else f"{h:.1f} h"
