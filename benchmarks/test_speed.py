"""Speed benchmarks (pytest-benchmark). Not unit tests: run them with

    python -m pytest benchmarks --benchmark-enable --benchmark-json benchmarks/results/NAME.json

which also writes NAME.md beside it (conftest.py): a table per group, the rates, the harness
overhead and the generator-training gap, with the machine they ran on. Each benchmark's
`extra_info` says how many items (images, client updates) one call processes; the rate is
that count over the median call. Without --benchmark-enable each runs once, as a smoke test.
"""
from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys
import time

import pytest
import torch
import torch.nn.functional as F

from bench.config import resolve
from bench.grid import grid_configs
from bench.methods.base import RunContext, TrainConfig
from bench.methods.communication import CommLog
from bench.methods.data import DeviceData
from bench.methods.federated import client_phase
from bench.methods.federatedfactory.modules import train_module
from bench.methods.federatedfactory.network import build_unet
from bench.methods.federatedfactory.params import FFParams
from bench.methods.federatedfactory.sampler import network_evaluations, sample
from bench.methods.federatedfactory.schedule import training_schedule
from bench.methods.registry import build_method
from bench.methods.rng import Streams
from bench.runner import cached_dataset, client_indices, pick_device

DEVICE = pick_device("auto")
ROUNDS = 5  # measured calls per benchmark (after one warm-up call)


def _sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def _timed(benchmark, fn, rounds: int = ROUNDS, warmup: int = 1):
    def call():
        out = fn()
        _sync()
        return out
    return benchmark.pedantic(call, rounds=rounds, warmup_rounds=warmup, iterations=1)


def _context(train: TrainConfig, resolution: int, parts, seed: int = 0, clients_at_once=1):
    data = DeviceData(cached_dataset("digits", None), resolution, DEVICE)
    return RunContext(data, [torch.as_tensor(p, device=DEVICE) for p in parts], train,
                      Streams(seed), clients_at_once=clients_at_once)


# --- 1. harness overhead: FedAvg rounds vs the bare training steps on the same batches -------

HARNESS_ROUNDS = 3


@pytest.fixture(scope="module")
def digits_silos():
    config = resolve("digits", "fedavg", "silos", 0)
    train = dataclasses.replace(config.train, rounds=HARNESS_ROUNDS)
    parts = client_indices(config, cached_dataset("digits", None))
    return _context(train, config.resolution, parts)


def _items(ctx: RunContext) -> int:
    """Images processed by the clients over the benchmark's rounds."""
    return HARNESS_ROUNDS * ctx.train.local_epochs * sum(len(c) for c in ctx.clients)


@pytest.mark.benchmark(group="harness overhead")
def test_harness_fedavg_rounds(benchmark, digits_silos):
    """`HARNESS_ROUNDS` FedAvg rounds of the digits protocol (10 silos, E = 10) through the
    harness: model set-up, batching, local training, messages, aggregation, byte counts and
    each round's validation + test evaluation (whose share is reported as eval_seconds)."""
    ctx = digits_silos
    result = _timed(benchmark, lambda: build_method("fedavg", {}).run(ctx))
    benchmark.extra_info.update(items=_items(ctx), unit="images",
                                eval_seconds=result.timings["eval"])


@pytest.mark.benchmark(group="harness overhead")
def test_bare_fedavg_rounds(benchmark, digits_silos):
    """The same rounds as plain PyTorch: the same model and the same batches (drawn before
    timing), SGD steps, and a weighted average of the state dicts. No evaluation."""
    ctx = digits_silos
    cfg = ctx.train
    batches = {(r, k): list(_epochs(ctx, r, k)) for r in range(HARNESS_ROUNDS)
               for k in range(len(ctx.clients))}
    sizes = [len(c) for c in ctx.clients]

    def rounds():
        model = ctx.new_model()
        global_state = copy.deepcopy(model.state_dict())
        for r in range(HARNESS_ROUNDS):
            lr = cfg.lr_at(r, cfg.rounds)
            total = {n: torch.zeros_like(v) for n, v in global_state.items()}
            for k in range(len(ctx.clients)):
                model.load_state_dict(global_state)
                opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=cfg.momentum,
                                      weight_decay=cfg.weight_decay)
                for x, y in batches[(r, k)]:
                    loss = F.cross_entropy(model(x), y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                for n, v in model.state_dict().items():
                    total[n].add_(v, alpha=sizes[k])
            global_state = {n: v / sum(sizes) for n, v in total.items()}
        return global_state

    _timed(benchmark, rounds)
    benchmark.extra_info.update(items=_items(ctx), unit="images")


def _epochs(ctx: RunContext, r: int, k: int):
    gen = ctx.streams.torch(f"batches/r{r}/c{k}")  # the harness's stream for (round, client)
    for _ in range(ctx.train.local_epochs):
        yield from ctx.data.batches(ctx.clients[k], ctx.train.batch_size, gen)


# --- 2. client updates per second -------------------------------------------------------------

N_CLIENTS, PER_CLIENT, RESOLUTION = 10, 64, 32  # CIFAR-sized inputs: digits resized to 32 px


@pytest.mark.benchmark(group="client updates")
@pytest.mark.parametrize("model", ["cnn", "resnet18"])
@pytest.mark.parametrize("method, at_once", [("fedavg", 1), ("fedprox", 1), ("scaffold", 1),
                                              ("fedavg", N_CLIENTS)])
def test_client_updates(benchmark, method, at_once, model):
    """One round's client phase: 10 clients x 64 images x 1 epoch (batch 32: 2 steps each) at
    32 px; at_once = 10 trains them as one vectorised model (torch.func)."""
    train = TrainConfig(model=model, norm="group", rounds=1, local_epochs=1, batch_size=32,
                        lr=0.01)
    order = torch.randperm(N_CLIENTS * PER_CLIENT, generator=torch.Generator().manual_seed(0))
    parts = [order[i * PER_CLIENT:(i + 1) * PER_CLIENT].numpy() for i in range(N_CLIENTS)]
    ctx = _context(train, RESOLUTION, parts, clients_at_once=at_once)
    algo = build_method(method, {})
    net = ctx.new_model()
    global_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    server = algo.init_server(net, global_state)

    def round_():
        return client_phase(algo, net, ctx, list(range(N_CLIENTS)), 0, train.lr, global_state,
                            server, {}, CommLog())

    _timed(benchmark, round_, rounds=10 if model == "cnn" else 3)
    benchmark.extra_info.update(items=N_CLIENTS, unit="client updates",
                                images=N_CLIENTS * PER_CLIENT)


# --- 3. FederatedFactory: generator training and sampling ------------------------------------

GEN_STEPS = 10


def _class_images(resolution: int) -> torch.Tensor:
    data = DeviceData(cached_dataset("digits", None), resolution, DEVICE)
    x = data.x_train[data.y_train == 3]
    return x.float().mul(2 / 255).sub(1)


def _gen_params() -> FFParams:
    # the cpu preset's network in the DDPM formulation: the bare loop below is diffusers' DDPM
    # example, so the pair measures the harness's overhead, not a change of loss
    p = FFParams(formulation="ddpm", sampler="ddim", sampler_steps=25)
    return dataclasses.replace(p, gen_images_seen=GEN_STEPS * p.gen_batch_size)


@pytest.mark.benchmark(group="generator training")
@pytest.mark.parametrize("resolution", [8, 32])
def test_generator_training_harness(benchmark, resolution):
    """`train_module` (cpu preset): seeded batches, noise and timesteps from a CPU generator,
    AdamW, EMA with warm-up, bf16 autocast on CUDA."""
    p, x = _gen_params(), _class_images(resolution)
    _timed(benchmark, lambda: train_module(p, x, seed=0), rounds=3)
    benchmark.extra_info.update(items=GEN_STEPS * p.gen_batch_size, unit="images")


@pytest.mark.benchmark(group="generator training")
@pytest.mark.parametrize("resolution", [8, 32])
def test_generator_training_bare(benchmark, resolution):
    """A bare diffusers training loop of the same UNet (diffusers' train_unconditional
    example, reduced): global-RNG noise and timesteps, add_noise, MSE, AdamW, EMA."""
    from diffusers.training_utils import EMAModel

    p, x = _gen_params(), _class_images(resolution)
    schedule = training_schedule(p.train_timesteps)

    def loop():
        unet = build_unet(p, x.shape[1], resolution).to(DEVICE).train()
        opt = torch.optim.AdamW(unet.parameters(), lr=p.gen_lr)
        ema = EMAModel(unet.parameters(), decay=p.gen_ema_decay, use_ema_warmup=True,
                       power=3 / 4)
        for _ in range(GEN_STEPS):
            x0 = x[torch.randint(0, len(x), (p.gen_batch_size,), device=DEVICE)]
            noise = torch.randn_like(x0)
            t = torch.randint(0, p.train_timesteps, (len(x0),), device=DEVICE)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=DEVICE.type == "cuda"):
                loss = F.mse_loss(unet(schedule.add_noise(x0, noise, t), t).sample.float(),
                                  noise)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            ema.step(unet.parameters())
        return unet

    _timed(benchmark, loop, rounds=3)
    benchmark.extra_info.update(items=GEN_STEPS * p.gen_batch_size, unit="images")


@pytest.mark.benchmark(group="sampling")
@pytest.mark.parametrize("resolution, n", [(8, 256), (32, 64)])
def test_sampling(benchmark, resolution, n):
    """The cpu preset's sampler (EDM Heun, 7 steps, 13 network evaluations), one seed per
    image, from an untrained UNet (the cost does not depend on the weights)."""
    p = FFParams()
    unet = build_unet(p, 1, resolution).to(DEVICE).eval()
    _timed(benchmark, lambda: sample(unet, p, list(range(n)), 1, resolution, DEVICE), rounds=3)
    benchmark.extra_info.update(items=n, unit="images", network_evaluations=network_evaluations(p))


# --- 4. the default grid: sequential vs joblib with 2 workers --------------------------------

@pytest.mark.benchmark(group="default grid")
@pytest.mark.parametrize("executor", ["sequential", "joblib-2"])
def test_default_grid(benchmark, executor, tmp_path_factory):
    """`python -m bench run` (the default digits grid) from an empty results folder,
    in a fresh process; joblib-2 = 2 worker processes x (cores / 2) threads."""
    extra = [] if executor == "sequential" else ["--executor", "joblib", "--workers", "2"]

    def grid():
        out = tmp_path_factory.mktemp("grid")
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "bench", "run", "--out", str(out), *extra],
                       check=True, capture_output=True)
        return time.perf_counter() - t

    benchmark.pedantic(grid, rounds=1, iterations=1)
    benchmark.extra_info.update(items=len(grid_configs("default")), unit="runs")
