"""The method contract, tested on every registered method (bench/conformance.py), and the
battery's own power: planted methods that break the contract in one way each must fail it.

Pitfalls of other implementations this names: a method whose cost nobody states (the guard
of a long run then silently does nothing: this suite's `estimate` before the contract); a run
that draws from an unseeded global RNG (two runs differ); a resumable loop that saves the
weights but not its batch generator's state (the resumed run finishes, but not the same one).
"""
import dataclasses
from dataclasses import dataclass

import pytest
import torch

from bench.conformance import ConformanceError, check_method
from bench.methods.base import Capabilities, Method, MethodResult, RunContext
from bench.methods.checkpoints import RngState, resumable
from bench.methods.cost import Cost, Phase, Workload, classifier_training
from bench.methods.evaluation import Selection
from bench.methods.privacy import SHARED, not_audited
from bench.methods.registry import METHODS
from bench.methods.results import MODEL, Communication, Metrics
from bench.methods.fedavg import FedAvg
from bench.methods.training import TrainHooks, train_local
from helpers import TINY_FF

pytestmark = pytest.mark.slow

SMALL = ("rounds=2", "local_epochs=1")
SETS = {
    # two member clients (two generators), one after the unlearning check forgets one
    "federatedfactory": (*SMALL, *TINY_FF, "federatedfactory.gen_images_seen=64",
                         "federatedfactory.sampler_steps=2", "federatedfactory.modes=server",
                         "federatedfactory.exclude_clients=" + ",".join(map(str, range(2, 10)))),
    "fedcvae": (*SMALL, "fedcvae.vae_epochs=2", "fedcvae.samples_per_class=16",
                "fedcvae.classifier_epochs=2",
                "fedcvae.exclude_clients=" + ",".join(map(str, range(3, 10)))),
    "dense": (*SMALL, "dense.epochs=2", "dense.g_steps=1", "dense.s_steps=2",
              "dense.batch_size=32"),
    # FedRep's local epochs are its own (10 on the head, 5 on the body), not local_epochs:
    # its battery took 8.2 s of CPU without these, 2.5 s with them (2026-12-05)
    "fedrep": (*SMALL, "fedrep.head_epochs=1", "fedrep.body_epochs=1"),
}
ALWAYS = {"contract", "cost", "record", "deterministic", "resume", "audit", "fingerprint"}


@pytest.mark.parametrize("name", list(METHODS))
def test_every_registered_method_keeps_the_contract(name, tmp_path):
    checks = check_method(METHODS[name], SETS.get(name, SMALL), workdir=tmp_path)
    caps = METHODS[name].capabilities
    declared = {k for k in ("unlearns", "parts", "vectorises_clients") if getattr(caps, k)}
    if caps.vectorises_clients:
        declared.add("client_threads")
    declared |= {f"dp_{level}" for level in caps.dp_levels}
    assert {c.name for c in checks} == ALWAYS | declared


# --- a method from scratch, as a user would write one, and its planted faults ------------
class Epochs(Method):
    """The table's classifier on the pooled images of the clients, `epochs` epochs, one batch
    generator for the whole loop (so a resume must restore its state)."""

    name = "planted_epochs"

    @dataclass(frozen=True)
    class Params:
        epochs: int = 3

    def cost(self, work: Workload) -> Cost:
        return Cost(tuple(classifier_training(work, self.params.epochs)))

    def batches(self, ctx: RunContext) -> torch.Generator:
        return ctx.streams.torch("batches")

    def run(self, ctx: RunContext) -> MethodResult:
        pooled = torch.cat(ctx.clients)
        model, selection, gen = ctx.new_model(), Selection(ctx.data), self.batches(ctx)

        def save():
            return {"model": model.state_dict(), "selection": selection.state(),
                    "batches": RngState(gen.get_state())}

        def load(state):
            model.load_state_dict(state["model"])
            selection.restore(state["selection"])
            self.restore_batches(gen, state)

        with ctx.progress(self.params.epochs, "epochs") as bar:
            for epoch in resumable(ctx.checkpoint, "epochs", self.params.epochs, save, load):
                train_local(model, ctx.data, pooled, ctx.train, ctx.train.lr, 1, gen)
                selection.observe(model, epoch + 1, bar)
        return MethodResult(Metrics.single(selection.evaluation()), selection.curves,
                            {MODEL: Communication(1, 0, 0)},
                            audit={SHARED: not_audited("a test method")})

    def restore_batches(self, gen: torch.Generator, state: dict) -> None:
        gen.set_state(state["batches"].tensor)


class Unseeded(Epochs):
    """Planted: its batches come from a generator seeded by the clock."""

    name = "planted_unseeded"

    def batches(self, ctx):
        return torch.Generator().manual_seed(torch.seed())


class ForgetsBatches(Epochs):
    """Planted: the resume restores the weights and the selection, not the batch generator."""

    name = "planted_forgets_batches"

    def restore_batches(self, gen, state):
        pass


class NoCost(Method):
    """Planted: no `cost()`."""

    name = "planted_no_cost"
    Params = Epochs.Params
    run = Epochs.run


class FreeOfCharge(Epochs):
    """Planted: a cost of nothing (the guard would let any selection start)."""

    name = "planted_free"

    def cost(self, work):
        return Cost((Phase("training", 0, work.classifier_flops(True)),))


class UndeclaredModel(Epochs):
    """Planted: serves a model it does not declare (Capabilities.variants)."""

    name = "planted_undeclared"

    def run(self, ctx):
        result = super().run(ctx)
        return dataclasses.replace(
            result, metrics=Metrics({"student": result.metrics.headline}),
            communication={"student": result.communication[MODEL]})


class Unaudited(Epochs):
    """Planted: says nothing of the membership audit of what it shares."""

    name = "planted_unaudited"

    def run(self, ctx):
        return dataclasses.replace(super().run(ctx), audit={})


class ForgetsNothing(Epochs):
    """Planted: declares unlearning, keeps training on the clients it was told to leave out."""

    name = "planted_forgets_nothing"
    capabilities = Capabilities(unlearns=True)

    @dataclass(frozen=True)
    class Params:
        epochs: int = 3
        exclude_clients: tuple = ()


class ClaimsDP(Epochs):
    """Planted: declares DP-SGD, trains without it (and records no epsilon)."""

    name = "planted_claims_dp"
    capabilities = Capabilities(dp_levels=("example",))


class SharedScale(FedAvg):
    """Planted: its clients' hooks read a value the method keeps for the client last set up
    (clients declared independent, but not: a group trained at once is set up first, so both
    read the second's)."""

    name = "planted_shared_scale"

    def start_round(self, global_state):
        self.setups = 0
        return super().start_round(global_state)

    def client_hooks(self, model, global_state, server, client):
        self.setups += 1
        self.scale = 1.0 + 0.1 * self.setups
        return _ScaledByMethod(self)


class _ScaledByMethod(TrainHooks):
    def __init__(self, method):
        self.method = method

    def adjust_gradients(self, params, grads):
        for g in grads:
            g.mul_(self.method.scale)


def test_a_method_of_ones_own_keeps_the_contract(tmp_path):
    checks = check_method(Epochs, SMALL, workdir=tmp_path)
    assert all(c.passed for c in checks) and {c.name for c in checks} == ALWAYS


@pytest.mark.parametrize("planted, failed, says", [
    (NoCost, "contract", "does not implement cost"),
    (Unseeded, "deterministic", "two runs of the same config differ"),
    (ForgetsBatches, "resume", "the resumed run differs"),
    (FreeOfCharge, "cost", "cost() gives phases"),
    (UndeclaredModel, "record", "variants ['student'] (declared ['model'])"),
    (Unaudited, "audit", "must hold the membership audit"),
    (ForgetsNothing, "unlearns", "changed nothing"),
    (SharedScale, "client_threads", "differ from one at a time"),
    (ClaimsDP, "dp_example", "must record the epsilon its accountant spent"),
])
def test_the_battery_fails_planted_faults(planted, failed, says, tmp_path):
    with pytest.raises(ConformanceError) as caught:
        check_method(planted, SMALL, workdir=tmp_path)
    bad = {c.name: c.detail for c in caught.value.checks if not c.passed}
    assert failed in bad and says in bad[failed], bad
