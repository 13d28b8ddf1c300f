"""The class-balanced synthetic set: who draws how many images of each class, with which seeds.

Class c gets `samples_per_class` images, shared among the modules that hold c in proportion to
their clients' training counts of c (largest-remainder rounding, ties to the lower client id).
Image j of (client k, class c) has the seed SeedSequence((base, c, k, j)): it is the same image
whatever the other modules, the shares or the batch size.
"""
from __future__ import annotations

import numpy as np


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
