"""Per-dataset protocol defaults and the named grids.

A protocol fixes, for every method of a dataset's table, one resolution, one classifier and one
training budget (the guide's rule: never compare methods run at different resolutions).

digits (CPU scale): the field's conventional FL settings, NIID-Bench's (E = 10 local epochs of
batch 64, SGD lr 0.01 with momentum 0.9), a cosine schedule over 15 rounds, 10 clients (silos:
one per class), the small GroupNorm CNN at the native 8x8 resolution. Of lr 0.01 / 0.05 / 0.1,
0.01 gave FedAvg the best validation accuracy under IID, Dirichlet 0.1 and silos alike
(README, "Tuning").
"""
from __future__ import annotations

from .datasets.registry import DATASETS
from .methods.base import TrainConfig
from .methods.registry import METHODS

PROTOCOLS: dict[str, dict] = {
    "digits": {
        "resolution": 8,
        "n_clients": 10,
        "train": TrainConfig(model="cnn", norm="group", rounds=15, local_epochs=10,
                             batch_size=64, lr=0.01, momentum=0.9, weight_decay=1e-4,
                             lr_schedule="cosine", client_fraction=1.0),
    },
}

# `python -m bench run` with no selection: the embedded default, in blocks of methods x splits.
# The baselines run under every split; FederatedFactory under silos, the paper's setting: it
# trains one generator per (client, class held), so IID or Dirichlet splits of 10 clients
# cost up to 10x more generators (ask for them with --methods federatedfactory --splits ...).
BASELINES = ["centralized", "local_only", "fedavg", "fedprox", "scaffold"]
DEFAULT_GRID = {
    "datasets": ["digits"],
    "blocks": [(BASELINES, ["iid", "dirichlet:0.1", "dirichlet:1.0", "silos"]),
               (["federatedfactory"], ["silos"])],
    "seeds": [0],
}

# `--all`: every registered dataset and method over the heterogeneity range.
ALL_SPLITS = ["iid", "dirichlet:1.0", "dirichlet:0.5", "dirichlet:0.1", "classes:2", "silos"]
ALL_SEEDS = [0, 1, 2]


def protocol_for(dataset: str) -> dict:
    return PROTOCOLS[dataset]


def all_grid() -> dict:
    return {"datasets": list(DATASETS), "blocks": [(list(METHODS), ALL_SPLITS)],
            "seeds": ALL_SEEDS}
