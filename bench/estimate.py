"""The cost of a grid on paper: GPU-hours per run and phase, before anything runs.

Per-image costs are counted, not guessed: torch's FlopCounterMode runs each network once on
the meta device (shapes only, no memory, no data) for a forward pass (evaluation, sampling)
and a forward + backward pass (training). The protocol gives the number of images through
each phase; the product is each phase's FLOPs. GPU-hours then need one assumption, the
sustained throughput a GPU reaches on these networks (`tflops`), which is printed with the
result so the figures can be rescaled; measure it on your GPU with the benchmark suite
(benchmarks/test_speed.py, rates in images/s) to replace the assumption.

Dataset sizes and labels come from the data when present, else from the official sizes
(MedMNIST's own `INFO`; CIFAR-10 and Fed-ISIC2019 below) with balanced labels. The generators
of FederatedFactory are the (client, class) pairs with enough images, counted on the run's
real partition of those labels.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from .config import NO_SPLIT, RunConfig
from .datasets.base import DataError
from .datasets.registry import get_entry
from .methods.federatedfactory.network import build_unet, generator_resolution
from .methods.federatedfactory.params import FFParams
from .methods.federatedfactory.sampler import network_evaluations
from .methods.models import build_model
from .methods.registry import METHODS, method_params
from .methods.weight_averaging import WeightAveraging

# official (train + val, test) sizes where no package states them; train is split into train
# and val by the loaders (10 % stratified), as here
OFFICIAL = {"cifar10": {"train": 45_000, "val": 5_000, "test": 10_000},
            "isic2019": {"train": 16_737, "val": 1_860, "test": 4_650}}  # FLamby folds
VAL_FRACTION = 0.1
# The FederatedFactory authors' logged costs on one H100 (Fed-ISIC2019 at 128 px, local mode,
# their public job logs), seconds: what `unit_costs` is checked against (docs/scaling.md, "The paper
# grid on paper").
LOGGED = {"isic2019": {"synthesis": 16.7 * 60,  # 10,000 images of one class, Heun 50 steps
                       "classifier epoch": 2.5 * 60}}  # ResNet-50 over a client's ~74k images


@dataclass
class PhaseCost:
    run: str  # run label
    dataset: str
    method: str
    phase: str
    images: float  # images through the network in this phase (with repeats)
    flops: float
    tasks: int = 1  # independent tasks the phase splits into (a run's generators: parts)



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


@functools.cache
def classifier_flops(model: str, channels: int, n_classes: int, resolution: int, norm: str,
                     train: bool) -> float:
    """FLOPs per image of the classifier: forward, or forward + backward."""
    def build():
        return build_model(model, channels, n_classes, resolution, norm)
    return _per_image(build, lambda m, x: m(x), (channels, resolution, resolution), train)


@functools.cache
def unet_flops(p: FFParams, channels: int, resolution: int, train: bool) -> float:
    def build():
        return build_unet(p, channels, resolution)

    def call(m, x):
        return m(x, torch.zeros(x.shape[0], dtype=torch.long, device=x.device)).sample
    return _per_image(build, call, (channels, resolution, resolution), train)


def _per_image(build, call, shape, train: bool, batch: int = 2) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        model = build()
        x = torch.empty((batch, *shape))
    model.train(train)
    with FlopCounterMode(display=False) as counter:
        if train:
            call(model, x).float().square().mean().backward()
        else:
            with torch.no_grad():
                call(model, x)
    return counter.get_total_flops() / batch


def run_costs(config: RunConfig, data_root: str | None = None) -> list[PhaseCost]:
    info = get_entry(config.dataset).info
    n, labels = sizes_and_labels(config.dataset, data_root)
    t = config.train
    args = (t.model, info.channels, info.n_classes, config.resolution, t.norm)
    fwd, step = classifier_flops(*args, False), classifier_flops(*args, True)
    eval_images = n["val"] + n["test"]
    label, method = _run_name(config), config.method
    costs = []

    def add(phase, images, per_image):
        costs.append(PhaseCost(label, config.dataset, method, phase, float(images),
                               float(images) * per_image))

    params = method_params(method, config.method_params)
    if issubclass(METHODS[method], WeightAveraging):
        add("client training", t.rounds * t.local_epochs * n["train"], step)
        if method == "moon":  # the global and previous models' forward passes
            add("contrastive passes", 2 * t.rounds * t.local_epochs * n["train"], fwd)
        add("evaluation", t.rounds * eval_images, fwd)
    elif method == "fedcvae":  # the MLP VAEs are negligible beside the classifier
        synth = params["samples_per_class"] * info.n_classes
        add("server classifier", params["classifier_epochs"] * synth, step)
        add("evaluation", params["classifier_epochs"] * eval_images, fwd)
    elif method == "dense":
        add("client training", t.rounds * t.local_epochs * n["train"], step)
        batch, m = params["batch_size"], config.n_clients
        # generator steps: G, the ensemble and the student forward and backward; student
        # steps: the ensemble forward, the student trained (the small generator not counted)
        add("generator steps", params["epochs"] * params["g_steps"] * batch * (m + 1), step)
        add("student steps", params["epochs"] * params["s_steps"] * batch, step + m * fwd)
        add("evaluation", params["epochs"] * eval_images, fwd)
    elif method == "local_only":
        add("client training", t.rounds * t.local_epochs * n["train"], step)
        add("evaluation", config.n_clients * t.rounds * eval_images, fwd)
    elif method == "centralized":
        epochs = config.method_params.get("epochs") or t.rounds * t.local_epochs
        add("training", epochs * n["train"], step)
        add("evaluation", epochs * eval_images, fwd)
    elif method == "federatedfactory":
        costs += _federatedfactory(config, info, n, labels, fwd, step)
    return costs


def _federatedfactory(config: RunConfig, info, n, labels, fwd, step) -> list[PhaseCost]:
    p = FFParams(**config.method_params)
    res = generator_resolution(p, config.resolution)
    modules = _module_count(config, info, n["train"], labels, p.min_class_samples)
    synth = p.samples_per_class * info.n_classes
    evals = network_evaluations(p)
    members = config.n_clients - len(p.exclude_clients)
    train = unet_flops(p, info.channels, res, True)
    run = (_run_name(config), config.dataset, config.method)
    costs = [PhaseCost(*run, "generator training", modules * p.gen_images_seen,
                       modules * p.gen_images_seen * train, tasks=modules)]
    rows = [("sampling", synth * evals, unet_flops(p, info.channels, res, False))]
    if "server" in p.modes:
        rows += [("server classifier", p.classifier_epochs * synth, step),
                 ("server evaluation", p.classifier_epochs * (n["val"] + n["test"]), fwd)]
    if "local" in p.modes:  # each client: its real images + the synthetic ones of other classes
        held = modules / max(members, 1)
        per_client = n["train"] / config.n_clients + synth * (1 - held / info.n_classes)
        rows += [("local classifiers", p.classifier_epochs * members * per_client, step),
                 ("local evaluation",
                  p.classifier_epochs * members * (n["val"] + n["test"]), fwd)]
    return costs + [PhaseCost(*run, phase, images, images * per) for phase, images, per in rows]


@dataclass
class UnitCost:
    dataset: str
    unit: str  # "synthesis" | "classifier epoch" | "generator training"
    what: str
    flops: float


def unit_costs(config: RunConfig, data_root: str | None = None) -> list[UnitCost]:
    """A FederatedFactory run's unit costs, the ones the authors' logs time: synthesis of
    10,000 images of one class, one local-mode classifier epoch over one client's real and
    synthetic images, and the training of one generator."""
    info = get_entry(config.dataset).info
    n, _ = sizes_and_labels(config.dataset, data_root)
    p = FFParams(**config.method_params)
    res = generator_resolution(p, config.resolution)
    t = config.train
    step = classifier_flops(t.model, info.channels, info.n_classes, config.resolution, t.norm,
                            True)
    # local mode under silos: a client's own class (real) + every other class (synthetic)
    client = n["train"] / info.n_classes + p.samples_per_class * (info.n_classes - 1)
    d = config.dataset
    return [
        UnitCost(d, "synthesis", f"10,000 images of one class, {p.sampler} "
                 f"{p.sampler_steps} steps at {res} px",
                 10_000 * network_evaluations(p) * unet_flops(p, info.channels, res, False)),
        UnitCost(d, "classifier epoch", f"{t.model} over one client's {client:,.0f} images "
                 f"at {config.resolution} px", client * step),
        UnitCost(d, "generator training", f"{p.gen_images_seen:,} images at {res} px",
                 p.gen_images_seen * unet_flops(p, info.channels, res, True)),
    ]


def _module_count(config: RunConfig, info, n_train: int, labels, min_samples: int) -> int:
    """(client, class) pairs with at least `min_samples` images under the run's split."""
    from .datasets.splits import parse_split
    from .methods.rng import Streams

    if config.split == NO_SPLIT:
        return info.n_classes
    if labels is None:  # balanced labels of the official size
        labels = np.arange(n_train) % info.n_classes
    spec = parse_split(config.split)
    groups = np.arange(len(labels)) % max(info.natural_clients, 1) if spec.kind.needs_groups \
        else None
    parts = spec(labels, config.n_clients, Streams(config.seed).numpy("split"), groups)
    return int(sum((np.bincount(labels[p], minlength=info.n_classes) >= min_samples).sum()
                   for p in parts))


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


def _training_bytes(build, call, shape: tuple, batch: int, state_copies: int) -> int:
    """Bytes of training a network on `batch` images on a GPU: float32 weights with their
    gradient and `state_copies` optimiser / EMA copies, plus every leaf module's output at
    that batch in bf16 (the autocast GPUs train in), kept for the backward pass. Counted on
    the meta device: shapes only."""
    with torch.device("meta"):
        model = build()
        x = torch.empty((1, *shape))
    outputs = []

    def hook(module, args, out):
        outs = out if isinstance(out, (tuple, list)) else [getattr(out, "sample", out)]
        outputs.extend(o.numel() for o in outs if isinstance(o, torch.Tensor))
    handles = [m.register_forward_hook(hook) for m in model.modules()
               if not list(m.children())]
    try:
        with torch.no_grad():
            call(model, x)
    finally:
        for h in handles:
            h.remove()
    params = sum(q.numel() for q in model.parameters())
    return 4 * params * (2 + state_copies) + 2 * batch * sum(outputs)


@functools.cache
def classifier_bytes(model: str, channels: int, n_classes: int, resolution: int, norm: str,
                     batch: int) -> int:
    """Training memory of the classifier with SGD momentum (one copy), once per shape."""
    def build():
        return build_model(model, channels, n_classes, resolution, norm)
    return _training_bytes(build, lambda m, x: m(x), (channels, resolution, resolution), batch, 1)


@functools.cache
def unet_bytes(p: FFParams, channels: int, resolution: int) -> int:
    """Training memory of a generator with AdamW and EMA (three copies), once per shape."""
    def build():
        return build_unet(p, channels, resolution)

    def call(m, x):
        return m(x, torch.zeros(x.shape[0], dtype=torch.long, device=x.device))
    return _training_bytes(build, call, (channels, resolution, resolution), p.gen_batch_size, 3)


def peak_memory(config: RunConfig, data_root: str | None = None) -> Memory:
    """The most device memory one run needs: its data on the device (uint8 images at the run's
    resolution, as methods/data.py keeps them) plus the larger of its classifier's training
    and, for FederatedFactory, a generator's. An estimate for the guard of `bench run` on
    GPUs, not a measurement (benchmarks/gpu_check.sh measures it)."""
    info = get_entry(config.dataset).info
    n, _ = sizes_and_labels(config.dataset, data_root)
    r, c, t = config.resolution, info.channels, config.train
    data = sum(n.values()) * c * r * r
    largest = (classifier_bytes(t.model, c, info.n_classes, r, t.norm, t.batch_size),
               f"{t.model} at {r} px, batch {t.batch_size}")
    if config.method == "federatedfactory":
        p = FFParams(**config.method_params)
        res = generator_resolution(p, r)
        unet = unet_bytes(p, c, res)
        if unet > largest[0]:
            largest = (unet, f"a generator at {res} px, batch {p.gen_batch_size}")
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
