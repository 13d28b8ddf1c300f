"""What a careful reader asks of a generative method: does it memorise, do samples look right.

Memorisation indicator (per class): the median distance from each synthetic image to its
nearest training image of that class, beside the same median for real test images of that
class. Distances are root-mean-square over pixels in [0, 1]. A synthetic median far below the
test median means the modules copy their training images. (Evaluation only: it reads the
clients' images, which the method itself never moves.)
"""
from __future__ import annotations

import numpy as np
import torch


def _median_nn(queries: torch.Tensor, reference: torch.Tensor, chunk: int = 2048) -> float:
    q = queries.flatten(1).float() / 255.0
    r = reference.flatten(1).float() / 255.0
    best = torch.cat([torch.cdist(part, r).min(dim=1).values for part in torch.split(q, chunk)])
    return float(best.median() / np.sqrt(q.shape[1]))


def memorisation(synth_x, synth_y, train_x, train_y, test_x, test_y, n_classes: int) -> dict:
    out = {}
    for c in range(n_classes):
        s, tr, te = synth_x[synth_y == c], train_x[train_y == c], test_x[test_y == c]
        if len(s) == 0 or len(tr) == 0 or len(te) == 0:
            continue
        syn, real = _median_nn(s, tr), _median_nn(te, tr)
        out[str(c)] = {"synthetic_to_train": syn, "test_to_train": real,
                       "ratio": syn / real if real > 0 else None}
    return out


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
