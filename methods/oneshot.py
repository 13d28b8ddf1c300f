"""The one-round generative methods (FederatedFactory, FedCVAE-Ens) as one pipeline, so that
they differ only in their generator.

1. Every member client (those not in `exclude_clients`) trains generators on its own images
   and sends them once (`train_generators`: the method's own).
2. The server draws a class-balanced synthetic set from them (`synthesise`: the method's own;
   the shares and seeds of methods/synthesis.py).
3. Downstream (`downstream`): in server mode the table's classifier is trained on the
   synthetic set alone, with validation-based selection; FederatedFactory adds its local mode.
4. Diagnostics, evaluation only, on the member clients' images: the memorisation indicator
   (methods/memorisation.py), the sample quality (methods/sample_quality.py), a grid of
   samples beside real images, and the membership attack on what the clients sent
   (`audit`, methods/privacy.py).
5. What the clients sent (`communication`: the method's own).

Exact unlearning for both: `exclude_clients` leaves a client's generators out and everything
downstream is recomputed from the others (`bench unlearn`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from .base import Capabilities, Method, MethodResult, RunContext, timed
from .evaluation import Selection
from .memorisation import memorisation
from .models import weights_sha256
from .privacy import SHARED, Audit, not_audited
from .results import MODEL, Communication, Metrics
from .sample_quality import sample_quality
from .synthesis import sample_grid, train_on


@dataclass
class Generators:
    """What the member clients trained and send: the method's own objects (`models`), and for
    every class the clients that hold a generator of it with their training images of it
    (`holders[c] = {client: images}`); `log`: one entry per generator for the record;
    `extra`: what the record says of the generator family."""

    models: dict
    holders: dict[int, dict[int, int]]
    log: list[dict]
    extra: dict = field(default_factory=dict)


class OneShotGenerative(Method):
    # `bench unlearn` can forget a client (exclude_clients)
    capabilities = Capabilities(unlearns=True)
    PURPOSE: ClassVar[str]  # the prefix of the run's random streams ("ff", "fedcvae")
    GENERATOR_PHASE: ClassVar[str]  # the timings entry of step 1
    SERVER_VARIANT: ClassVar[str] = MODEL  # the name of the server-mode classifier's results

    # --- what a generator family gives ------------------------------------------------
    def train_generators(self, ctx: RunContext, members: list[int]) -> Generators:
        raise NotImplementedError

    def synthesise(self, ctx: RunContext, members: list[int],
                   gens: Generators) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images at the table's resolution and their labels, on the CPU."""
        raise NotImplementedError

    def communication(self, ctx: RunContext, members: list[int],
                      gens: Generators) -> dict[str, Communication]:
        """Bytes per downstream mode (each of `modes()`); every variant of a mode costs its
        mode's bytes."""
        raise NotImplementedError

    def modes(self) -> tuple[str, ...]:
        return ("server",)

    def audit(self, ctx: RunContext, members: list[int], gens: Generators) -> Audit:
        """The membership attack on what the clients sent (methods/privacy.py)."""
        return not_audited("no membership attack fits this generator yet")

    def audit_mode(self, ctx: RunContext, mode: str, members: list[int],
                   models: list[torch.nn.Module]) -> Audit | None:
        """The attack on what downstream mode `mode` adds to what the clients share (its
        variants' `shared/<variant>` audit), or None when it adds nothing."""
        return None

    def downstream(self, ctx: RunContext, mode: str, members: list[int], gens: Generators,
                   synth_x: torch.Tensor, synth_y: torch.Tensor
                   ) -> tuple[dict[str, Selection], list[torch.nn.Module]]:
        """Mode `mode`'s selections by variant name, and the classifiers it trained."""
        sel, model = train_on(ctx, synth_x, synth_y, self.params.classifier_epochs,
                              f"{self.PURPOSE}/server", "server classifier epochs")
        return {self.SERVER_VARIANT: sel}, [model]

    # --- the pipeline -------------------------------------------------------------------
    def members(self, ctx: RunContext) -> list[int]:
        return [k for k in range(len(ctx.clients)) if k not in set(self.params.exclude_clients)]

    def run(self, ctx: RunContext) -> MethodResult:
        data, n_classes = ctx.data, ctx.n_classes
        members = self.members(ctx)
        timings: dict[str, float] = {}
        with timed(timings, self.GENERATOR_PHASE):
            gens = self.train_generators(ctx, members)
        with timed(timings, "sampling"):
            synth_x, synth_y = self.synthesise(ctx, members, gens)

        variants, curves, fingerprints, mode_of, audits = {}, {}, {}, {}, {}
        for mode in self.modes():
            with timed(timings, f"classifier_{mode}"):
                selections, models = self.downstream(ctx, mode, members, gens, synth_x,
                                                     synth_y)
            fingerprints[mode] = weights_sha256(models)
            with timed(timings, "privacy"):
                added = self.audit_mode(ctx, mode, members, models)
            if added is not None:
                audits.update({f"{SHARED}/{name}": added for name in selections})
            for name, sel in selections.items():
                variants[name], mode_of[name] = sel.evaluation(), mode
                prefix = "" if name == MODEL else f"{name}/"
                curves.update({f"{prefix}{k}": v for k, v in sel.curves.items()})

        # the member clients' images only: an excluded client's images are never read
        # (tests/test_federatedfactory.py replaces them and compares)
        with timed(timings, "diagnostics"):
            own = torch.cat([ctx.clients[k] for k in members])
            real_x, real_y = data.x_train[own].cpu(), data.y_train[own].cpu()
            memo = memorisation(synth_x, synth_y, real_x, real_y, data.x_test.cpu(),
                                data.y_test.cpu(), n_classes)
            # a DP run publishes no training image: its grid shows validation images beside
            # the synthetic ones
            grid = sample_grid(synth_x, synth_y, real_x, real_y, n_classes) if ctx.dp is None \
                else sample_grid(synth_x, synth_y, data.x_val.cpu(), data.y_val.cpu(), n_classes)
            quality = sample_quality(data, own, synth_x, synth_y, ctx.streams,
                                     f"{self.PURPOSE}/reference", ctx.progress)
        with timed(timings, "privacy"):
            audits[SHARED] = self.audit(ctx, members, gens)

        comms = self.communication(ctx, members, gens)
        return MethodResult(
            # the first mode's first variant is the headline
            metrics=Metrics(variants, headline_variant=next(iter(variants))),
            curves=curves,
            communication={name: comms[mode_of[name]] for name in variants},
            timings=timings,
            extra={"modules": gens.log, **gens.extra,
                   "synthetic_per_class": torch.bincount(synth_y, minlength=n_classes).tolist(),
                   "memorisation": memo, "sample_quality": quality,
                   "excluded_clients": list(self.params.exclude_clients),
                   "classifier_sha256": fingerprints},
            artifacts={"samples": grid},
            audit=audits,
        )
