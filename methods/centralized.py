"""Centralized training: all clients' data pooled on one machine, the upper bound.

It trains for rounds x local_epochs epochs (the number of passes each federated client
makes), with the same optimiser, schedule (cosine over epochs) and validation-based epoch
selection. It does not depend on the split; its "communication" is the raw training data
uploaded once, reported as such.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .base import MethodResult, RunContext
from .evaluation import Selection
from .training import train_local


class Centralized:
    name = "centralized"
    uses_split = False

    @dataclass(frozen=True)
    class Params:
        pass

    def __init__(self, params=None):
        self.params = params if params is not None else self.Params()

    def run(self, ctx: RunContext) -> MethodResult:
        cfg = ctx.train
        epochs = cfg.rounds * cfg.local_epochs
        pooled = torch.arange(len(ctx.data.y_train), device=ctx.device)
        model = ctx.new_model()
        selection = Selection(ctx.data)
        timings = {"train": 0.0, "eval": 0.0}
        with ctx.progress(epochs, f"{self.name} epochs") as bar:
            for e in range(epochs):
                t0 = time.perf_counter()
                stats = train_local(model, ctx.data, pooled, cfg, cfg.lr_at(e, epochs), 1,
                                    ctx.streams.torch(f"batches/e{e}"))
                t1 = time.perf_counter()
                entry = selection.evaluate(model, e + 1, train_loss=stats.mean_loss)
                timings["train"] += t1 - t0
                timings["eval"] += time.perf_counter() - t1
                bar.update(1)
                bar.set_postfix_str(f"val acc {entry['val']['accuracy']:.3f}")
        x = ctx.data.x_train
        comm = {"rounds": 0, "total_bytes": x.numel() * x.element_size(),
                "note": "raw training images uploaded once (uint8)"}
        return MethodResult(selection.metrics(), selection.curves, comm, timings)
