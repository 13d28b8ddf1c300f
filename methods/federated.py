"""The round loop shared by the weight-averaging methods (FedAvg, FedProx, SCAFFOLD, ...).

The harness owns this loop and the per-client state; a method supplies both halves of its
algorithm through the hooks of `weight_averaging.WeightAveraging` (their contract is in that
module's docstring). Aggregation is streamed: a
client's message is folded into the round's accumulator as soon as it is made, so memory holds
one working model whatever the number of clients.
"""
from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from .base import MethodResult, RunContext, timed
from .checkpoints import resumable
from .privacy import RECEIVED, SHARED, ClassifierAudit, not_audited
from .results import MODEL, Metrics
from .communication import CommLog, tensor_bytes
from .evaluation import Diverged, Selection
from .dp import ClippedSum, DPSpent, account, account_clients
from .training import train_local, train_local_private
from .vectorized import load_client, train_clients

# `method` below is a weight_averaging.WeightAveraging; that module imports this one (the
# loop), never the other way round


def run_rounds(method: Any, ctx: RunContext) -> MethodResult:
    cfg = ctx.train
    n = len(ctx.clients)
    model = method.build_model(ctx)
    global_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    server = method.init_server(model, global_state)
    client_states: dict[int, dict] = {}  # per-client state (SCAFFOLD's c_i), owned here
    dp = ctx.dp
    schedule = client_schedule(ctx.streams.numpy("client_sampling"), n, cfg,
                               poisson=dp is not None and dp.level == "client")
    timings = {"train": 0.0, "aggregate": 0.0, "eval": 0.0}
    private = None
    if dp is not None:
        with timed(timings, "dp_accounting"):
            private = Private.plan(ctx, schedule)
    # the server's view for the membership audit: each client's returned model in the last
    # round it takes part in (what the server holds last of it); the images of every client
    # drawn now, so that the final global model (every client's view) is attacked on the same
    last_round = {k: r for r, chosen in enumerate(schedule) for k in chosen}
    returned = ClassifierAudit(ctx, range(n), "rounds")

    def on_trained(k: int, r: int, trained) -> None:
        if last_round[k] == r:
            with timed(timings, "privacy"):  # also counted in the round's "train"
                returned.observe(k, trained)

    selection, comm = Selection(ctx.data), CommLog()

    def save() -> dict:  # after a round: everything the rounds after it read
        return {"global": global_state, "server": server, "clients": client_states,
                "comm": comm, "timings": timings, "selection": selection.state(),
                "returned": returned.scores}

    def load(saved: dict) -> None:
        nonlocal global_state, server, client_states, comm, timings
        global_state, server = saved["global"], saved["server"]
        client_states, comm, timings = saved["clients"], saved["comm"], saved["timings"]
        selection.restore(saved["selection"])
        returned.scores = saved["returned"]
        model.load_state_dict(global_state)

    with ctx.progress(cfg.rounds, f"{method.name} rounds") as bar:
        for r in resumable(ctx.checkpoint, "rounds", cfg.rounds, save, load,
                           lambda done: f"round {done} of {cfg.rounds}", bar):
            chosen = schedule[r]
            lr = cfg.lr_at(r, cfg.rounds)
            with timed(timings, "train"):
                acc, losses = client_phase(method, model, ctx, chosen, r, lr, global_state,
                                           server, client_states, comm, on_trained,
                                           private=private)
            with timed(timings, "aggregate"):
                global_state, server = method.aggregate(acc, global_state, server, n)
                comm.end_round()
            try:
                with timed(timings, "eval"):
                    model.load_state_dict(global_state)
                    # no loss without clients (a DP round may sample none), none under DP
                    # (the clients' losses are not privatised: they are not released)
                    selection.observe(model, r + 1, bar,
                                      train_loss=float(np.mean(losses))
                                      if losses and private is None else None,
                                      lr=lr, bytes_cumulative=comm.per_round[-1])
            except Diverged:
                break  # the record keeps the best finite round and says where it diverged
    evaluation = selection.evaluation()
    with timed(timings, "privacy"):
        if evaluation.diverged_at is not None:
            privacy = not_audited(f"the run diverged at round {evaluation.diverged_at}, "
                                  "before the clients' last rounds")
        else:
            privacy = returned.result(RETURNED)
        received = returned.same_images("rounds/received")
        for k in sorted(last_round):  # a client never sampled has no members in the model
            received.observe(k, model)
        received = received.result("the final global model (every client receives it)")
    return MethodResult(Metrics.single(evaluation), selection.curves,
                        {MODEL: comm.summary(cfg.rounds)}, timings,
                        extra=method.extra(model), audit={SHARED: privacy, RECEIVED: received},
                        dp=private.spent if private is not None else None)


RETURNED = ("each client's trained model in the last round it takes part in, as the server "
            "receives it")


def client_schedule(sampler: np.random.Generator, n: int, cfg,
                    poisson: bool = False) -> list[list[int]]:
    """The clients of every round, drawn up front from the run's `client_sampling` stream (the
    same draws, in the same order, as one per round): round r's chosen clients, sorted.
    `client_fraction` of the clients each round (at least one); with `poisson` (DP at the
    client level, whose accountant assumes it), each client independently with probability
    `client_fraction`, so a round may have none."""
    if poisson:
        if cfg.client_fraction >= 1:
            return [list(range(n)) for _ in range(cfg.rounds)]
        return [np.flatnonzero(sampler.random(n) < cfg.client_fraction).tolist()
                for _ in range(cfg.rounds)]
    per_round = max(1, int(round(cfg.client_fraction * n)))
    return [np.sort(sampler.choice(n, per_round, replace=False)).tolist() if per_round < n
            else list(range(n)) for _ in range(cfg.rounds)]


@dataclass
class Private:
    """A DP run's noise, chosen by the accountant before the first round (methods/dp.py):
    per client at level example (`sigma[k]`, DP-SGD in its local steps), for the server at
    level client (`sigma["server"]`, DP-FedAvg's noised mean); `spent`: what the record
    keeps."""

    level: str
    clip: float
    sigma: dict
    spent: DPSpent
    expected_clients: float = 1.0  # level client: the mean's fixed denominator, q n

    @classmethod
    def plan(cls, ctx: RunContext, schedule: list[list[int]]) -> "Private":
        dp, cfg = ctx.dp, ctx.train
        if dp.level == "client":
            n, q = len(ctx.clients), min(1.0, cfg.client_fraction)
            spent = account(dp, [("server", q, cfg.rounds)])
            return cls(dp.level, dp.clip, {"server": spent.parties[0]["noise_multiplier"]},
                       spent, q * n)
        rounds = {k: sum(k in chosen for chosen in schedule) for k in range(len(ctx.clients))}
        spent, sigma = account_clients(dp, {k: (len(ctx.clients[k]), cfg.local_epochs * r)
                                            for k, r in rounds.items()
                                            if r and len(ctx.clients[k])}, cfg.batch_size)
        return cls(dp.level, dp.clip, sigma, spent)


def client_phase(method: Any, model, ctx: RunContext, chosen: list[int], r: int, lr: float,
                 global_state, server, client_states: dict, comm: CommLog,
                 on_trained: Callable[[int, int, Any], None] | None = None,
                 private: Private | None = None):
    """Round r's client half: every chosen client trains from the global weights and its
    message is folded into the round's accumulator, in the clients' order; `on_trained(k, r,
    model)` sees each client's trained model before its message is made. With DP at the
    client level the accumulator holds one message, DP-FedAvg's noised mean of the clipped
    updates. Returns (accumulator, client losses)."""
    down = method.download(global_state, server)
    acc = method.start_round(global_state)
    clipped = ClippedSum(global_state, private.clip) \
        if private is not None and private.level == "client" else None
    losses = []
    for k, trained, hooks, stats in _trained(method, model, ctx, chosen, r, lr, global_state,
                                             server, client_states, private):
        if on_trained is not None:
            on_trained(k, r, trained)
        msg, client_states[k] = method.client_message(
            trained, global_state, server, client_states[k], hooks, stats, lr)
        comm.client(tensor_bytes(down), tensor_bytes(msg))
        if clipped is not None:
            clipped.add(msg)
        else:
            method.accumulate(acc, msg, len(ctx.clients[k]))
        losses.append(stats.mean_loss)
    if clipped is not None:
        method.accumulate(acc, clipped.noisy_mean(private.sigma["server"],
                                                  private.expected_clients,
                                                  ctx.streams.torch(f"dp/server/r{r}")), 1)
    return acc, losses


def _trained(method, model, ctx: RunContext, chosen: list[int], r: int, lr: float,
             global_state, server, client_states, private: Private | None = None):
    """Yield (client, a model holding its trained weights, its hooks, its stats) in the
    clients' order, each trained one of three ways: one at a time; `ctx.clients_at_once` as
    one vectorised model (methods/vectorized.py: equal to float tolerance); or, on the CPU,
    `ctx.client_threads` at a time in threads, each on a copy of the model. Threads give
    bitwise the numbers of one at a time: a client's training reads only its own batches
    (its stream `batches/r{r}/c{k}`), its own hooks and the shared read-only data, and runs the
    same kernels at the same torch thread count; the messages are still made and summed in the
    clients' order. Only for methods that declare `vectorises_clients` (clients independent
    within a round). DP-SGD (`private` at level example) trains one client at a time or in
    threads, never vectorised."""
    independent = method.capabilities.vectorises_clients
    dp_sgd = private is not None and private.level == "example"
    at_once = ctx.clients_at_once if independent and not dp_sgd else 1
    threads = ctx.client_threads if independent and at_once == 1 and \
        ctx.data.device.type == "cpu" else 1

    def local(m, k, hooks, gen):
        if not dp_sgd:
            return train_local(m, ctx.data, ctx.clients[k], ctx.train, lr,
                               ctx.train.local_epochs, gen, hooks)
        return train_local_private(m, ctx.data, ctx.clients[k], ctx.train, lr,
                                   ctx.train.local_epochs, gen,
                                   ctx.streams.torch(f"dp/noise/r{r}/c{k}"), private.clip,
                                   private.sigma[k], hooks)

    if threads == 1:
        for group in _groups(chosen, at_once):
            for k, hooks, stats in _train_group(method, model, ctx, group, r, lr, global_state,
                                                server, client_states, local):
                yield k, model, hooks, stats
        return
    models = [model] + [copy.deepcopy(model) for _ in range(min(threads, len(chosen)) - 1)]
    # OpenMP's thread count is per thread: each client thread sets the run's for itself
    with ThreadPoolExecutor(len(models), thread_name_prefix="client",
                            initializer=torch.set_num_threads,
                            initargs=(torch.get_num_threads(),)) as pool:
        for group in _groups(chosen, len(models)):
            ready = []
            for k, m in zip(group, models):  # the group set up first, in the clients' order
                m.load_state_dict(global_state)
                if k not in client_states:
                    client_states[k] = method.init_client(global_state, server)
                ready.append((k, m, method.client_hooks(m, global_state, server,
                                                        client_states[k]),
                              ctx.streams.torch(f"batches/r{r}/c{k}")))
            started = [(k, m, hooks, pool.submit(local, m, k, hooks, gen))
                       for k, m, hooks, gen in ready]
            for k, m, hooks, future in started:
                yield k, m, hooks, future.result()


def _groups(clients: list[int], size: int) -> list[list[int]]:
    return [clients[i:i + size] for i in range(0, len(clients), size)]


def _train_group(method, model, ctx: RunContext, group: list[int], r: int, lr: float,
                 global_state, server, client_states, local):
    """Train the clients of `group` from the global weights; yield (client, hooks, stats)
    with `model` holding that client's trained weights. One client: `local(model, k, hooks,
    gen)` (the loop of `train_local`, or DP-SGD's); several: one vectorised model
    (methods/vectorized.py)."""
    cfg = ctx.train
    model.load_state_dict(global_state)
    hooks = []
    for k in group:
        if k not in client_states:
            client_states[k] = method.init_client(global_state, server)
        hooks.append(method.client_hooks(model, global_state, server, client_states[k]))
    gens = [ctx.streams.torch(f"batches/r{r}/c{k}") for k in group]
    if len(group) == 1:
        yield group[0], hooks[0], local(model, group[0], hooks[0], gens[0])
        return
    params, stats = train_clients(model, ctx.data, [ctx.clients[k] for k in group], cfg, lr,
                                  cfg.local_epochs, gens, hooks)
    for i, k in enumerate(group):
        load_client(model, params, i)
        yield k, hooks[i], stats[i]
