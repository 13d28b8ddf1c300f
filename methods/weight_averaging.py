"""The base of the weight-averaging family (FedAvg, FedProx, SCAFFOLD, ...): the hooks that the
round loop (methods/federated.py) calls, with their contract. Adding a method means one module
with a subclass that overrides only what differs (docs/extending.md).

The harness owns the loop and everything stateful between calls: the global weights, client
sampling, each client's local training (methods/training.py, or vectorised, methods/
vectorized.py), the per-client states, byte counting, evaluation and validation-based
selection. A method owns both halves of its algorithm, as pure-ish functions of what they are
given: no state on the method object, so one object can serve any number of runs.

Per run:     model = build_model(ctx)                         the network that is federated
             server = init_server(model, global_state)
Per round:   down = download(global_state, server)            sent to every chosen client
             acc = start_round(global_state)
  per client k (from the global weights):
             state_k = init_client(global_state, server)      on k's first round only
             hooks = client_hooks(model, global_state, server, state_k)
             ... local training with `hooks` (TrainHooks.adjust_gradients per step) ...
             msg, state_k = client_message(model, global_state, server, state_k, hooks,
                                           stats, lr)         msg is sent up
             accumulate(acc, msg, n_k)                        streamed: msg is then dropped
             global_state, server = aggregate(acc, global_state, server, n_clients)

Messages and states are tensors, dicts of them or dataclasses of those (their bytes are
counted at their dtypes, methods/communication.py). The defaults below are FedAvg's: send the
trained weights, average them weighted by the clients' sample counts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .base import Capabilities, Method, MethodResult, RunContext
from .cost import Cost, Workload, classifier_training
from .federated import run_rounds
from .training import LocalStats, TrainHooks

State = dict[str, torch.Tensor]


@dataclass
class WeightedMean:
    """Streamed mean of state dicts weighted by sample counts: floating-point tensors are
    summed with weight n_k (in at least float32); other tensors (batch-norm's batch counter)
    take the last client's value."""

    sums: State
    weight: float = 0.0
    last: State = field(default_factory=dict)

    @classmethod
    def like(cls, state: State) -> "WeightedMean":
        return cls({k: torch.zeros_like(v, dtype=torch.promote_types(v.dtype, torch.float32))
                    for k, v in state.items() if v.is_floating_point()})

    def add(self, state: State, n_samples: int) -> None:
        for k, v in state.items():
            if k in self.sums:
                self.sums[k].add_(v, alpha=float(n_samples))
            else:
                self.last[k] = v.clone()
        self.weight += n_samples

    def result(self, like: State) -> State:
        """The mean, in the dtypes of `like` (only `like`'s keys)."""
        return {k: (self.sums[k] / self.weight).to(v.dtype) if k in self.sums else self.last[k]
                for k, v in like.items()}


class WeightAveraging(Method):
    # honours RunContext.clients_at_once (methods/vectorized.py); not for methods whose
    # hooks change the loss itself (TrainHooks.loss), whose clients then train one at a time.
    # DP-SGD in each client (methods/dp.py) privatises the cross-entropy's gradients, and the
    # hooks' gradient terms act on what it gives: post-processing. DP at the client level
    # (the server clips and noises each update) only where the message is the trained weights
    # and the aggregate their mean: FedAvg and FedProx declare it
    capabilities = Capabilities(vectorises_clients=True, dp_levels=("example",))

    def run(self, ctx: RunContext) -> MethodResult:
        return run_rounds(self, ctx)

    def cost(self, work: Workload) -> Cost:
        """Every round, the sampled clients' local epochs over their images (all clients'
        images at client_fraction 1) and one evaluation of the global model."""
        t = work.train
        return Cost(tuple(classifier_training(
            work, t.rounds * t.local_epochs, images=work.sizes["train"] * t.client_fraction,
            evaluations=t.rounds)))

    def build_model(self, ctx: RunContext) -> nn.Module:
        """The federated network: the table's classifier (MOON adds a projection head, FedAwS
        a cosine output layer; what `model(x)` returns is always the logits evaluated)."""
        return ctx.new_model()

    def extra(self, model: nn.Module) -> dict:
        """What the record keeps besides the metrics, from the final global model."""
        return {}

    # --- server half -------------------------------------------------------------------
    def init_server(self, model: nn.Module, global_state: State) -> Any:
        """What the server keeps between rounds besides the global weights."""
        return None

    def download(self, global_state: State, server: Any) -> Any:
        """What the server sends each client of a round."""
        return global_state

    def start_round(self, global_state: State) -> Any:
        return WeightedMean.like(global_state)

    def accumulate(self, acc: Any, msg: Any, n_samples: int) -> None:
        """Fold one client's message into the round's accumulator."""
        acc.add(msg, n_samples)

    def aggregate(self, acc: Any, global_state: State, server: Any,
                  n_clients: int) -> tuple[State, Any]:
        """The new global weights and server state (`n_clients`: all clients, sampled or not)."""
        return acc.result(global_state), server

    # --- client half -------------------------------------------------------------------
    def init_client(self, global_state: State, server: Any) -> Any:
        """A client's state before its first round (kept by the harness between rounds)."""
        return None

    def client_hooks(self, model: nn.Module, global_state: State, server: Any,
                     client: Any) -> TrainHooks:
        """Terms the method adds to the client's local steps; the default adds none."""
        return TrainHooks()

    def client_message(self, model: nn.Module, global_state: State, server: Any, client: Any,
                       hooks: TrainHooks, stats: LocalStats, lr: float) -> tuple[Any, Any]:
        """What the client sends up (default: its trained weights) and its new state."""
        return {k: v.detach() for k, v in model.state_dict().items()}, client
