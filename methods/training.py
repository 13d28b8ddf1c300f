"""The one local-training loop. Methods change it only through `TrainHooks`."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import TrainConfig
from .data import DeviceData, mixed_precision
from .checkpoints import Checkpoint, resumable
from .dp import poisson_batches, private_gradients, sample_rate
from .evaluation import Diverged, Selection


class TrainHooks:
    """Small terms a method adds to local training. The default adds nothing (FedAvg)."""

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The minibatch loss (default: cross-entropy of `model(x)`). A method that overrides
        it (MOON, FedAwS) trains its clients one at a time (`Capabilities` without
        `vectorises_clients`)."""
        return F.cross_entropy(model(x), y)

    def adjust_gradients(self, params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        """Called after backward, before the optimiser step, with the (detached) parameters
        and their gradients; may edit `grads` in place."""


@dataclass
class LocalStats:
    steps: int  # optimiser steps actually taken
    samples: int  # samples seen (with repeats over epochs)
    mean_loss: float
    momentum: float = 0.0  # the optimiser's momentum (FedNova's normalisation needs it)


def train_local(
    model: nn.Module,
    data: DeviceData,
    indices: torch.Tensor,
    cfg: TrainConfig,
    lr: float,
    epochs: int,
    gen: torch.Generator,
    hooks: TrainHooks | None = None,
) -> LocalStats:
    """`epochs` passes of SGD (momentum, weight decay from `cfg`) over `data.x_train[indices]`.

    A fresh optimiser per call: momentum buffers start at zero for every client update, as in
    the reference FL implementations. bf16 autocast on CUDA, float32 on the CPU.
    """
    hooks = hooks or TrainHooks()
    params = [p for p in model.parameters()]
    detached = [p.detach() for p in params]
    opt = torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    model.train()
    steps = samples = 0
    loss_sum = torch.zeros((), device=data.device)
    for _ in range(epochs):
        for x, y in data.batches(indices, cfg.batch_size, gen):
            with mixed_precision(data.device):
                loss = hooks.loss(model, x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            hooks.adjust_gradients(detached, [p.grad for p in params])
            opt.step()
            steps += 1
            samples += len(y)
            loss_sum += loss.detach() * len(y)
    return LocalStats(steps, samples, float(loss_sum) / max(samples, 1), cfg.momentum)


def train_local_private(model: nn.Module, data: DeviceData, indices: torch.Tensor,
                        cfg: TrainConfig, lr: float, epochs: int, gen: torch.Generator,
                        noise: torch.Generator, clip: float, sigma: float,
                        hooks: TrainHooks | None = None) -> LocalStats:
    """`train_local` with DP-SGD (methods/dp.py): each epoch ceil(n / batch_size) steps on
    Poisson-sampled batches (from `gen`, which also augments), each image's gradient of the
    cross-entropy clipped to `clip`, Gaussian noise of std `sigma * clip` (from `noise`); the
    same optimiser and hooks then act on the privatised gradients. In float32 on every
    device. Hooks that change the loss cannot run: only the cross-entropy is privatised. The
    loss is not privatised either, so the stats report none (NaN): a client releases only
    its model."""
    hooks = hooks or TrainHooks()
    if type(hooks).loss is not TrainHooks.loss:
        raise ValueError(f"{type(hooks).__name__} changes the loss; DP-SGD privatises the "
                         "cross-entropy's per-image gradients only")
    params = list(model.parameters())
    detached = [p.detach() for p in params]
    opt = torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    expected = sample_rate(len(indices), cfg.batch_size) * len(indices)
    model.train()
    steps = samples = 0
    for _ in range(epochs):
        for idx in poisson_batches(indices, cfg.batch_size, gen):
            x, y = data.batch(idx, gen)
            grads = private_gradients(model, x, y, clip, sigma, expected, noise)
            for p, g in zip(params, grads):
                p.grad = g
            hooks.adjust_gradients(detached, grads)
            opt.step()
            steps += 1
            samples += len(y)
    return LocalStats(steps, samples, float("nan"), cfg.momentum)


def fit(model: nn.Module, data: DeviceData, indices: torch.Tensor, cfg: TrainConfig, epochs: int,
        streams, purpose: str, on_epoch, checkpoint: Checkpoint | None = None,
        selection: Selection | None = None,
        private: tuple[float, float] | None = None) -> None:
    """Train for `epochs` epochs, cosine (or constant) over epochs, calling
    `on_epoch(epoch, stats)` after each; the batches of epoch e come from stream
    `{purpose}/e{e}`. Stops early when `on_epoch` raises Diverged. With `private` = (clip,
    sigma), every epoch is DP-SGD's (`train_local_private`), its noise from stream
    `dp/noise/{purpose}/e{e}`: `epochs` * steps_per_epoch steps to account.

    With a `checkpoint` and the `selection` that `on_epoch` feeds (all `on_epoch` may change
    besides the model), the loop saves (model, selection, epoch) as phase `purpose` when due
    and resumes from it: a fresh optimiser per epoch and a stream per epoch leave nothing
    else to save."""
    if checkpoint is None or selection is None:
        checkpoint = Checkpoint.off()

    def save() -> dict:
        return {"model": model.state_dict(), "selection": selection.state()}

    def load(saved: dict) -> None:
        model.load_state_dict(saved["model"])
        selection.restore(saved["selection"])

    for e in resumable(checkpoint, purpose, epochs, save, load,
                       lambda done: f"epoch {done} of {epochs}"):
        gen = streams.torch(f"{purpose}/e{e}")
        if private is None:
            stats = train_local(model, data, indices, cfg, cfg.lr_at(e, epochs), 1, gen)
        else:
            stats = train_local_private(model, data, indices, cfg, cfg.lr_at(e, epochs), 1, gen,
                                        streams.torch(f"dp/noise/{purpose}/e{e}"), *private)
        try:
            on_epoch(e + 1, stats)
        except Diverged:
            return  # the caller's Selection remembers where; its best finite epoch stands
