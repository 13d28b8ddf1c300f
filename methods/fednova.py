"""FedNova (Wang et al., "Tackling the Objective Inconsistency Problem in Heterogeneous
Federated Optimization", NeurIPS 2020, Eq. 6-7 and Appendix with momentum).

Clients that take different numbers of local steps tau_k pull FedAvg towards the objective of
the clients that step most. FedNova normalises each client's update by the norm of its
aggregation vector a_k before averaging. For SGD with momentum rho, after tau_k steps
    ||a_k||_1 = [tau_k - rho (1 - rho^tau_k) / (1 - rho)] / (1 - rho)    (rho = 0: tau_k)
and, with p_k = n_k / sum_{j in P_t} n_j over the round's clients,
    d_k = (theta^{t-1} - theta_k^t) / ||a_k||_1           (the normalised update)
    tau_eff = sum_k p_k ||a_k||_1
    theta^t = theta^{t-1} - tau_eff * sum_k p_k d_k.
When every client takes the same steps this is FedAvg exactly (tests/test_methods_math.py).
No hyperparameter; NIID-Bench's fourth algorithm. Batch-norm buffers are averaged by sample
count as in FedAvg.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .training import LocalStats, TrainHooks
from .weight_averaging import State, WeightAveraging, WeightedMean


def aggregation_norm(steps: int, momentum: float) -> float:
    """||a_k||_1 for `steps` local steps of SGD with `momentum` (FedNova, Appendix)."""
    if momentum == 0:
        return float(steps)
    rho = momentum
    return (steps - rho * (1 - rho ** steps) / (1 - rho)) / (1 - rho)


@dataclass(frozen=True)
class NovaMessage:
    d: State  # the normalised update, per parameter
    a_norm: torch.Tensor  # ||a_k||_1, one float64 number
    buffers: State


@dataclass
class NovaRound:
    d: dict  # parameter name -> sum_k n_k d_k
    buffers: WeightedMean
    a: float = 0.0  # sum_k n_k ||a_k||_1
    n: float = 0.0  # sum_k n_k


class FedNova(WeightAveraging):
    name = "fednova"

    @dataclass(frozen=True)
    class Params:
        pass

    def client_message(self, model: nn.Module, global_state: State, server, client,
                       hooks: TrainHooks, stats: LocalStats, lr: float):
        state = model.state_dict()
        a = aggregation_norm(max(stats.steps, 1), stats.momentum)
        params = {n for n, _ in model.named_parameters()}
        d = {n: (global_state[n] - state[n].detach()) / a for n in params}
        buffers = {k: v.detach() for k, v in state.items() if k not in params}
        return NovaMessage(d, torch.tensor(a, dtype=torch.float64), buffers), client

    def start_round(self, global_state: State) -> NovaRound:
        return NovaRound({}, WeightedMean.like(global_state))

    def accumulate(self, acc: NovaRound, msg: NovaMessage, n_samples: int) -> None:
        for name, v in msg.d.items():
            part = v.to(torch.promote_types(v.dtype, torch.float32)) * n_samples
            acc.d[name] = acc.d[name] + part if name in acc.d else part
        acc.a += float(msg.a_norm) * n_samples
        acc.n += n_samples
        acc.buffers.add(msg.buffers, n_samples)

    def aggregate(self, acc: NovaRound, global_state: State, server, n_clients: int):
        tau_eff = acc.a / acc.n
        new = acc.buffers.result({k: v for k, v in global_state.items() if k not in acc.d})
        for k, d_sum in acc.d.items():
            new[k] = (global_state[k] - tau_eff * d_sum / acc.n).to(global_state[k].dtype)
        return {k: new[k] for k in global_state}, server
