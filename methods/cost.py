"""What a run costs, as its method declares it (`Method.cost`), before anything runs.

A method knows its own work: which networks it trains and evaluates, on how many images, how
often. It states that as `Phase`s (images through a network, FLOPs per image) from a
`Workload`, the facts of the run known without running it; bench/estimate.py keeps only the
arithmetic (sums, GPU-hours, wall time on N GPUs, the guard of `bench run`) and the rates.

Per-image FLOPs are counted, not guessed: torch's FlopCounterMode runs a network once on the
meta device (shapes only, no memory, no data) for a forward pass (evaluation, sampling) or a
forward + backward pass (training). Training memory is counted the same way
(`training_bytes`).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .base import TrainConfig
from .models import build_model


@dataclass(frozen=True)
class Workload:
    """A run's facts known before it runs (bench/estimate.py makes it from the config and the
    data, or the dataset's official sizes when the data is absent)."""

    dataset: str
    channels: int
    n_classes: int
    resolution: int
    sizes: dict  # images per subset: {"train", "val", "test"}
    # images per (client, class) under the run's split, shape (clients, classes); one row for
    # a run that does not use the split
    class_counts: np.ndarray
    train: TrainConfig

    @property
    def n_clients(self) -> int:
        return len(self.class_counts)

    @property
    def eval_images(self) -> int:
        """Images of one evaluation (validation and test)."""
        return self.sizes["val"] + self.sizes["test"]

    def classifier_flops(self, train: bool) -> float:
        """FLOPs per image of the table's classifier: forward, or forward + backward."""
        t = self.train
        return classifier_flops(t.model, self.channels, self.n_classes, self.resolution,
                                t.norm, train)


@dataclass(frozen=True)
class Phase:
    """`images` through a network (with repeats) at `flops_per_image` each; `tasks`: the
    independent tasks it splits into (a run's parts, `Capabilities.parts`)."""

    name: str
    images: float
    flops_per_image: float
    tasks: int = 1

    @property
    def flops(self) -> float:
        return self.images * self.flops_per_image


@dataclass(frozen=True)
class Network:
    """A network a run trains on its device besides the table's classifier, with the bytes
    that training needs (`training_bytes`): what the memory guard compares."""

    bytes: float
    what: str


@dataclass(frozen=True)
class UnitCost:
    """A unit of a method's work that its authors' logs time (`bench estimate` prints it beside
    the logged seconds), e.g. FederatedFactory's synthesis of 10,000 images."""

    unit: str
    what: str
    flops: float
    logged_seconds: float | None = None  # the authors' logged time on `logged_on`
    logged_on: str = ""


@dataclass(frozen=True)
class Cost:
    phases: tuple[Phase, ...]
    networks: tuple[Network, ...] = ()
    units: tuple[UnitCost, ...] = ()

    def flops(self) -> float:
        return sum(p.flops for p in self.phases)


def classifier_training(work: Workload, epochs: float, images: float | None = None,
                        evaluations: float | None = None,
                        phase: str = "client training") -> list[Phase]:
    """`epochs` passes of the classifier over `images` (default: the training set) and one
    evaluation per epoch (or `evaluations`): the shape of most methods' cost."""
    images = work.sizes["train"] if images is None else images
    evaluations = epochs if evaluations is None else evaluations
    return [Phase(phase, epochs * images, work.classifier_flops(True)),
            Phase("evaluation", evaluations * work.eval_images, work.classifier_flops(False))]


def per_image_flops(build: Callable[[], torch.nn.Module], call, shape: tuple, train: bool,
                    batch: int = 2) -> float:
    """FLOPs per image of `call(build(), x)` on the meta device: forward, or forward + backward."""
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


@functools.cache
def classifier_flops(model: str, channels: int, n_classes: int, resolution: int, norm: str,
                     train: bool) -> float:
    """FLOPs per image of a classifier (once per shape)."""
    def build():
        return build_model(model, channels, n_classes, resolution, norm)
    return per_image_flops(build, lambda m, x: m(x), (channels, resolution, resolution), train)


def training_bytes(build, call, shape: tuple, batch: int, state_copies: int) -> int:
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
    return training_bytes(build, lambda m, x: m(x), (channels, resolution, resolution), batch, 1)
