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

from .fedavg import FedAvg, State
from .training import LocalStats, TrainHooks


class ControlVariateHooks(TrainHooks):
    def __init__(self, c: list[torch.Tensor], c_i: list[torch.Tensor]):
        self.correction = [cg - ci for cg, ci in zip(c, c_i)]
        self.grad_sum = [torch.zeros_like(t) for t in c]

    def adjust_gradients(self, params: list[torch.Tensor], grads: list[torch.Tensor]) -> None:
        for g, s, corr in zip(grads, self.grad_sum, self.correction):
            s.add_(g)  # the raw minibatch gradient g_i(y_k), before correction
            g.add_(corr)


class Scaffold(FedAvg):
    name = "scaffold"

    @dataclass(frozen=True)
    class Params:
        server_lr: float = 1.0  # eta_g

    def init_server(self, model: nn.Module, global_state: State) -> State:
        self._param_names = [n for n, _ in model.named_parameters()]
        return {f"c.{n}": torch.zeros_like(global_state[n]) for n in self._param_names}

    def download(self, global_state: State, server: State) -> State:
        return {**global_state, **server}

    def init_client(self, global_state: State, server: State) -> dict:
        return {k: torch.zeros_like(v) for k, v in server.items()}

    def client_hooks(self, model, global_state, server, client) -> TrainHooks:
        keys = [f"c.{n}" for n in self._param_names]
        return ControlVariateHooks([server[k] for k in keys], [client[k] for k in keys])

    def client_message(self, model, global_state, server, client, hooks, stats: LocalStats, lr):
        state = model.state_dict()
        steps = max(stats.steps, 1)
        msg, new_client = {}, {}
        for name, g_sum in zip(self._param_names, hooks.grad_sum):
            msg[f"dy.{name}"] = state[name].detach() - global_state[name]
            new_client[f"c.{name}"] = g_sum / steps  # c_i+ (option II, see module docstring)
            msg[f"dc.{name}"] = new_client[f"c.{name}"] - client[f"c.{name}"]
        for name, v in state.items():  # buffers travel as in FedAvg
            if name not in global_state or name in self._param_names:
                continue
            msg[f"buf.{name}"] = v.detach()
        return msg, new_client

    def start_round(self, global_state: State) -> dict:
        acc = super().start_round(global_state)
        acc["count"] = 0
        return acc

    def accumulate(self, acc: dict, msg: State, n_samples: int) -> None:
        for key, v in msg.items():
            kind, name = key.split(".", 1)
            if kind == "buf":
                if name in acc["sum"]:
                    acc["sum"][name].add_(v, alpha=float(n_samples))
                else:
                    acc["other"][name] = v.clone()
            else:  # dy, dc: unweighted sums
                target = acc.setdefault(kind, {})
                target[name] = target[name] + v if name in target else v.clone()
        acc["weight"] += n_samples
        acc["count"] += 1

    def aggregate(self, acc: dict, global_state: State, server: State, n_clients: int):
        eta_g, m = self.params.server_lr, acc["count"]
        new = {}
        for k, v in global_state.items():
            if k in acc["dy"]:
                new[k] = v + eta_g * acc["dy"][k] / m
            elif k in acc["sum"]:
                new[k] = (acc["sum"][k] / acc["weight"]).to(v.dtype)
            else:
                new[k] = acc["other"][k]
        new_server = {f"c.{n}": server[f"c.{n}"] + acc["dc"][n] / n_clients
                      for n in self._param_names}
        return new, new_server
