"""Several clients of a round trained at once as one vectorised model (torch.func).

The clients' parameters are stacked along a leading dimension; each step computes every
client's minibatch gradient with `vmap(grad(loss))` and applies the update of
`torch.optim.SGD` (momentum, weight decay, momentum buffers starting at zero) to all of them at
once. On a GPU this replaces K small models' kernel launches by one batched call. Each client
draws its batches and augmentations from its own generator exactly as `train_local` does, so
the parameters equal the loop's within float tolerance (tested on the CPU).

Clients with fewer steps than the longest one are masked out of the remaining steps; batches
of different lengths are padded with zero-weight samples. A method's hooks run per client on
views of the stacked gradients. Batch norm is not vectorised (its running statistics are
module state updated in place): use norm=group or none, the FL recommendation anyway.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from .base import TrainConfig
from .data import DeviceData, mixed_precision
from .training import LocalStats, TrainHooks


def supports(model: nn.Module) -> bool:
    return not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def train_clients(
    model: nn.Module,
    data: DeviceData,
    clients: list[torch.Tensor],
    cfg: TrainConfig,
    lr: float,
    epochs: int,
    gens: list[torch.Generator],
    hooks: list[TrainHooks],
) -> tuple[dict[str, torch.Tensor], list[LocalStats]]:
    """Train every client of `clients` from `model`'s current weights; return the stacked
    parameters (name -> tensor with a leading client dimension) and each client's stats.
    `model` itself is not changed."""
    if not supports(model):
        raise ValueError("vectorised client training needs a model without batch norm; "
                         "use --set norm=group (or none), or --clients-at-once 1")
    if any(type(h).loss is not TrainHooks.loss for h in hooks):
        raise ValueError("a method whose hooks change the loss trains its clients one at a "
                         "time (not Capabilities(vectorises_clients=True))")
    k_clients, device = len(clients), data.device
    base = {n: p.detach() for n, p in model.named_parameters()}
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    params = {n: p.unsqueeze(0).repeat(k_clients, *([1] * p.dim())) for n, p in base.items()}
    momentum = {n: torch.zeros_like(p) for n, p in params.items()}

    def loss_of(p, x, y, w):
        out = functional_call(model, (p, buffers), (x,))
        ce = F.cross_entropy(out, y, reduction="none")
        loss = (ce * w).sum() / w.sum().clamp_min(1.0)  # the mean over the real samples
        return loss, loss.detach()

    step = vmap(grad(loss_of, has_aux=True))
    streams = [_epochs(data, idx, cfg.batch_size, g, epochs) for idx, g in zip(clients, gens)]
    custom = [type(h).adjust_gradients is not TrainHooks.adjust_gradients for h in hooks]
    steps, samples = [0] * k_clients, [0] * k_clients
    loss_sum = torch.zeros(k_clients, device=device)
    model.train()
    while True:
        batches = [next(s, None) for s in streams]
        active = [b is not None for b in batches]
        if not any(active):
            break
        x, y, w = _stack(batches, data)
        with mixed_precision(device):
            grads, losses = step(params, x, y, w)
        for k in range(k_clients):
            if active[k]:
                steps[k] += 1
                samples[k] += len(batches[k][1])
                if custom[k]:
                    hooks[k].adjust_gradients([params[n][k] for n in params],
                                              [grads[n][k] for n in params])
        mask = torch.tensor(active, device=device)
        loss_sum += losses * w.sum(1)
        for n, p in params.items():
            g = grads[n].add(p, alpha=cfg.weight_decay) if cfg.weight_decay else grads[n]
            buf = momentum[n].mul(cfg.momentum).add_(g)
            on = mask.view(-1, *([1] * (p.dim() - 1)))
            momentum[n] = torch.where(on, buf, momentum[n])
            params[n] = torch.where(on, p.add(buf, alpha=-lr), p)
    stats = [LocalStats(steps[k], samples[k], float(loss_sum[k]) / max(samples[k], 1),
                        cfg.momentum)
             for k in range(k_clients)]
    return params, stats


def _epochs(data: DeviceData, indices, batch_size: int, gen, epochs: int):
    """A client's batches over `epochs` epochs, drawn lazily as in `train_local`."""
    for _ in range(epochs):
        yield from data.batches(indices, batch_size, gen)


def _stack(batches, data: DeviceData):
    """(K, B, ...) images, labels and sample weights in one allocation each; absent or short
    batches are padded with zero-weight samples."""
    length = max(len(b[1]) for b in batches if b is not None)
    like = next(b[0] for b in batches if b is not None)
    k = len(batches)
    x = like.new_zeros((k, length, *like.shape[1:]))
    y = torch.zeros((k, length), dtype=data.y_train.dtype, device=data.device)
    w = torch.zeros((k, length), device=data.device)
    for i, b in enumerate(batches):
        if b is not None:
            n = len(b[1])
            x[i, :n], y[i, :n], w[i, :n] = b[0], b[1], 1.0
    return x, y, w


def load_client(model: nn.Module, params: dict[str, torch.Tensor], k: int) -> None:
    """Put client k's trained parameters into `model` (buffers are shared, unchanged)."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(params[n][k])
