"""FedProx (Li et al., MLSys 2020, Eq. 2).

Client k minimises  F_k(w) + (mu / 2) * ||w - w_t||^2  around the global weights w_t; the
proximal term's gradient mu * (w - w_t) is added to every local step's gradient. The server
is FedAvg's. The paper's baselines use mu in {0.001, 0.01, 0.1}.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .training import TrainHooks
from .base import Capabilities
from .weight_averaging import State, WeightAveraging


class ProximalHooks(TrainHooks):
    def __init__(self, mu: float, anchor: list[torch.Tensor]):
        self.mu, self.anchor = mu, anchor

    def adjust_gradients(self, params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        for p, g, w0 in zip(params, grads, self.anchor):
            g.add_(p - w0, alpha=self.mu)


class FedProx(WeightAveraging):
    name = "fedprox"
    # its message is the trained weights and the server averages them: DP-FedAvg's clipped,
    # noised mean of updates replaces the mean (methods/dp.py)
    capabilities = Capabilities(vectorises_clients=True, dp_levels=("example", "client"))

    @dataclass(frozen=True)
    class Params:
        mu: float = 0.01  # weight of the proximal term

        def __post_init__(self):
            if not self.mu >= 0:  # a negative weight rewards drifting from the global model
                raise ValueError(f"fedprox.mu must be >= 0, got {self.mu}")

    def client_hooks(self, model: nn.Module, global_state: State, server,
                     client) -> TrainHooks:
        anchor = [global_state[name] for name, _ in model.named_parameters()]
        return ProximalHooks(self.params.mu, anchor)
