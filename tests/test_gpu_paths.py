"""The code paths that only a GPU takes, run on the CPU by design (no GPU here):

- bf16 autocast (`methods.data.MIXED_PRECISION` adds "cpu"): local training, the vectorised
  clients, a generator module's training and the sampler, with evaluation still in float32;
- channels-last and data on the run's device (DeviceData keeps both on the CPU too);
- each paper-scale dataset at its paper resolution with the paper's classifier (ResNet-50), a
  few steps, on files written here in each real format: CIFAR-10's pickles, MedMNIST's npz at
  64 and 128 px, Fed-ISIC2019's folder layout (prepared at 128 px), and the paper's generator.

Numbers under bf16 differ from float32 by rounding; what must hold is that every path runs,
stays finite, takes bf16 where it says so and evaluates in float32."""
import numpy as np
import pytest
import torch

import bench.methods.data as data_module
from bench.cli import main
from bench.config import parse_overrides, resolve
from bench.runner import execute
from helpers import TINY_FF, write_cifar, write_isic, write_medmnist

pytestmark = pytest.mark.slow


@pytest.fixture
def bf16_on_cpu(monkeypatch):
    monkeypatch.setattr(data_module, "MIXED_PRECISION", ("cuda", "cpu"))


def run(dataset, method, split="iid", sets=(), root=None, scale="paper", **kwargs):
    config = resolve(dataset, method, split, 0, parse_overrides(list(sets)), scale)
    return execute(config, torch.device("cpu"), data_root=root, **kwargs)[0]


def finite(record) -> bool:
    m = record.metrics.selected
    return m is not None and np.isfinite(m["accuracy"]) and np.isfinite(m["loss"])


def test_training_under_bf16_autocast_runs_in_bf16_and_evaluates_in_float32(bf16_on_cpu):
    from bench.methods.data import DeviceData, mixed_precision
    from bench.methods.evaluation import predict_proba
    from bench.methods.models import build_model
    from bench.runner import cached_dataset

    with mixed_precision("cpu"):
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16
        assert (torch.ones(4, 4) @ torch.ones(4, 4)).dtype == torch.bfloat16
    d = DeviceData(cached_dataset("digits", None), 8, torch.device("cpu"))
    model = d.place(build_model("cnn", 1, 10, 8, "group"))
    assert d.to_float(d.x_test[:4]).is_contiguous(memory_format=torch.channels_last)
    seen = []
    model.register_forward_hook(lambda m, args, out: seen.append(out.dtype))
    with mixed_precision("cpu"):  # a training step's forward: bf16
        model(d.to_float(d.x_test[:4]))
    with mixed_precision("cpu"):  # evaluation switches autocast off inside an enclosing one
        predict_proba(model, d, d.x_test[:16])
    assert seen[0] == torch.bfloat16 and set(seen[1:]) == {torch.float32}


@pytest.mark.parametrize("clients_at_once", [1, 3])
def test_weight_averaging_under_bf16(bf16_on_cpu, monkeypatch, clients_at_once):
    sets = ("rounds=2", "local_epochs=1")
    mixed = run("digits", "fedavg", "silos", sets, scale="paper", clients_at_once=clients_at_once)
    assert finite(mixed)
    monkeypatch.setattr(data_module, "MIXED_PRECISION", ("cuda",))
    plain = run("digits", "fedavg", "silos", sets, scale="paper", clients_at_once=clients_at_once)
    # the bf16 path was taken: other rounding, so other curves
    assert mixed.curves["train_loss"] != plain.curves["train_loss"]


def test_a_generator_trains_and_samples_under_bf16(bf16_on_cpu):
    from bench.methods.federatedfactory.modules import train_module
    from bench.methods.federatedfactory.network import build_unet
    from bench.methods.federatedfactory.params import FFParams
    from bench.methods.federatedfactory.sampler import sample

    p = FFParams(**{**resolve("digits", "federatedfactory", "silos", 0,
                              parse_overrides(TINY_FF)).method_params,
                    "gen_images_seen": 64, "gen_batch_size": 16})
    x = torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    state = train_module(p, x, seed=0)
    assert all(torch.isfinite(v).all() and v.dtype == torch.float32 for v in state.values())
    unet = build_unet(p, 1, 8)
    unet.load_state_dict(state)
    images = sample(unet, p, [0, 1, 2], 1, 8, "cpu")
    assert images.shape == (3, 1, 8, 8) and images.dtype == torch.uint8


PAPER_FEW_STEPS = ("rounds=1", "local_epochs=1", "batch_size=8", "n_clients=2")


@pytest.mark.parametrize("dataset, resolution", [
    ("cifar10", 32), ("bloodmnist_64", 64), ("pathmnist_128", 128), ("isic2019", 128)])
def test_each_paper_dataset_at_its_paper_resolution_and_model(dataset, resolution, tmp_path):
    if dataset == "cifar10":
        write_cifar(tmp_path, per_batch=8)
    elif dataset == "isic2019":
        write_isic(tmp_path, per_center=4)
        assert main(["prepare", "isic2019", "--data-root", str(tmp_path)]) == 0
    else:
        name, size = dataset.split("_")
        classes = {"bloodmnist": 8, "pathmnist": 9}[name]
        write_medmnist(tmp_path / "medmnist" / f"{dataset}.npz", n=(24, 8, 8), size=int(size),
                       channels=3, classes=classes)
    record = run(dataset, "fedavg", "iid", PAPER_FEW_STEPS, root=tmp_path)
    assert record.config.resolution == resolution and record.config.train.model == "resnet50"
    assert 23_000_000 < record.model_parameters < 24_000_000  # ResNet-50, its head aside
    assert finite(record)


def test_the_paper_generator_at_32_px_a_few_steps():
    """The authors' generator (the `paper` preset at CIFAR-10's 32 px): two training steps of
    two images and one image sampled in two Heun steps."""
    from bench.methods.federatedfactory.modules import train_module
    from bench.methods.federatedfactory.network import build_unet
    from bench.methods.federatedfactory.params import FFParams
    from bench.methods.federatedfactory.sampler import sample

    params = resolve("cifar10", "federatedfactory", "silos", 0).method_params
    assert params["preset"] == "paper"
    p = FFParams(**{**params, "gen_images_seen": 4, "gen_batch_size": 2, "sampler_steps": 2})
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    state = train_module(p, x, seed=0)
    unet = build_unet(p, 3, 32)
    assert sum(v.numel() for v in unet.parameters()) > 30_000_000  # the paper's widths
    unet.load_state_dict(state)
    assert sample(unet, p, [0], 3, 32, "cpu").shape == (1, 3, 32, 32)
