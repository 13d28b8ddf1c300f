"""The regression check catches regressions: each planted one makes it fail.

The CI grid `sensitivity` (bench/protocol.py) runs here with the code as it is, and a tripwire
reference is made from that clean run, here, with `--make-reference` (so the test holds on any
machine: the planted regressions are judged against the numbers this machine computes, by the
exact rule). Then each regression below is planted (a monkeypatch: the source files do not
change, so only the numbers can give it away), the affected runs are recomputed, and the check
must fail on them. Each planted run is also judged by the cross-environment rule (what a
machine with other numerics gets, with the committed reference's measured tolerance): which
regressions that wider rule still catches is asserted in CROSS_CATCHES (docs/checks.md).
Separately, the clean run must pass the committed reference `bench/references/sensitivity.json`
(exactly in its pinned environment, by the cross-environment rule elsewhere).
The regressions are the known pitfalls of other implementations:

- FedAvg averaging the clients unweighted (several frameworks average models without the n_k);
- FedProx without its proximal term (the term silently dropped, as by a wrong hook order);
- SCAFFOLD without its gradient correction (it degenerates to FedAvg);
- model selection on the test set (the FederatedFactory authors' baselines did this);
- FederatedFactory's product of experts replaced by a plain mean of probabilities;
- FederatedFactory's product of experts without the experts' label priors divided out (the
  paper's rule passed off as the corrected one);
- FederatedFactory's synthetic labels off by one class;
- FedDyn adding h / alpha on the server instead of subtracting it (PFLlib issue 29's kind of
  server-state error);
- FedNova normalising by the step count although the clients train with momentum;
- MOON with its positive and negative pairs swapped;
- FedAwS without the server's spreadout step;
- FedAwS with the class embeddings averaged over every client (a plain FedAvg of the whole
  network, as a FedAvg-based implementation gives by default) instead of row by row over the
  classes' holders (Yu et al. 2020, Algorithm 1);
- FedCVAE-Ens's synthetic labels off by one class;
- DENSE's student distilled from the ensemble's mean probabilities' arg-max (hard labels)
  instead of its soft outputs;
- DENSE's adversarial term masked where ensemble and student agree (the DFAD / CMI code's
  mask) instead of where they differ (the DENSE authors' code).

One known pitfall moves no number of this grid, so an analytic test guards it instead:
FederatedFactory's experts' probabilities exponentiated in float32 and logged again before
the product (tests/test_edm.py: this grid's experts are never confident enough to underflow).

It also shows that `bench unlearn` in the same folder leaves the check passing (cells name
their runs by id, so the unlearned run is never taken for the original).
"""
import numpy as np
import pytest
import torch

import bench.methods.dense as dense
import bench.methods.evaluation as evaluation
import bench.methods.fedaws as fedaws
import bench.methods.fedcvae as fedcvae
import bench.methods.federatedfactory.method as ff_method
import bench.methods.fednova as fednova
import bench.methods.moon as moon
from bench.cli import main
from bench.methods.feddyn import FedDyn
from bench.methods.federatedfactory.experts import ProductOfExperts
from bench.methods.fedprox import ProximalHooks
from bench.methods.scaffold import ControlVariateHooks
from bench.methods.weight_averaging import WeightAveraging, WeightedMean
from bench.report.check import (
    CROSS,
    EXACT,
    check_reference,
    load_reference,
    passed,
)
from bench.datasets.splits import parse_split
from bench.records import parse_label
from bench.store import RecordStore

pytestmark = pytest.mark.slow  # every test here uses the sensitivity grid (minutes)


def _unweighted(monkeypatch):
    weighted = WeightedMean.add
    monkeypatch.setattr(WeightedMean, "add", lambda self, state, n_samples: weighted(self, state, 1))


def _no_proximal_term(monkeypatch):
    monkeypatch.setattr(ProximalHooks, "adjust_gradients", lambda self, params, grads: None)


def _no_correction(monkeypatch):
    def accumulate_only(self, params, grads):  # keeps c_i+ right, drops (c - c_i) from steps
        for g, s in zip(grads, self.grad_sum):
            s.add_(g)
    monkeypatch.setattr(ControlVariateHooks, "adjust_gradients", accumulate_only)


def _select_on_test(monkeypatch):
    record = evaluation.Selection.record

    def on_test(self, step, val, test, **extra):
        best = self.best
        entry = record(self, step, val, test, **extra)
        key = (test["accuracy"], -test["loss"])
        if getattr(self, "_test_key", None) is None or key > self._test_key:
            self._test_key, best = key, entry
        self.best = best
        return entry
    monkeypatch.setattr(evaluation.Selection, "record", on_test)


class _MeanOfExperts(ProductOfExperts):
    def add(self, log_proba, prior):
        self.log_sum += torch.from_numpy(np.exp(log_proba))

    def proba(self):
        return (self.log_sum / self.log_sum.sum(1, keepdim=True)).numpy()

    def corrected(self, target_prior):
        return self.proba()


def _mean_of_experts(monkeypatch):
    monkeypatch.setattr(ff_method, "ProductOfExperts", _MeanOfExperts)


def _no_prior_correction(monkeypatch):
    monkeypatch.setattr(ProductOfExperts, "corrected", lambda self, target: self.proba())


def _shift_synthetic_labels(monkeypatch, cls):
    synthesise = cls.synthesise

    def shifted(self, ctx, *args):
        x, y = synthesise(self, ctx, *args)
        return x, (y + 1) % ctx.n_classes
    monkeypatch.setattr(cls, "synthesise", shifted)


def _labels_off_by_one(monkeypatch):
    _shift_synthetic_labels(monkeypatch, ff_method.FederatedFactory)


def _feddyn_adds_h(monkeypatch):
    aggregate = FedDyn.aggregate

    def wrong(self, acc, global_state, server, n_clients):
        new, h = aggregate(self, acc, global_state, server, n_clients)
        for n in h:  # theta = mean + h / alpha instead of mean - h / alpha
            new[n] = new[n] + 2 * h[n] / self.params.alpha
        return new, h
    monkeypatch.setattr(FedDyn, "aggregate", wrong)


def _fednova_step_count(monkeypatch):
    monkeypatch.setattr(fednova, "aggregation_norm", lambda steps, momentum: float(steps))


def _moon_pairs_swapped(monkeypatch):
    loss = moon.contrastive_loss
    monkeypatch.setattr(moon, "contrastive_loss",
                        lambda z, z_glob, z_prev, tau: loss(z, z_prev, z_glob, tau))


def _fedaws_no_spreadout(monkeypatch):
    monkeypatch.setattr(fedaws, "spreadout_step", lambda weight, lr, margin: weight)


def _fedaws_rows_over_every_client(monkeypatch):
    """W averaged over all clients (a plain FedAvg of the whole network), not row by row over
    the classes' holders."""
    def aggregate(self, acc, global_state, server, n_clients):
        new = acc.result(global_state)
        new[server] = fedaws.spreadout_step(new[server], self.params.spreadout_lr,
                                            self.params.spreadout_margin)
        return new, server
    monkeypatch.setattr(fedaws.FedAwS, "client_message", WeightAveraging.client_message)
    monkeypatch.setattr(fedaws.FedAwS, "start_round", WeightAveraging.start_round)
    monkeypatch.setattr(fedaws.FedAwS, "aggregate", aggregate)


def _dense_agree_mask(monkeypatch):
    """omega = 1 where ensemble and student agree (the DFAD / CMI mask)."""
    loss = dense.generator_loss
    monkeypatch.setattr(dense, "generator_loss",
                        lambda *args: loss(*args[:6], "agree"))


def _fedcvae_labels_off_by_one(monkeypatch):
    _shift_synthetic_labels(monkeypatch, fedcvae.FedCVAE)


def _dense_hard_labels(monkeypatch):
    kl = dense.kl_divergence

    def hard(teacher, student, reduction="batchmean"):
        return kl(teacher.argmax(1, keepdim=True).eq(
            torch.arange(teacher.shape[1], device=teacher.device)).float() * 20, student,
            reduction)
    monkeypatch.setattr(dense, "kl_divergence", hard)


# regression -> (the methods whose runs it changes, the cells that must catch it[, the split
# it is replanted under]). The FederatedFactory plants rerun one split, the one that shows them
# (docs/checks.md): its product rules and labels under silos (10 generators), the label priors
# under Dirichlet 0.1 (where the clients' priors differ); the other split's cells are not judged.
PLANTS = {
    "fedavg unweighted": (_unweighted, "fedavg,fedprox", {"fedavg", "fedprox"}),
    "fedprox without proximal term": (_no_proximal_term, "fedprox", {"fedprox"}),
    "scaffold without correction": (_no_correction, "scaffold", {"scaffold"}),
    "selection on the test set": (_select_on_test, "fedavg", {"fedavg"}),
    "ff plain mean of experts": (_mean_of_experts, "federatedfactory",
                                 {"federatedfactory[local]", "federatedfactory[local_plain]"},
                                 "silos"),
    "ff label priors not divided out": (_no_prior_correction, "federatedfactory",
                                        {"federatedfactory[local]"}, "dirichlet:0.1"),
    "ff labels off by one": (_labels_off_by_one, "federatedfactory",
                             {"federatedfactory[server]", "federatedfactory[local]"}, "silos"),
    "feddyn adds h": (_feddyn_adds_h, "feddyn", {"feddyn"}),
    "fednova step count under momentum": (_fednova_step_count, "fednova", {"fednova"}),
    "moon pairs swapped": (_moon_pairs_swapped, "moon", {"moon"}),
    "fedaws without spreadout": (_fedaws_no_spreadout, "fedaws", {"fedaws"}),
    "fedcvae labels off by one": (_fedcvae_labels_off_by_one, "fedcvae", {"fedcvae"}),
    "dense hard labels": (_dense_hard_labels, "dense", {"dense"}),
    "fedaws rows averaged over every client": (_fedaws_rows_over_every_client, "fedaws",
                                               {"fedaws"}),
    "dense agree mask": (_dense_agree_mask, "dense", {"dense"}),
}


# the planted regressions that the cross-environment rule (another machine's numerics) still
# catches: all but the prior correction, which moves FederatedFactory's local accuracy under
# Dirichlet 0.1 by two test images, and DENSE's mask (six images), less than rounding moves
# them between environments (docs/checks.md, "What the check catches")
CROSS_CATCHES = set(PLANTS) - {"ff label priors not divided out", "dense agree mask"}


@pytest.fixture(scope="module")
def clean_grid(tmp_path_factory):
    """The sensitivity grid computed by the code as it is (its generators cached)."""
    out = tmp_path_factory.mktemp("sensitivity")
    assert main(["run", "--grid", "sensitivity", "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def clean_reference(clean_grid, tmp_path_factory) -> dict:
    """The tripwire reference made from the clean run on this machine."""
    path = tmp_path_factory.mktemp("reference") / "sensitivity.json"
    assert main(["check", "--reference", "sensitivity", "--out", str(clean_grid),
                 "--make-reference", str(path)]) == 0
    return load_reference(str(path))


def _cross(reference: dict) -> dict:
    """`reference` as a machine with other numerics sees it: every cell judged by the
    cross-environment rule, with the committed reference's measured tolerance."""
    made = reference["made_with"]
    return {**reference, "made_with": {**made, "numerics": {**made["numerics"],
                                                            "cpu_caches": "another machine's"}},
            "cross_environment": load_reference("sensitivity")["cross_environment"]}


def test_clean_grid_passes_the_reference_made_from_it(clean_grid, clean_reference):
    table = check_reference(clean_reference, RecordStore(clean_grid))
    assert passed(table) and set(table["rule"]) == {EXACT}
    # 9 runs + 2 FF runs of 3 variants each, x accuracy, AUROC, round
    assert len(table) == 45


def test_clean_grid_passes_the_committed_reference(clean_grid, clean_reference):
    """Exactly where the numerics equal the reference's; by the cross-environment rule
    elsewhere (another torch, threads, cache sizes): not failed by rounding within the
    measured spread."""
    committed = load_reference("sensitivity")
    table = check_reference(committed, RecordStore(clean_grid))
    assert passed(table), table[table["verdict"] != "ok"].to_string()
    same = committed["made_with"]["numerics"] == clean_reference["made_with"]["numerics"]
    assert set(table["rule"]) == ({EXACT} if same else {CROSS})


@pytest.mark.parametrize("plant", list(PLANTS))
def test_planted_regression_fails_the_check(plant, clean_grid, clean_reference, tmp_path,
                                            monkeypatch):
    apply, methods, catchers, *split = PLANTS[plant]
    out = tmp_path / "planted"
    (out / "cache").parent.mkdir(parents=True)
    (out / "cache").symlink_to(clean_grid / "cache")  # generators as in the clean run
    with monkeypatch.context() as m:
        apply(m)
        assert main(["run", "--grid", "sensitivity", "--methods", methods,
                     *(["--splits", *split] if split else []), "--out", str(out)]) == 0
    ref = {**clean_reference, "cells": [c for c in clean_reference["cells"]
                                        if parse_label(c["method"])[0] in methods.split(",")
                                        and (not split or c["split"] == parse_split(split[0]).canonical)]}
    table = check_reference(ref, RecordStore(out))
    failing = table[table["verdict"] != "ok"]
    print(f"\n{plant}:\n" + failing[["method", "split", "metric", "expected", "measured",
                                     "tolerance"]].to_string(index=False))  # docs/checks.md
    assert not passed(table), f"{plant} went unnoticed"
    assert set(table["rule"]) == {EXACT}
    assert set(failing["method"]) >= catchers, failing.to_string()
    assert set(failing["verdict"]) <= {"REGRESSED", "ABOVE", "NOT VALIDATION-BEST"}

    cross = check_reference(_cross(ref), RecordStore(out))
    caught = cross[cross["verdict"] != "ok"]
    print("cross-environment rule:\n" + caught[["method", "split", "metric", "expected",
                                                "measured", "tolerance", "verdict"]]
          .to_string(index=False))
    assert (not passed(cross)) == (plant in CROSS_CATCHES)


def test_check_still_passes_after_unlearning_in_the_same_folder(clean_grid, capsys):
    ff = next(c for c in load_reference("sensitivity")["cells"]
              if c["method"].startswith("federatedfactory"))
    assert main(["unlearn", "--run", ff["run_id"], "--clients", "3",
                 "--out", str(clean_grid)]) == 0
    capsys.readouterr()
    assert main(["check", "--reference", "sensitivity", "--out", str(clean_grid)]) == 0
    assert "PASSED" in capsys.readouterr().err
