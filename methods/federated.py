"""The round loop shared by the weight-averaging methods (FedAvg, FedProx, SCAFFOLD).

The harness owns this loop and the per-client state; a method supplies both halves of its
algorithm through the methods of `fedavg.FedAvg` it overrides. Aggregation is streamed: a
client's message is folded into the round's accumulator as soon as it is made, so memory holds
one working model whatever the number of clients.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from .base import MethodResult, RunContext
from .communication import CommLog, tensor_bytes
from .evaluation import Diverged, Selection
from .training import train_local

if TYPE_CHECKING:
    from .fedavg import FedAvg


def run_rounds(method: "FedAvg", ctx: RunContext) -> MethodResult:
    cfg = ctx.train
    n = len(ctx.clients)
    model = ctx.new_model()
    global_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    server = method.init_server(model, global_state)
    client_states: dict[int, dict] = {}  # per-client state (SCAFFOLD's c_i), owned here
    sampler = ctx.streams.numpy("client_sampling")
    per_round = max(1, int(round(cfg.client_fraction * n)))
    sizes = [len(c) for c in ctx.clients]
    selection, comm = Selection(ctx.data), CommLog()
    timings = {"train": 0.0, "aggregate": 0.0, "eval": 0.0}
    with ctx.progress(cfg.rounds, f"{method.name} rounds") as bar:
        for r in range(cfg.rounds):
            lr = cfg.lr_at(r, cfg.rounds)
            chosen = np.sort(sampler.choice(n, per_round, replace=False)) if per_round < n \
                else np.arange(n)
            down = method.download(global_state, server)
            acc = method.start_round(global_state)
            losses = []
            t0 = time.perf_counter()
            for k in chosen.tolist():
                if k not in client_states:
                    client_states[k] = method.init_client(global_state, server)
                model.load_state_dict(global_state)
                hooks = method.client_hooks(model, global_state, server, client_states[k])
                stats = train_local(model, ctx.data, ctx.clients[k], cfg, lr, cfg.local_epochs,
                                    ctx.streams.torch(f"batches/r{r}/c{k}"), hooks)
                msg, client_states[k] = method.client_message(
                    model, global_state, server, client_states[k], hooks, stats, lr)
                comm.client(tensor_bytes(down), tensor_bytes(msg))
                method.accumulate(acc, msg, sizes[k])
                losses.append(stats.mean_loss)
            t1 = time.perf_counter()
            global_state, server = method.aggregate(acc, global_state, server, n)
            comm.end_round()
            t2 = time.perf_counter()
            model.load_state_dict(global_state)
            timings["train"] += t1 - t0
            timings["aggregate"] += t2 - t1
            try:
                entry = selection.evaluate(model, r + 1, train_loss=float(np.mean(losses)),
                                           lr=lr, bytes_cumulative=comm.per_round[-1])
            except Diverged:
                break  # the record keeps the best finite round and says where it diverged
            finally:
                timings["eval"] += time.perf_counter() - t2
            bar.update(1)
            bar.set_postfix_str(f"val acc {entry['val']['accuracy']:.3f}")
    return MethodResult(selection.metrics(), selection.curves, comm.summary(cfg.rounds), timings)
