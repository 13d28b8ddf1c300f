"""Local-only training: each client trains alone on its own data, the lower bound.

Client k trains a fresh model for rounds x local_epochs epochs (the same passes as in FL) and
is evaluated on the global validation and test sets after every local_epochs epochs; its
reported round is chosen on validation data. The run's metrics are the mean over clients of
their selected test metrics, with the spread (std, min, max) and every client's numbers, and
the mean of their validation metrics (`val`, as for every method).
Nothing is communicated.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import Method, MethodResult, RunContext, timed
from .checkpoints import resumable
from .cost import Cost, Workload, classifier_training
from .privacy import SHARED, not_audited
from .results import MODEL, Communication, Evaluation, Metrics
from .evaluation import Diverged, Selection
from .training import train_local

SCALARS = ("accuracy", "balanced_accuracy", "auroc", "f1_macro", "loss")


class LocalOnly(Method):
    name = "local_only"

    @dataclass(frozen=True)
    class Params:
        pass

    def cost(self, work: Workload) -> Cost:
        """Every client trains on its own images for rounds x local_epochs epochs and is
        evaluated after each of its rounds."""
        t = work.train
        return Cost(tuple(classifier_training(work, t.rounds * t.local_epochs,
                                              evaluations=work.n_clients * t.rounds)))

    def run(self, ctx: RunContext) -> MethodResult:
        cfg, rounds = ctx.train, ctx.train.rounds
        selections: list[Selection] = []  # the finished clients'
        timings = {"train": 0.0, "eval": 0.0}
        model, sel = None, None  # the client in training's

        def save() -> dict:
            return {"timings": timings, "done": [s.state() for s in selections],
                    "model": model.state_dict(), "selection": sel.state()}

        def load(saved: dict) -> None:
            nonlocal timings, selections, model, sel
            timings = saved["timings"]
            selections = [Selection(ctx.data).restore(s) for s in saved["done"]]
            model = ctx.new_model()
            model.load_state_dict(saved["model"])
            sel = Selection(ctx.data).restore(saved["selection"])

        def at(done: int) -> str:
            return f"client {(done - 1) // rounds}, round {(done - 1) % rounds + 1} of {rounds}"

        # one step per (client, round), client after client
        with ctx.progress(len(ctx.clients) * rounds, f"{self.name} client rounds") as bar:
            for step in resumable(ctx.checkpoint, "clients", len(ctx.clients) * rounds, save,
                                  load, at, bar):
                k, r = divmod(step, rounds)
                if r == 0:  # every client starts from the same initialisation
                    model, sel = ctx.new_model(), Selection(ctx.data)
                if sel.diverged_at is None:  # a diverged client trains no further
                    with timed(timings, "train"):
                        stats = train_local(model, ctx.data, ctx.clients[k], cfg,
                                            cfg.lr_at(r, rounds), cfg.local_epochs,
                                            ctx.streams.torch(f"batches/r{r}/c{k}"))
                    try:
                        with timed(timings, "eval"):
                            sel.observe(model, r + 1, bar, context={"client": k},
                                        train_loss=stats.mean_loss)
                    except Diverged:
                        pass
                if r == rounds - 1:
                    selections.append(sel)
        metrics = {part: _summarise([getattr(s, part) for s in selections])
                   for part in ("best", "last")}
        longest = max(selections, key=lambda s: len(s.curves["round"]))
        curves = {"round": longest.curves["round"]}
        for key in longest.curves:
            if key != "round":
                curves[key] = _mean_curve([s.curves.get(key, []) for s in selections])
        diverged = [s.diverged_at for s in selections]
        evaluation = Evaluation(metrics["best"], metrics["last"],
                                None if not any(diverged) else diverged)
        return MethodResult(Metrics.single(evaluation), curves,
                            {MODEL: Communication(0, 0, 0, note="nothing leaves a client")},
                            timings, audit={SHARED: not_audited("it shares nothing")})


def _summarise(by_client: list[dict | None]) -> dict | None:
    """Mean over clients (those that diverged before any finite round are left out), and each
    client's own entry under `clients`, in client order (None: diverged before any finite
    round), with its per-class accuracy on test and validation (evaluation.per_client)."""
    entries = [e for e in by_client if e is not None]
    if not entries:
        return None
    out = {}
    for key in SCALARS:
        values = [e[key] for e in entries if e[key] is not None]
        out[key] = float(np.mean(values)) if values else None
        if values:
            out[f"{key}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            out[f"{key}_min"], out[f"{key}_max"] = float(min(values)), float(max(values))
    out["val"] = {key: float(np.mean([e["val"][key] for e in entries]))
                  for key in SCALARS if all(e["val"].get(key) is not None for e in entries)}
    pcs = np.array([e["per_class_accuracy"] for e in entries], dtype=float)
    out["per_class_accuracy"] = np.nanmean(pcs, axis=0).tolist()
    out["clients"] = [None if e is None else
                      {**{k: e[k] for k in (*SCALARS, "round", "per_class_accuracy")},
                       "val": {k: e["val"][k] for k in (*SCALARS, "per_class_accuracy")}}
                      for e in by_client]
    out["val"]["clients"] = [None if c is None else c["val"] for c in out["clients"]]
    return out


def _mean_curve(curves: list[list]) -> list:
    width = max(len(c) for c in curves)
    arr = np.full((len(curves), width), np.nan)
    for i, c in enumerate(curves):
        arr[i, :len(c)] = [np.nan if v is None else v for v in c]
    with np.errstate(all="ignore"):
        mean = np.nanmean(arr, axis=0)
    return [None if np.isnan(v) else float(v) for v in mean]
