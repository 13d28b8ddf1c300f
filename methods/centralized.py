"""Centralized training: all clients' data pooled on one machine, the upper bound.

It trains for `epochs` epochs (default rounds x local_epochs, the number of passes each
federated client makes), with the same optimiser, schedule (cosine over epochs) and
validation-based epoch selection. It does not depend on the split; its "communication" is the raw training data
uploaded once, reported as such.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import Capabilities, Method, MethodResult, RunContext, timed
from .cost import Cost, Workload, classifier_training
from .privacy import SHARED, not_audited
from .results import MODEL, Communication, Metrics
from .evaluation import Selection
from .training import fit


class Centralized(Method):
    name = "centralized"
    capabilities = Capabilities(uses_split=False)

    @dataclass(frozen=True)
    class Params:
        epochs: int = 0  # 0: rounds x local_epochs, the passes each federated client makes

    def epochs(self, train) -> int:
        return self.params.epochs or train.rounds * train.local_epochs

    def cost(self, work: Workload) -> Cost:
        return Cost(tuple(classifier_training(work, self.epochs(work.train), phase="training")))

    def run(self, ctx: RunContext) -> MethodResult:
        cfg = ctx.train
        epochs = self.epochs(cfg)
        pooled = torch.arange(len(ctx.data.y_train), device=ctx.device)
        model = ctx.new_model()
        selection = Selection(ctx.data)
        timings: dict[str, float] = {}
        with ctx.progress(epochs, f"{self.name} epochs") as bar, \
                timed(timings, "train_and_eval"):
            def on_epoch(epoch, stats):
                selection.observe(model, epoch, bar, train_loss=stats.mean_loss)

            fit(model, ctx.data, pooled, cfg, epochs, ctx.streams, "batches", on_epoch,
                ctx.checkpoint, selection)
        x = ctx.data.x_train
        comm = Communication(0, x.numel() * x.element_size(), 0,
                             note="raw training images uploaded once (uint8)")
        return MethodResult(Metrics.single(selection.evaluation()), selection.curves,
                            {MODEL: comm}, timings, audit={SHARED: not_audited(
                                "it shares the training images themselves")})
