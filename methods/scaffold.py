"""SCAFFOLD, option II (Karimireddy et al., ICML 2020, Algorithm 1).

Client i, holding control variate c_i, receives the global weights x and the server variate c,
and takes K local steps  y <- y - lr * (g_i(y) - c_i + c). Option II then sets
    c_i+ = c_i - c + (x - y) / (K * lr),
and sends dy = y - x and dc = c_i+ - c_i. The server (global learning rate eta_g) sets
    x <- x + eta_g * mean_{i in S} dy_i,        c <- c + (1 / N) * sum_{i in S} dc_i
(N: all clients, S: this round's clients).

Under plain SGD, (x - y) / (K * lr) = mean_k g_i(y_k) - c_i + c exactly, so option II's c_i+
is the mean of the K raw minibatch gradients of the local run. We compute it in that form:
it is identical under plain SGD, and it stays correct under momentum and weight decay, where
the displacement form over-states the gradient by about 1 / (1 - momentum) (10x at 0.9), a
known cause of SCAFFOLD diverging in FL benchmarks. K is the number of steps actually taken.
Batch-norm buffers are averaged by sample count, as in FedAvg.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .training import LocalStats, TrainHooks
from .weight_averaging import State, WeightAveraging, WeightedMean


class ControlVariateHooks(TrainHooks):
    def __init__(self, c: list[torch.Tensor], c_i: list[torch.Tensor]):
        self.correction = [cg - ci for cg, ci in zip(c, c_i)]
        self.grad_sum = [torch.zeros_like(t) for t in c]

    def adjust_gradients(self, params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        for g, s, corr in zip(grads, self.grad_sum, self.correction):
            s.add_(g)  # the raw minibatch gradient g_i(y_k), before correction
            g.add_(corr)


@dataclass(frozen=True)
class ScaffoldServer:
    c: State  # server control variate, one tensor per model parameter (its names)


@dataclass(frozen=True)
class ScaffoldMessage:
    dy: State  # y - x, per parameter
    dc: State  # c_i+ - c_i, per parameter
    buffers: State  # batch-norm buffers, averaged as in FedAvg


@dataclass
class ScaffoldRound:
    dy: dict
    dc: dict
    buffers: WeightedMean
    count: int = 0  # clients of the round


class Scaffold(WeightAveraging):
    name = "scaffold"

    @dataclass(frozen=True)
    class Params:
        server_lr: float = 1.0  # eta_g

    def init_server(self, model: nn.Module, global_state: State) -> ScaffoldServer:
        return ScaffoldServer({n: torch.zeros_like(global_state[n])
                               for n, _ in model.named_parameters()})

    def download(self, global_state: State, server: ScaffoldServer):
        return {"weights": global_state, "c": server.c}

    def init_client(self, global_state: State, server: ScaffoldServer) -> State:
        return {n: torch.zeros_like(v) for n, v in server.c.items()}  # c_i

    def client_hooks(self, model, global_state, server: ScaffoldServer,
                     client: State) -> TrainHooks:
        return ControlVariateHooks(list(server.c.values()), [client[n] for n in server.c])

    def client_message(self, model, global_state, server: ScaffoldServer, client: State,
                       hooks: ControlVariateHooks, stats: LocalStats, lr: float):
        state = model.state_dict()
        steps = max(stats.steps, 1)
        dy, dc, new_client = {}, {}, {}
        for name, g_sum in zip(server.c, hooks.grad_sum):
            dy[name] = state[name].detach() - global_state[name]
            new_client[name] = g_sum / steps  # c_i+ (option II, see module docstring)
            dc[name] = new_client[name] - client[name]
        buffers = {k: v.detach() for k, v in state.items()
                   if k in global_state and k not in server.c}
        return ScaffoldMessage(dy, dc, buffers), new_client

    def start_round(self, global_state: State) -> ScaffoldRound:
        return ScaffoldRound({}, {}, WeightedMean.like(global_state))

    def accumulate(self, acc: ScaffoldRound, msg: ScaffoldMessage, n_samples: int) -> None:
        acc.buffers.add(msg.buffers, n_samples)
        for total, part in ((acc.dy, msg.dy), (acc.dc, msg.dc)):  # unweighted sums
            for name, v in part.items():
                total[name] = total[name] + v if name in total else v.clone()
        acc.count += 1

    def aggregate(self, acc: ScaffoldRound, global_state: State, server: ScaffoldServer,
                  n_clients: int):
        eta_g, m = self.params.server_lr, acc.count
        buffers = {k: v for k, v in global_state.items() if k not in acc.dy}
        new = {**acc.buffers.result(buffers),
               **{k: global_state[k] + eta_g * acc.dy[k] / m for k in acc.dy}}
        new = {k: new[k] for k in global_state}  # the model's own order
        c = {n: server.c[n] + acc.dc[n] / n_clients for n in server.c}
        return new, ScaffoldServer(c)
