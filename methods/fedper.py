"""FedPer (Arivazhagan, Aggarwal, Singh and Choudhary, "Federated Learning with Personalization
Layers", arXiv 1912.00818, 2019, Sec. 3): FedAvg on the base layers, personal output layer.

Each chosen client trains its whole model (the global base and its own head) for the
protocol's E local epochs, as FedAvg's clients do, then sends the base only; the server
averages the bases. The head (the output layer, `models.output_layer`) starts at the initial
model's and never leaves the client; client k's model is (base, head_k). It is FedRep
(methods/fedrep.py) with base and head trained together instead of in turn.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .base import RunContext
from .personalised import PersonalHead
from .training import LocalStats, train_local
from .weight_averaging import State


class FedPer(PersonalHead):
    name = "fedper"

    @dataclass(frozen=True)
    class Params:
        pass

    def local_update(self, model: nn.Module, ctx: RunContext, k: int, r: int, lr: float,
                     global_state: State, personal: State) -> tuple[State, State, LocalStats]:
        model.load_state_dict({**global_state, **personal})
        stats = train_local(model, ctx.data, ctx.clients[k], ctx.train, lr,
                            ctx.train.local_epochs, ctx.streams.torch(f"batches/r{r}/c{k}"))
        return (*self.split(model), stats)
