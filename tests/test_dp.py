"""Differential privacy (methods/dp.py): the accountant against the Gaussian mechanism's closed
form, DP-SGD's clipping and noise and DP-FedAvg's clipped mean on analytic cases, Poisson
sampling, runs that record what they spent, the options refused, and the audit's check of the
guarantee: a DP-trained memorising classifier obeys TPR <= e^eps FPR + delta, and the same
test fails a planted bug that switches the noise off while epsilon is still reported.

Pitfalls of other implementations, named: a per-round epsilon that never composes over rounds
(PFLlib's DP printed one, then was removed): here the accountant composes every step of every
round a client takes part in; fixed-size shuffled batches accounted as Poisson-sampled ones:
here the batches are Poisson-sampled (their sizes vary); noise added per micro-batch with no
epsilon computed (FederatedFactory's `--dp` flag): here every DP run records one."""
import dataclasses
import math

import numpy as np
import pytest
import torch

from bench.cli import main
from bench.methods.base import TrainConfig
from bench.methods.data import DeviceData
from bench.methods.dp import (RDP_ORDERS, ClippedSum, DPConfig, noise_multiplier,
                              poisson_batches, private_gradients, spent)
from bench.methods.models import build_model
from bench.methods.privacy import classifier_scores, epsilon_lower_bound
from bench.report.figures import privacy_panels, privacy_utility
from bench.report.tables import records_frame
from bench.runner import cached_dataset
from helpers import stored_records, tiny_overrides

pytest.importorskip("opacus", reason="DP's accountant is the optional extra [dp]")


def test_the_accountant_composes_the_gaussian_mechanism_over_every_step():
    """Sampling rate 1: each step is the Gaussian mechanism, whose Renyi DP of order a is
    a / (2 sigma^2) (Mironov 2017, Prop. 7); T steps compose to T a / (2 sigma^2), and the
    conversion to (eps, delta) Opacus uses (Balle et al. 2020) is
    eps = min_a rdp - (log delta + log a) / (a - 1) + log((a - 1) / a)."""
    sigma, steps, delta = 3.0, 40, 1e-5
    dp = DPConfig(epsilon=1.0, delta=delta)
    a = np.array(RDP_ORDERS, dtype=float)
    closed = np.min(steps * a / (2 * sigma ** 2) - (np.log(delta) + np.log(a)) / (a - 1)
                    + np.log((a - 1) / a))
    assert spent(dp, sigma, 1.0, steps) == pytest.approx(closed, rel=1e-9)
    # one step is not the run: composing 40 rounds costs far more than one (the pitfall)
    assert spent(dp, sigma, 1.0, 1) < spent(dp, sigma, 1.0, steps) / 4
    # the noise the accountant picks reaches the target from below
    s, eps = noise_multiplier(DPConfig(epsilon=4.0), 0.25, 200)
    assert 3.95 <= eps <= 4.0 and spent(DPConfig(epsilon=4.0), s * 0.95, 0.25, 200) > 4.0


def test_dp_sgd_clips_each_images_gradient_and_adds_noise_of_sigma_c():
    """A linear model without bias, loss cross-entropy: per-image gradients have a closed
    form, (softmax(Wx) - onehot(y)) x^T. Each is clipped to C, summed and divided by the
    expected batch; with sigma = 0 that is all. The noise alone (an empty batch) has standard
    deviation sigma C / expected batch."""
    model = torch.nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.1, 0.0, 0.3], [0.0, 0.2, 0.0]]))
    x = torch.tensor([[10.0, 0, 0], [0, 0.1, 0], [0, 0, 1]])
    y = torch.tensor([1, 1, 0])
    grads = private_gradients(model, x, y, clip=1.0, sigma=0.0, expected_batch=4.0,
                              gen=torch.Generator().manual_seed(0))
    p = torch.softmax(x @ model.weight.T.detach(), 1)
    per = (p - torch.nn.functional.one_hot(y, 2))[:, :, None] * x[:, None, :]
    norms = per.flatten(1).norm(dim=1)
    expected = (per * (1.0 / norms).clamp(max=1)[:, None, None]).sum(0) / 4.0
    assert norms[0] > 1 > norms[1]  # one clipped, one left alone
    torch.testing.assert_close(grads[0], expected)
    noise = private_gradients(torch.nn.Linear(200, 100, bias=False), torch.zeros(0, 200),
                              torch.zeros(0, dtype=torch.long), 2.0, 3.0, 5.0,
                              torch.Generator().manual_seed(0))
    assert noise[0].std().item() == pytest.approx(3.0 * 2.0 / 5.0, rel=0.02)


def test_batches_are_poisson_sampled():
    """Each image in each batch independently with probability q = batch / n: the sizes vary
    (binomial, mean q n), where shuffled fixed-size batches would all hold `batch`."""
    gen = torch.Generator().manual_seed(0)
    sizes = [len(b) for _ in range(200) for b in poisson_batches(torch.arange(100), 20, gen)]
    assert len(sizes) == 200 * 5 and len(set(sizes)) > 5
    assert np.mean(sizes) == pytest.approx(20, rel=0.03)
    assert np.var(sizes) == pytest.approx(100 * 0.2 * 0.8, rel=0.15)


def test_dp_fedavg_clips_each_update_and_noises_the_sum():
    """Updates of norm 5 and 0.5 with C = 1: the first scaled to norm 1, the second kept;
    the new weights are start + (sum + N(0, (sigma C)^2)) / (q n)."""
    start = {"w": torch.zeros(2), "steps": torch.tensor(3)}
    clipped = ClippedSum(start, clip=1.0)
    clipped.add({"w": torch.tensor([3.0, 4.0]), "steps": torch.tensor(9)})
    clipped.add({"w": torch.tensor([0.3, 0.4]), "steps": torch.tensor(9)})
    clipped.add({"w": torch.tensor([float("nan"), 1.0]), "steps": torch.tensor(9)})
    assert clipped.norms[:2] == pytest.approx([5.0, 0.5])
    # a diverged client contributes nothing: it cannot turn the global model into NaN
    out = clipped.noisy_mean(0.0, 2.0, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out["w"], torch.tensor([0.9, 1.2]) / 2)
    assert out["steps"] == 3  # only floating tensors are updates
    noisy = ClippedSum({"w": torch.zeros(10_000)}, clip=2.0).noisy_mean(
        1.5, 4.0, torch.Generator().manual_seed(0))
    assert noisy["w"].std().item() == pytest.approx(1.5 * 2.0 / 4.0, rel=0.03)


@pytest.mark.parametrize("level", ["example", "client"])
def test_a_dp_run_records_the_epsilon_its_accountant_spent(tmp_path, capsys, level):
    """At level example every client is accounted over the steps of the rounds it takes part
    in (client sampling 0.5 here: the counts differ); at level client the federation over the
    rounds, clients Poisson-sampled. The record holds what it spent, under the target; the
    table carries the epsilon, and a run without DP says so. Same seed, same bits."""
    args = ["run", "--methods", "fedavg", "--splits", "iid", "--executor", "sequential",
            *tiny_overrides(rounds=4), "--set", "client_fraction=0.5"]
    dp_args = ["--set", "dp.epsilon=8", "--set", f"dp.level={level}"]
    assert main([*args, "--out", str(tmp_path / "a"), *dp_args]) == 0
    assert main([*args, "--out", str(tmp_path / "b"), *dp_args]) == 0
    assert main([*args, "--out", str(tmp_path / "a")]) == 0  # no DP, beside it
    records = {bool(r.dp): r for r in stored_records(tmp_path / "a")}
    (again,) = stored_records(tmp_path / "b")
    rec, plain = records[True], records[False]
    assert rec.dp.level == level and rec.dp.accountant == "rdp" and rec.dp.delta == 1e-5
    assert 7.9 <= rec.dp.epsilon <= 8 and rec.config.dp.epsilon == 8
    parties = rec.dp.parties
    if level == "example":
        steps = {p["party"]: p["steps"] for p in parties}
        assert len(set(steps.values())) > 1  # clients sampled in different numbers of rounds
        assert all(p["sample_rate"] == pytest.approx(64 / (1222 / 10), rel=0.05)
                   for p in parties)
    else:
        assert [(p["party"], p["sample_rate"], p["steps"]) for p in parties] == \
            [("server", 0.5, 4)]
    assert rec.dp.epsilon == max(p["epsilon"] for p in parties)
    assert again.metrics == rec.metrics and again.dp == rec.dp  # deterministic
    assert plain.dp is None and plain.run_id != rec.run_id
    assert "dp" not in plain.config.to_dict()  # ids of runs without DP did not change
    capsys.readouterr()
    assert main(["table", "--out", str(tmp_path / "a")]) == 0
    out = capsys.readouterr().out
    assert f"fedavg (dp=eps=8 {level})" in out and "fedavg (dp=no DP)" in out
    frame = records_frame(stored_records(tmp_path / "a"))
    assert sorted(frame["epsilon"].fillna(-1)) == [-1, rec.dp.epsilon]
    drawn = privacy_utility(frame, "digits", tmp_path / "privacy")
    assert [p.suffix for p in drawn] == [".png", ".pdf"] and drawn[0].stat().st_size > 0
    # the excess over the audit's null control has its panel where the records hold it
    assert [m for m, _ in privacy_panels(frame)][-2:] == ["membership_auc", "membership_excess"]
    assert "membership_excess" not in dict(privacy_panels(frame.assign(membership_excess=None)))
    assert privacy_utility(records_frame([plain]), "digits", tmp_path / "none") == []
    # a DP run alone (no run of its method without DP beside it) still names its target; a
    # run without DP alone keeps its bare name
    assert list(records_frame([rec])["method"]) == [f"fedavg (dp=eps=8 {level})"]
    assert list(records_frame([plain])["method"]) == ["fedavg"]


def test_runs_of_other_dp_settings_never_share_a_table_cell():
    """Two DP runs that differ in the clipping norm alone, and one without DP: three labels."""
    from types import SimpleNamespace

    from bench.config import parse_overrides, resolve
    from bench.report.tables import variant_labels

    def run(*sets):
        return SimpleNamespace(config=resolve("digits", "fedavg", "silos", 0,
                                              parse_overrides(list(sets))), method="fedavg")

    labels = variant_labels([run("dp.epsilon=4", "dp.clip=0.5"), run("dp.epsilon=4"), run(),
                             run("dp.epsilon=4", "dp.delta=1e-6", "dp.accountant=prv")])
    assert labels == [" (dp=eps=4 example clip=0.5)", " (dp=eps=4 example)", " (dp=no DP)",
                      " (dp=eps=4 example delta=1e-06 accountant=prv)"]


@pytest.mark.parametrize("sets, says", [
    (["dp.epsilon=4", "dp.level=client"], "scaffold does not run with DP at level 'client'"),
    (["dp.level=example"], "needs its target, --set dp.epsilon"),
    (["dp.epsilon=-1"], "dp.epsilon must be > 0"),
    (["dp.epsilon=4", "norm=batch"], "--set norm=group"),
    (["dp.noise=1"], "unknown key; valid: dp.epsilon"),
])
def test_dp_options_that_cannot_hold_are_refused_in_one_line(tmp_path, capsys, sets, says):
    args = ["run", "--methods", "scaffold", "--splits", "iid", "--out", str(tmp_path)]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()


def test_methods_without_dp_are_refused(tmp_path, capsys):
    assert main(["run", "--methods", "moon", "--splits", "iid", "--out", str(tmp_path),
                 "--set", "dp.epsilon=4"]) == 2
    assert "methods that do: fedavg, fedprox" in capsys.readouterr().err


def _canaries():
    """Digits images with random labels: members are fitted only by memorising them, so a
    model trained without noise gives its members' labels a confidence no non-member's gets
    (Jagielski et al. 2020 audit DP-SGD with such canaries)."""
    d = cached_dataset("digits", None)
    g = torch.Generator().manual_seed(0)
    x = torch.cat([d.x_train, d.x_test])
    y = torch.randint(0, 10, (len(x),), generator=g)
    order = torch.randperm(len(x), generator=g)
    data = DeviceData(dataclasses.replace(d, x_train=x, y_train=y), 8, torch.device("cpu"))
    return data, order[:100], order[100:500]


def _audit_dp_sgd(epsilon: float) -> tuple[float, float, float]:
    """A classifier DP-SGD-trained on 100 canaries for 60 epochs (240 steps at q = 1/4), its
    noise chosen by the accountant for `epsilon`; the epsilon the attack on it proves
    (threshold fitted on 200 non-canaries, judged on 200 others), its TPR there, and the
    epsilon reported."""
    from bench.methods.training import train_local_private

    data, members, non_members = _canaries()
    cfg = TrainConfig(batch_size=25, lr=0.1, momentum=0.9, weight_decay=0.0)
    sigma, reported = noise_multiplier(DPConfig(epsilon=epsilon), 25 / 100, 60 * 4)
    torch.manual_seed(0)
    model = build_model("cnn", 1, 10, 8, "group")
    train_local_private(model, data, members, cfg, cfg.lr, 60, torch.Generator().manual_seed(1),
                        torch.Generator().manual_seed(2), 1.0, sigma)
    m, n = (classifier_scores(model, data, data.x_train[i], data.y_train[i])
            for i in (members, non_members))
    proved = epsilon_lower_bound(m, n[200:], n[:200], delta=1e-5)
    return proved, float(np.mean(m > np.sort(n[:200])[-3])), reported


@pytest.mark.slow
def test_the_audit_holds_dp_sgd_to_its_guarantee_and_catches_noise_switched_off(monkeypatch):
    """(eps, delta)-DP bounds every attack: TPR <= e^eps FPR + delta, so an attack proves
    eps >= ln((TPR - delta) / FPR) (Clopper-Pearson ends at 95 %, the threshold fitted apart).
    At eps = 1 the attack on the memorising classifier proves less than 1. Planted: DP-SGD
    with its noise switched off while the accountant's epsilon is still reported: the
    members are memorised (TPR about 1) and the attack proves eps > 3, far above the claim."""
    proved, tpr, eps = _audit_dp_sgd(1.0)
    assert eps <= 1.0 and proved <= eps, (proved, tpr)
    import bench.methods.training as training

    real = training.private_gradients
    monkeypatch.setattr(training, "private_gradients",
                        lambda model, x, y, clip, sigma, *rest: real(model, x, y, clip, 0.0,
                                                                     *rest))
    proved, tpr, eps = _audit_dp_sgd(1.0)
    assert eps <= 1.0 and proved > 3 * eps and tpr > 0.5, (proved, tpr)


def test_the_epsilon_an_attack_proves():
    """Clopper-Pearson ends on a case counted by hand: 100 members all above the threshold,
    2 of 200 judged non-members above it (the threshold: the third highest of 200
    calibration scores)."""
    from scipy.stats import beta

    from bench.methods.privacy import epsilon_lower_bound

    calibration = np.arange(200.0)  # threshold 197: two above it
    non_members = np.concatenate([np.zeros(198), [300.0, 400.0]])
    members = np.full(100, 500.0)
    tpr_low = 0.025 ** (1 / 100)  # Clopper-Pearson with 100 of 100
    fpr_high = beta.ppf(0.975, 3, 198)
    assert epsilon_lower_bound(members, non_members, calibration, 1e-5) == pytest.approx(
        math.log((tpr_low - 1e-5) / fpr_high))
    assert epsilon_lower_bound(np.zeros(100), non_members, calibration, 1e-5) == -math.inf


def test_dp_sgd_in_training_gets_the_accountants_noise_and_the_expected_batch(monkeypatch):
    """`train_local_private` hands DP-SGD the clip, the accountant's sigma and the expected
    batch q n = min(batch, n) of the client, every step."""
    import bench.methods.training as training

    seen = []
    real = training.private_gradients

    def spy(model, x, y, clip, sigma, expected, gen):
        seen.append((clip, sigma, expected))
        return real(model, x, y, clip, sigma, expected, gen)

    monkeypatch.setattr(training, "private_gradients", spy)
    data, members, _ = _canaries()
    model = build_model("cnn", 1, 10, 8, "group")
    stats = training.train_local_private(
        model, data, members[:50], TrainConfig(batch_size=20), 0.1, 2,
        torch.Generator().manual_seed(0), torch.Generator().manual_seed(1), 0.5, 3.0)
    assert seen == [(0.5, 3.0, 20.0)] * (2 * 3) and stats.steps == 6
    assert math.isnan(stats.mean_loss)  # the loss is not privatised, so not released
