"""FedAvgM: FedAvg with server momentum (Hsu, Qi and Brown, "Measuring the Effects of
Non-Identical Data Distribution for Federated Visual Classification", arXiv 1909.06335, 2019,
Sec. 3; the FedAvgM of Reddi et al., ICLR 2021, Sec. 5).

Clients train from x_t as in FedAvg; the server treats FedAvg's step as a gradient and adds
momentum to it:
    Delta_t = x_t - sum_k (n_k / n) x_k           (FedAvg's step, negated)
    v_t = beta v_{t-1} + Delta_t,  v_{-1} = 0     (Hsu et al., Sec. 3)
    x_{t+1} = x_t - eta v_t
beta = 0 and eta = 1 give FedAvg exactly. The momentum is kept for the network's parameters;
buffers (batch-norm statistics) take FedAvg's mean, as in the adaptive servers
(methods/fedopt.py). Hsu et al. apply the momentum with the server step eta = 1 (their
effective rate eta / (1 - beta) is the clients' learning rate scaled by 1 / (1 - beta));
Reddi et al.'s FedAvgM adds a server learning rate eta and fixes beta = 0.9. Here beta = 0.5
and eta = 1, Hsu et al.'s server step: of beta in {0.5, 0.9} x eta in {0.1, 0.5, 1.0}, the
best validation accuracy under iid and under silos on digits, seed 0 (99.5 / 94.0 %, tied
with eta = 0.5 in both, the lower validation loss choosing 1; beta = 0.9 gave 98.1 / 80.6 at
eta 0.1, 99.1 / 93.5 at 0.5, 99.1 / 55.6 at 1.0: over 15 rounds a momentum of 0.9 has little
time to build and then overshoots); 2026-12-05, `python -m bench run --methods fedavgm
--splits iid,silos --set fedavgm.beta=0.5,0.9 --set fedavgm.server_lr=0.1,0.5,1.0`, then
`bench table --tune`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .weight_averaging import State, WeightAveraging


class FedAvgM(WeightAveraging):
    name = "fedavgm"

    @dataclass(frozen=True)
    class Params:
        beta: float = 0.5  # server momentum
        server_lr: float = 1.0  # eta (Hsu et al.'s is 1)

        def __post_init__(self):
            if not 0 <= self.beta < 1:
                raise ValueError(f"fedavgm.beta must be in [0, 1), got {self.beta}")
            if not self.server_lr > 0:
                raise ValueError(f"fedavgm.server_lr must be > 0, got {self.server_lr}")

    def init_server(self, model: nn.Module, global_state: State) -> State:
        return {n: torch.zeros_like(global_state[n]) for n, _ in model.named_parameters()}

    def aggregate(self, acc, global_state: State, server: State,
                  n_clients: int) -> tuple[State, State]:
        p = self.params
        new = acc.result(global_state)  # FedAvg's sample-weighted mean (and buffers)
        velocity = {}
        for n, x in ((n, global_state[n]) for n in server):
            velocity[n] = p.beta * server[n] + (x - new[n])
            new[n] = x - p.server_lr * velocity[n]
        return new, velocity
