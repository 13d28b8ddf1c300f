"""Synthetic training sets, shared by the generative one-round methods (FederatedFactory,
FedCVAE-Ens): who draws how many images of each class, with which seeds, the table's
classifier trained on such a set with validation-based selection, and the grid of samples
beside real images that each such run stores.

Class c gets `samples_per_class` images, shared among the modules that hold c in proportion to
their clients' training counts of c (largest-remainder rounding, ties to the lower client id).
Image j of (client k, class c) has the seed SeedSequence((base, c, k, j)): it is the same image
whatever the other modules, the shares or the batch size.
"""
from __future__ import annotations

import numpy as np
import torch

from .base import RunContext
from .evaluation import Selection
from .training import fit


def shares(counts: dict[int, int], total: int) -> dict[int, int]:
    """Split `total` among clients in proportion to `counts` (client -> samples)."""
    if not counts:
        return {}
    clients = sorted(counts)
    weights = np.array([counts[k] for k in clients], dtype=float)
    exact = total * weights / weights.sum()
    base = np.floor(exact).astype(int)
    order = sorted(range(len(clients)), key=lambda i: (-(exact[i] - base[i]), clients[i]))
    for i in order[: total - base.sum()]:
        base[i] += 1
    return {k: int(n) for k, n in zip(clients, base)}


def image_seeds(base: int, cls: int, client: int, n: int) -> list[int]:
    return [int(np.random.SeedSequence((base, cls, client, j)).generate_state(1)[0])
            for j in range(n)]


def train_on(ctx: RunContext, x: torch.Tensor, y: torch.Tensor, epochs: int, purpose: str,
             desc: str):
    """The table's classifier trained on (x, y) (uint8 images, labels) for `epochs` epochs,
    evaluated on the real validation and test sets after each; returns (selection, model).
    Its batches come from the run's `purpose` streams."""
    data = ctx.data.with_train(x, y)
    model = ctx.new_model()
    sel = Selection(data)
    idx = torch.arange(len(y), device=ctx.device)
    with ctx.progress(epochs, desc) as bar:
        def on_epoch(epoch, stats):
            sel.observe(model, epoch, bar, train_loss=stats.mean_loss)
        fit(model, data, idx, ctx.train, epochs, ctx.streams, purpose, on_epoch,
            ctx.checkpoint, sel)
    return sel, model


def sample_grid(synth_x, synth_y, real_x, real_y, n_classes: int, per_class: int = 8) -> np.ndarray:
    """uint8 image (H, W, C): one row per class, synthetic images left, real ones right."""
    c_, h, w = real_x.shape[1:]
    gap = 2
    rows = []
    for c in range(n_classes):
        cells = []
        for source_x, source_y in ((synth_x, synth_y), (real_x, real_y)):
            imgs = source_x[source_y == c][:per_class].cpu()
            pad = torch.full((per_class - len(imgs), c_, h, w), 0, dtype=torch.uint8)
            cells.append(torch.cat([imgs, pad]))
        row = torch.cat([*cells[0], torch.full((c_, h, 3 * gap), 255, dtype=torch.uint8),
                         *cells[1]], dim=2)
        rows.extend([row, torch.full((c_, gap, row.shape[2]), 255, dtype=torch.uint8)])
    grid = torch.cat(rows, dim=1).permute(1, 2, 0).numpy()
    return grid[..., 0] if c_ == 1 else grid
