"""FedRep (Collins, Hassani, Mokhtari and Shakkottai, "Exploiting Shared Representations for
Personalized Federated Learning", ICML 2021, Algorithm 1).

The network is a shared representation phi (the body) and a personal head h_k (its output
layer, `models.output_layer`). In round t each chosen client k
    1. trains its head for tau_h epochs with the body fixed at phi_t     (lines 5-7),
    2. trains the body for tau_phi epochs with its new head fixed        (lines 8-10),
    3. sends the body; the server averages the bodies (sample-weighted)  (line 12).
h_k starts at the initial model's head and never leaves the client; client k's model is
(phi, h_k). tau_h = 10 and tau_phi = 5: the paper trains the head 10 epochs "followed by one
or five epochs for the representation ... depending on the dataset", and the authors' scripts
(lgcollins/FedRep) use 10 + 5 for every dataset but one setting of CIFAR-10 (10 + 1);
`--set fedrep.head_epochs=... fedrep.body_epochs=...`. The frozen part takes no gradient at
all (no momentum, no weight decay: the authors' code, on torch < 2, zeroes the head's
gradients, so momentum and decay still move it); batch-norm statistics of a frozen body
still move with the head's batches.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from .base import RunContext
from .personalised import PersonalHead, frozen
from .training import LocalStats, train_local
from .weight_averaging import State


class FedRep(PersonalHead):
    name = "fedrep"

    @dataclass(frozen=True)
    class Params:
        head_epochs: int = 10  # tau_h: epochs on the head, body fixed
        body_epochs: int = 5  # tau_phi: epochs on the body, head fixed

        def __post_init__(self):
            if self.head_epochs < 0 or self.body_epochs < 1:
                raise ValueError(f"fedrep: head_epochs must be >= 0 and body_epochs >= 1, got "
                                 f"{self.head_epochs} and {self.body_epochs}")

    def local_epochs(self, train) -> float:
        return self.params.head_epochs + self.params.body_epochs

    def local_update(self, model: nn.Module, ctx: RunContext, k: int, r: int, lr: float,
                     global_state: State, personal: State) -> tuple[State, State, LocalStats]:
        p, data, idx = self.params, ctx.data, ctx.clients[k]
        model.load_state_dict({**global_state, **personal})
        head = self.head_keys(model)
        body = {name for name, _ in model.named_parameters() if name not in head}
        with frozen(model, body):
            train_local(model, data, idx, ctx.train, lr, p.head_epochs,
                        ctx.streams.torch(f"head/r{r}/c{k}"))
        with frozen(model, head):
            stats = train_local(model, data, idx, ctx.train, lr, p.body_epochs,
                                ctx.streams.torch(f"batches/r{r}/c{k}"))
        return (*self.split(model), stats)
