"""The base of the personalised methods (Ditto, FedRep, FedPer): every client ends with a model
of its own, and that model is what is evaluated.

Per round, each chosen client k makes one update from the global weights and what it keeps
of its own (`local_update`: Ditto's personal model, FedRep's and FedPer's head), and sends a
state dict of the keys the server averages (`shared_keys`: every weight for Ditto, the body
for FedRep and FedPer); the server takes their sample-weighted mean, FedAvg's. After every
round each client's model (`personal_model`) is evaluated on the validation and test sets,
and the run reports as local-only does (methods/local_only.py): the mean over clients of
their test metrics with each client's own under `clients`, so that the per-client accuracy
(methods/evaluation.py, `per_client`: each client's model on its own label distribution, the
protocol of every method) reads each client's own model. One round is selected for all
clients, on what personalisation optimises: the mean over clients of each client's validation
accuracy on its own label distribution (ties: lower mean validation loss, then the earlier
round; `ClientSelection`); a global validation accuracy would favour the rounds where the
personal models are least personal. Clients train one at a time (a client's model is made of its own state, so
they are not vectorised), without DP.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from .base import Capabilities, Method, MethodResult, RunContext, timed
from .checkpoints import resumable
from .communication import CommLog, tensor_bytes
from .cost import Cost, Workload, classifier_training
from .evaluation import Diverged, Selection, classification_metrics, per_client, predict_proba
from .federated import client_schedule
from .local_only import _summarise as summarise_clients  # local-only reports the same way
from .models import output_layer
from .privacy import RECEIVED, SHARED, ClassifierAudit, not_audited
from .results import MODEL, Metrics
from .training import LocalStats
from .weight_averaging import State, WeightedMean


class Personalised(Method):
    capabilities = Capabilities()
    # whether what a client sends is a whole classifier (the membership audit attacks it)
    sends_whole_model = True

    # --- what a subclass gives ---------------------------------------------------------
    def shared_keys(self, model: nn.Module) -> list[str]:
        """The state-dict keys a client sends and the server averages."""
        return list(model.state_dict())

    def init_personal(self, model: nn.Module, global_state: State) -> State:
        """What client k keeps of its own before its first round."""
        raise NotImplementedError

    def local_update(self, model: nn.Module, ctx: RunContext, k: int, r: int, lr: float,
                     global_state: State, personal: State) -> tuple[State, State, LocalStats]:
        """Client k's round r: (the weights it sends, what it keeps, the stats of its
        training); `model` is a working copy it may overwrite."""
        raise NotImplementedError

    def personal_model(self, global_state: State, personal: State) -> State:
        """The state dict of client k's own model."""
        return {**global_state, **personal}

    def local_epochs(self, ctx_train) -> float:
        """Epochs over a client's images per round (for the cost)."""
        return ctx_train.local_epochs

    # --- the harness ----------------------------------------------------------------------
    def cost(self, work: Workload) -> Cost:
        """Every round, the chosen clients' epochs over their images and one evaluation of
        every client's model."""
        t = work.train
        return Cost(tuple(classifier_training(
            work, t.rounds * self.local_epochs(t), images=work.sizes["train"] * t.client_fraction,
            evaluations=t.rounds * work.n_clients)))

    def run(self, ctx: RunContext) -> MethodResult:
        return run_personalised(self, ctx)


def run_personalised(method: Personalised, ctx: RunContext) -> MethodResult:
    cfg, n = ctx.train, len(ctx.clients)
    model = ctx.new_model()
    global_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    shared = method.shared_keys(model)
    # each client's own state lives in host memory (100 clients' ResNet-50 would not fit a
    # GPU beside the run), copied to the device by load_state_dict when the client trains
    personal = {k: to_host(method.init_personal(model, global_state)) for k in range(n)}
    schedule = client_schedule(ctx.streams.numpy("client_sampling"), n, cfg)
    last_round = {k: r for r, chosen in enumerate(schedule) for k in chosen}
    returned = ClassifierAudit(ctx, range(n), "rounds")
    timings = {"train": 0.0, "aggregate": 0.0, "eval": 0.0}
    labels = ctx.data.y_train.cpu().numpy()
    counts = [np.bincount(labels[idx.cpu().numpy()], minlength=ctx.data.info.n_classes).tolist()
              for idx in ctx.clients]
    selection, comm = ClientSelection(ctx.data, counts), CommLog()

    def save() -> dict:
        return {"global": global_state, "personal": personal, "comm": comm,
                "timings": timings, "selection": selection.state(),
                "returned": returned.scores}

    def load(saved: dict) -> None:
        nonlocal global_state, personal, comm, timings
        global_state, personal = saved["global"], saved["personal"]
        comm, timings = saved["comm"], saved["timings"]
        selection.restore(saved["selection"])
        returned.scores = saved["returned"]

    with ctx.progress(cfg.rounds, f"{method.name} rounds") as bar:
        for r in resumable(ctx.checkpoint, "rounds", cfg.rounds, save, load,
                           lambda done: f"round {done} of {cfg.rounds}", bar):
            lr = cfg.lr_at(r, cfg.rounds)
            down = {k: global_state[k] for k in shared}
            acc, losses = WeightedMean.like(down), []
            with timed(timings, "train"):
                for k in schedule[r]:
                    sent, kept, stats = method.local_update(
                        model, ctx, k, r, lr, global_state, personal[k])
                    personal[k] = to_host(kept)
                    comm.client(tensor_bytes(down), tensor_bytes(sent))
                    acc.add(sent, len(ctx.clients[k]))
                    losses.append(stats.mean_loss)
                    if method.sends_whole_model and last_round[k] == r:
                        model.load_state_dict(sent)
                        with timed(timings, "privacy"):
                            returned.observe(k, model)
            with timed(timings, "aggregate"):
                if schedule[r]:
                    global_state = {**global_state, **acc.result(down)}
                comm.end_round()
            try:
                with timed(timings, "eval"):
                    entry = evaluate_clients(method, model, ctx, global_state, personal, r + 1,
                                             selection, train_loss=float(np.mean(losses))
                                             if losses else None, lr=lr,
                                             bytes_cumulative=comm.per_round[-1])
            except Diverged:
                break
            bar.update(1)
            bar.log(selection.last_step())
            bar.set_postfix_str(f"val acc {entry['val']['accuracy']:.3f}")
    evaluation = selection.evaluation()
    if not method.sends_whole_model:
        audit = {SHARED: not_audited("clients send a representation without its output layer; "
                                     "the classifier audit needs a whole model")}
    elif evaluation.diverged_at is not None:
        audit = {SHARED: not_audited(f"the run diverged at round {evaluation.diverged_at}")}
    else:
        with timed(timings, "privacy"):
            received = returned.same_images("rounds/received")
            model.load_state_dict(global_state)
            for k in sorted(last_round):
                received.observe(k, model)
            audit = {SHARED: returned.result("each client's trained copy of the global model in "
                                             "the last round it takes part in, as the server "
                                             "receives it"),
                     RECEIVED: received.result("the final global model (every client receives "
                                               "it)")}
    # what `bench table --tune` compares: each client's validation accuracy on its own labels
    return MethodResult(Metrics.single(evaluation), selection.curves,
                        {MODEL: comm.summary(cfg.rounds)}, timings,
                        extra={"tuned_on": "client_accuracy"}, audit=audit)


def evaluate_clients(method: Personalised, model: nn.Module, ctx: RunContext,
                     global_state: State, personal: dict[int, State], step: int,
                     selection: Selection, **extra: Any) -> dict:
    """Evaluate every client's own model on the validation and test sets and record the mean
    over clients (with each client's entry) as round `step`; raises Diverged on a non-finite
    prediction."""
    d = ctx.data
    n_classes = d.info.n_classes
    y_val, y_test = d.y_val.cpu().numpy(), d.y_test.cpu().numpy()
    entries = []
    for k in range(len(ctx.clients)):
        model.load_state_dict(method.personal_model(global_state, personal[k]))
        p_val, p_test = predict_proba(model, d, d.x_val), predict_proba(model, d, d.x_test)
        selection.check_finite(step, p_val, p_test)
        val = classification_metrics(p_val, y_val, n_classes, detail=False)
        test = classification_metrics(p_test, y_test, n_classes)
        entries.append({**test, "round": step, "val": val})
    summary = summarise_clients(entries)
    test = {k: v for k, v in summary.items() if k != "val"}
    return selection.record(step, summary["val"], test, **extra)


class ClientSelection(Selection):
    """Selection by the mean over clients of their validation accuracy on their own label
    distributions (`per_client` of the validation entry, whose `clients` hold each client's
    model's recalls), then the lower mean validation loss, then the earlier round."""

    def __init__(self, data, client_class_counts: list[list[int]]):
        super().__init__(data)
        self.counts = client_class_counts

    def record(self, step: int, val: dict, test: dict, **extra) -> dict:
        best, best_key = self.best, self._best_key
        entry = super().record(step, val, test, **extra)
        own = (per_client(val, self.counts) or {}).get("accuracy", {}).get("mean")
        key = (float("-inf") if own is None else own, -val["loss"])
        self.best, self._best_key = best, best_key
        if self._best_key is None or key > self._best_key:
            self.best, self._best_key = entry, key
        return entry


class PersonalHead(Personalised):
    """FedRep's and FedPer's split: the output layer (`models.output_layer`) is each client's
    own, the rest (the body) is sent and averaged."""

    sends_whole_model = False

    @staticmethod
    def head_keys(model: nn.Module) -> set[str]:
        name, _ = output_layer(model)
        return {k for k in model.state_dict() if k.startswith(name + ".")}

    def shared_keys(self, model: nn.Module) -> list[str]:
        head = self.head_keys(model)
        return [k for k in model.state_dict() if k not in head]

    def init_personal(self, model: nn.Module, global_state: State) -> State:
        return {k: global_state[k].clone() for k in self.head_keys(model)}

    def split(self, model: nn.Module) -> tuple[State, State]:
        """(the body it sends, the head it keeps), copied from `model`."""
        head, state = self.head_keys(model), model.state_dict()
        return ({k: v.detach().clone() for k, v in state.items() if k not in head},
                {k: state[k].detach().clone() for k in head})


def frozen(model: nn.Module, names: set[str]):
    """A context in which the parameters named in `names` take no gradient, so that an
    optimiser leaves them exactly as they are (no momentum, no weight decay)."""
    return _Frozen([p for name, p in model.named_parameters() if name in names])


class _Frozen:
    def __init__(self, params: list[torch.Tensor]):
        self.params = params
        self.before = [p.requires_grad for p in params]

    def __enter__(self):
        for p in self.params:
            p.requires_grad_(False)

    def __exit__(self, *exc):
        for p, flag in zip(self.params, self.before):
            p.requires_grad_(flag)


def to_host(state: State) -> State:
    """A state dict's tensors in host memory (copies where they are on a device)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
