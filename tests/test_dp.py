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
from bench.methods.privacy import attack_metrics, classifier_scores
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
    grads, loss = private_gradients(model, x, y, clip=1.0, sigma=0.0, expected_batch=4.0,
                                    gen=torch.Generator().manual_seed(0))
    p = torch.softmax(x @ model.weight.T.detach(), 1)
    per = (p - torch.nn.functional.one_hot(y, 2))[:, :, None] * x[:, None, :]
    norms = per.flatten(1).norm(dim=1)
    expected = (per * (1.0 / norms).clamp(max=1)[:, None, None]).sum(0) / 4.0
    assert norms[0] > 1 > norms[1]  # one clipped, one left alone
    torch.testing.assert_close(grads[0], expected)
    assert loss.item() == pytest.approx(
        torch.nn.functional.cross_entropy(x @ model.weight.T, y, reduction="sum").item())
    noise, _ = private_gradients(torch.nn.Linear(200, 100, bias=False), torch.zeros(0, 200),
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
    assert clipped.norms == pytest.approx([5.0, 0.5])
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


def _audit_dp_sgd(epsilon: float) -> tuple[dict, float]:
    """A classifier DP-SGD-trained on 100 canaries for 60 epochs (240 steps at q = 1/4), its
    noise chosen by the accountant for `epsilon`; the audit's numbers on it against 400
    non-canaries, and the epsilon reported."""
    from bench.methods.training import train_local_private

    data, members, non_members = _canaries()
    cfg = TrainConfig(batch_size=25, lr=0.1, momentum=0.9, weight_decay=0.0)
    sigma, reported = noise_multiplier(DPConfig(epsilon=epsilon), 25 / 100, 60 * 4)
    torch.manual_seed(0)
    model = build_model("cnn", 1, 10, 8, "group")
    train_local_private(model, data, members, cfg, cfg.lr, 60, torch.Generator().manual_seed(1),
                        torch.Generator().manual_seed(2), 1.0, sigma)
    scores = [classifier_scores(model, data, data.x_train[i], data.y_train[i])
              for i in (members, non_members)]
    return attack_metrics([scores[0]], [scores[1]], np.random.default_rng(0)), reported


def _within_the_guarantee(audit: dict, epsilon: float, delta: float = 1e-5) -> bool:
    """(eps, delta)-DP bounds every attack: TPR <= e^eps FPR + delta (Kairouz et al. 2015),
    at the FPR the threshold reached; the measured TPR may exceed it by its sampling error
    only (the interval's lower end stays under)."""
    return audit["tpr_ci"][0] <= math.exp(epsilon) * audit["fpr_reached"] + delta


@pytest.mark.slow
def test_the_audit_holds_dp_sgd_to_its_guarantee_and_catches_noise_switched_off(monkeypatch):
    """At epsilon = 1 the memorising classifier's TPR at 1 % FPR stays under e^1 x 1 % +
    delta. Planted: DP-SGD with its noise switched off while the accountant's epsilon is still
    reported: the members are memorised (TPR about 1) and the same check fails."""
    audit, eps = _audit_dp_sgd(1.0)
    assert eps <= 1.0 and _within_the_guarantee(audit, eps), audit
    import bench.methods.training as training

    real = training.private_gradients
    monkeypatch.setattr(training, "private_gradients",
                        lambda model, x, y, clip, sigma, *rest: real(model, x, y, clip, 0.0,
                                                                     *rest))
    planted, eps = _audit_dp_sgd(1.0)
    assert eps <= 1.0 and not _within_the_guarantee(planted, eps), planted
    assert planted["tpr_at_1pct_fpr"] > 0.5
