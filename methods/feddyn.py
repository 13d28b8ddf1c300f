"""FedDyn (Acar et al., "Federated Learning Based on Dynamic Regularization", ICLR 2021,
Algorithm 1).

Client k, from the server's weights theta^{t-1}, minimises (Alg. 1, line 6)
    R_k(theta) = L_k(theta) - <g_k, theta> + (alpha / 2) ||theta - theta^{t-1}||^2,
where g_k = grad L_k(theta_k^{t-1}) is its state (zero before its first round): every local
step's gradient gains  -g_k + alpha (theta - theta^{t-1}),  and the sum is clipped to norm
`max_grad_norm` as in the authors' code (without it the loss blows up on some seeds; FL-bench
issues 133 and 169). After training, theta_k^t, the client updates (line 7)
    g_k <- g_k - alpha (theta_k^t - theta^{t-1}).
The server keeps h (zero at first) and, over the round's clients P_t of m clients in all,
    h^t = h^{t-1} - alpha (1 / m) sum_{k in P_t} (theta_k^t - theta^{t-1})       (line 9)
    theta^t = (1 / |P_t|) sum_{k in P_t} theta_k^t - h^t / alpha                 (line 10)
(1 / m, not 1 / |P_t|, in h; the plain mean of the clients' weights, as in the paper;
subtracting h / alpha, not adding it: a wrong server-state update is PFLlib issue 29).
Batch-norm buffers are averaged by sample count as in FedAvg. The paper tunes alpha in
{0.1, 0.01, 0.001}; 0.01 is the default of the frameworks.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .training import LocalStats, TrainHooks
from .weight_averaging import State, WeightAveraging, WeightedMean


class DynamicHooks(TrainHooks):
    def __init__(self, alpha: float, anchor: list[torch.Tensor], g_k: list[torch.Tensor],
                 max_norm: float):
        self.alpha, self.anchor, self.g_k, self.max_norm = alpha, anchor, g_k, max_norm

    def adjust_gradients(self, params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        for p, g, w0, gk in zip(params, grads, self.anchor, self.g_k):
            g.sub_(gk).add_(p - w0, alpha=self.alpha)
        if self.max_norm > 0:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g)
                                                         for g in grads]))
            scale = (self.max_norm / (norm + 1e-6)).clamp(max=1.0)
            for g in grads:
                g.mul_(scale)


@dataclass
class DynRound:
    weights: dict  # unweighted sum of the clients' parameters
    buffers: WeightedMean
    count: int = 0


class FedDyn(WeightAveraging):
    name = "feddyn"

    @dataclass(frozen=True)
    class Params:
        alpha: float = 0.01  # weight of the dynamic regulariser
        max_grad_norm: float = 10.0  # clip each local step's gradient (0: no clipping)

    def init_server(self, model: nn.Module, global_state: State) -> State:
        return {n: torch.zeros_like(global_state[n]) for n, _ in model.named_parameters()}  # h

    def init_client(self, global_state: State, server: State) -> State:
        return {n: torch.zeros_like(v) for n, v in server.items()}  # g_k

    def client_hooks(self, model, global_state: State, server: State, client: State):
        return DynamicHooks(self.params.alpha, [global_state[n] for n in server],
                            [client[n] for n in server], self.params.max_grad_norm)

    def client_message(self, model, global_state: State, server: State, client: State,
                       hooks: TrainHooks, stats: LocalStats, lr: float):
        state = {k: v.detach() for k, v in model.state_dict().items()}
        new_client = {n: client[n] - self.params.alpha * (state[n] - global_state[n])
                      for n in server}
        return state, new_client

    def start_round(self, global_state: State) -> DynRound:
        return DynRound({}, WeightedMean.like(global_state))

    def accumulate(self, acc: DynRound, msg: State, n_samples: int) -> None:
        acc.buffers.add(msg, n_samples)
        for name, v in msg.items():
            if v.is_floating_point():
                acc.weights[name] = acc.weights[name] + v if name in acc.weights else v.clone()
        acc.count += 1

    def aggregate(self, acc: DynRound, global_state: State, server: State, n_clients: int):
        alpha, m = self.params.alpha, acc.count
        h = {n: server[n] - alpha * (acc.weights[n] - m * global_state[n]) / n_clients
             for n in server}
        new = acc.buffers.result(global_state)  # buffers (and, replaced below, parameters)
        for n in server:
            new[n] = acc.weights[n] / m - h[n] / alpha
        return new, h
