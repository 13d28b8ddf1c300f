"""FedAvg (McMahan et al., AISTATS 2017, Algorithm 1).

Client k starts from the global weights w_t and runs E local epochs of SGD; the server sets
    w_{t+1} = sum_k n_k w_{t+1}^k / sum_k n_k        (n_k: client k's training samples)
over the clients of the round. Buffers (batch-norm statistics) are averaged the same way;
integer buffers (batch counters) take the last client's value.

This class holds both halves of the algorithm; FedProx and SCAFFOLD override parts of it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .base import MethodResult, RunContext
from .federated import run_rounds
from .training import LocalStats, TrainHooks

State = dict[str, torch.Tensor]


class FedAvg:
    name = "fedavg"
    uses_split = True
    vectorises_clients = True  # honours RunContext.clients_at_once (methods/vectorized.py)

    @dataclass(frozen=True)
    class Params:
        pass

    def __init__(self, params=None):
        self.params = params if params is not None else self.Params()

    def run(self, ctx: RunContext) -> MethodResult:
        return run_rounds(self, ctx)

    # --- server half -------------------------------------------------------------------
    def init_server(self, model: nn.Module, global_state: State) -> State:
        return {}

    def download(self, global_state: State, server: State) -> State:
        """What the server sends each client of a round."""
        return global_state

    def start_round(self, global_state: State) -> dict:
        return {"sum": {k: torch.zeros_like(v, dtype=torch.promote_types(v.dtype, torch.float32))
                        for k, v in global_state.items() if v.is_floating_point()},
                "weight": 0.0, "other": {}}

    def accumulate(self, acc: dict, msg: State, n_samples: int) -> None:
        for k, v in msg.items():
            if k in acc["sum"]:
                acc["sum"][k].add_(v, alpha=float(n_samples))
            else:
                acc["other"][k] = v.clone()
        acc["weight"] += n_samples

    def aggregate(self, acc: dict, global_state: State, server: State, n_clients: int):
        new = {k: (acc["sum"][k] / acc["weight"]).to(v.dtype) if k in acc["sum"]
               else acc["other"][k] for k, v in global_state.items()}
        return new, server

    # --- client half -------------------------------------------------------------------
    def init_client(self, global_state: State, server: State) -> dict:
        return {}

    def client_hooks(self, model: nn.Module, global_state: State, server: State,
                     client: dict) -> TrainHooks:
        return TrainHooks()

    def client_message(self, model: nn.Module, global_state: State, server: State, client: dict,
                       hooks: TrainHooks, stats: LocalStats, lr: float) -> tuple[State, dict]:
        """The trained weights (what is sent up) and the client's new state."""
        return {k: v.detach() for k, v in model.state_dict().items()}, client
