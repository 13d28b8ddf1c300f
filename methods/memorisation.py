"""What a careful reader asks of a generative method: does it memorise? (Measured for every
one-round generative method, methods/oneshot.py.)

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
