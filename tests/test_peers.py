"""The peers of issue 13 (FedDyn, FedNova, MOON, FedAwS, FedCVAE-Ens, DENSE): their maths on
tiny analytic cases, derived by hand in the docstrings, then each end to end on digits.

Pitfalls of other implementations named here:
- FedDyn: the server state h averaged over the round's clients instead of all m clients, or
  h / alpha added instead of subtracted (PFLlib issue 29); no gradient clipping (the loss blows
  up, FL-bench issues 133 and 169).
- FedNova: normalising by the step count tau_k while training with momentum (the aggregation
  vector's norm is then larger: 4.25, not 3, for 3 steps at momentum 0.5).
- MOON: the positive pair is (local, global), the negative (local, previous local); swapping
  them rewards drifting away from the global model.
- FedAwS: without the server's spreadout, one-class clients collapse every class embedding.
"""
import math

import pytest
import torch

from bench.cli import main
from bench.methods.dense import BatchNormStatistics, generator_loss, kl_divergence
from bench.methods.fedaws import positive_negative_loss, spreadout, spreadout_step
from bench.methods.fedcvae import elbo_loss
from bench.methods.feddyn import FedDyn
from bench.methods.fednova import FedNova, aggregation_norm
from bench.methods.fedavg import FedAvg
from bench.methods.moon import contrastive_loss
from bench.methods.training import LocalStats
from helpers import stored_records, tiny_overrides
from helpers import Scalar, local_sgd, one_round


# --- FedDyn ---------------------------------------------------------------------------------
def test_feddyn_client_and_server_state():
    """alpha 0.5, lr 0.1, no clipping, b = 2, theta^0 = 0, one client of m = 2 takes part.
    Round 1, g_1 = 0: step 1 g = (0 - 2) = -2 -> 0.2; step 2 g = (0.2 - 2) + 0.5 * 0.2 = -1.7
      -> theta_1 = 0.37; g_1 <- 0 - 0.5 * 0.37 = -0.185;
      h = 0 - 0.5 * (1/2) * 0.37 = -0.0925 (1/m, m = 2 clients in all);
      theta^1 = 0.37 - h / 0.5 = 0.555.
    Round 2 from 0.555, g_1 = -0.185: step 1 g = (0.555 - 2) + 0.185 = -1.26 -> 0.681;
      step 2 g = (0.681 - 2) + 0.185 + 0.5 * 0.126 = -1.071 -> 0.7881;
      g_1 <- -0.185 - 0.5 * 0.2331 = -0.30155; h = -0.0925 - 0.25 * 0.2331 = -0.150775;
      theta^2 = 0.7881 + 0.30155 = 1.08965."""
    method = FedDyn(FedDyn.Params(alpha=0.5, max_grad_norm=0.0))
    x, server, states = one_round(method, [2.0], 0.0, None, {}, lr=0.1, steps=2, n_total=2)
    assert float(states[0]["w"]) == pytest.approx(-0.185, abs=1e-12)
    assert float(server["w"]) == pytest.approx(-0.0925, abs=1e-12)  # not -0.185 (1/|P_t|)
    assert x == pytest.approx(0.555, abs=1e-12)  # not 0.37 - 0.185 (h added)
    x, server, states = one_round(method, [2.0], x, server, states, lr=0.1, steps=2, n_total=2)
    assert float(states[0]["w"]) == pytest.approx(-0.30155, abs=1e-12)
    assert float(server["w"]) == pytest.approx(-0.150775, abs=1e-12)
    assert x == pytest.approx(1.08965, abs=1e-12)


def test_feddyn_clips_the_local_gradient():
    """b = 1000: the first step's gradient -1000 is clipped to norm 10 -> w = 0.1 * 10 = 1."""
    method = FedDyn(FedDyn.Params(alpha=0.01, max_grad_norm=10.0))
    model = Scalar()
    gs = {"w": torch.zeros(1, dtype=torch.float64)}
    server = method.init_server(model, gs)
    hooks = method.client_hooks(model, gs, server, method.init_client(gs, server))
    local_sgd(model, hooks, 1000.0, 0.1, 1)
    assert float(model.w.detach()) == pytest.approx(1.0, rel=1e-6)


# --- FedNova --------------------------------------------------------------------------------
def test_fednova_aggregation_norm_with_momentum():
    """3 steps at momentum 0.5: the steps' gradients enter with weights 1 + 0.5 + 0.25,
    1 + 0.5 and 1, so ||a||_1 = 4.25 (not tau = 3); without momentum it is tau."""
    assert aggregation_norm(3, 0.5) == pytest.approx(4.25, abs=1e-12)
    assert aggregation_norm(3, 0.0) == 3.0


def _nova_round(method, steps: list[int], lr=0.1, b=1.0, weights=None):
    model = Scalar()
    gs = {"w": torch.zeros(1, dtype=torch.float64)}
    acc = method.start_round(gs)
    for i, k in enumerate(steps):
        model.load_state_dict(gs)
        hooks = method.client_hooks(model, gs, None, None)
        stats = local_sgd(model, hooks, b, lr, k)
        msg, _ = method.client_message(model, gs, None, None, hooks, stats, lr)
        method.accumulate(acc, msg, (weights or [1] * len(steps))[i])
    new, _ = method.aggregate(acc, gs, None, len(steps))
    return float(new["w"])


def test_fednova_normalises_by_local_steps():
    """b = 1, lr 0.1, from 0, equal sizes. Client 1: 1 step -> 0.1, d_1 = -0.1 / 1.
    Client 2: 3 steps -> 0.1, 0.19, 0.271, d_2 = -0.271 / 3. tau_eff = 2:
    theta = -2 * (-0.1 - 0.090333) / 2 = 0.190333 (FedAvg: (0.1 + 0.271) / 2 = 0.1855)."""
    assert _nova_round(FedNova(), [1, 3]) == pytest.approx(0.1 + 0.271 / 3, abs=1e-12)
    assert _nova_round(FedAvg(), [1, 3]) == pytest.approx(0.1855, abs=1e-12)


def test_fednova_is_fedavg_when_steps_are_equal():
    for weights in ([1, 1], [1, 3]):
        assert _nova_round(FedNova(), [2, 2], weights=weights) == pytest.approx(
            _nova_round(FedAvg(), [2, 2], weights=weights), abs=1e-12)


def test_fednova_reads_the_momentum_of_the_local_run():
    """One client, 3 steps; its update divided by ||a|| and multiplied back by tau_eff =
    ||a|| is the client's own update whatever the momentum: the normaliser is its own."""
    method = FedNova()
    gs = {"w": torch.zeros(1, dtype=torch.float64)}
    model = Scalar(0.3)
    msg, _ = method.client_message(model, gs, None, None, None,
                                   LocalStats(3, 3, 0.0, momentum=0.5), 0.1)
    assert float(msg.a_norm) == pytest.approx(4.25)
    assert float(msg.d["w"]) == pytest.approx(-0.3 / 4.25)


# --- MOON -----------------------------------------------------------------------------------
def test_moon_contrastive_loss():
    """z = (1, 0); z_glob = (1, 0) (cos 1), z_prev = (0, 1) (cos 0), tau 0.5:
    l = -log(e^2 / (e^2 + e^0)) = log(1 + e^-2) = 0.126928. With z_glob = z_prev: log 2.
    Swapped (positive = previous): log(1 + e^2) = 2.126928."""
    z, a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    assert float(contrastive_loss(z, a, b, 0.5)) == pytest.approx(math.log1p(math.exp(-2)), abs=1e-6)
    assert float(contrastive_loss(z, a, a, 0.5)) == pytest.approx(math.log(2), abs=1e-6)
    assert float(contrastive_loss(z, b, a, 0.5)) == pytest.approx(math.log1p(math.exp(2)), abs=1e-6)


# --- FedAwS ---------------------------------------------------------------------------------
def test_fedaws_spreadout_gradient():
    """w_1 = (1, 0), w_2 = (0, 1), distance sqrt(2), margin 2: reg = 2 (2 - sqrt 2)^2 (both
    ordered pairs). d reg / d w_1 = -4 (2 - sqrt 2) (w_1 - w_2) / sqrt 2; the normalisation
    keeps its part tangent to w_1: (0, 4 (2 - sqrt 2) / sqrt 2) = (0, 1.65685). A step of
    0.1 moves w_1 to (1, -0.165685) and w_2 to (-0.165685, 1): apart. A margin below the
    distance (1.0) gives no gradient."""
    w = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    assert float(spreadout(w, 2.0)) == pytest.approx(2 * (2 - math.sqrt(2)) ** 2, abs=1e-12)
    g = 4 * (2 - math.sqrt(2)) / math.sqrt(2)
    expected = torch.tensor([[1.0, -0.1 * g], [-0.1 * g, 1.0]], dtype=torch.float64)
    assert torch.allclose(spreadout_step(w, 0.1, 2.0), expected, atol=1e-12)
    assert torch.equal(spreadout_step(w, 0.1, 1.0), w)


def test_fedaws_positive_only_loss():
    """One class in the batch: only (0.9 - cos_y)^2; cos_y = 0.5 -> 0.16, whatever the other
    classes' cosines. Two classes in the batch: each image also pays (cos_other - 0)^2."""
    cos = torch.tensor([[0.5, 0.7, -0.2], [0.5, 0.9, 0.3]])
    assert float(positive_negative_loss(cos, torch.tensor([0, 0]), 0.9, 0.0)) == pytest.approx(0.16)
    two = positive_negative_loss(cos, torch.tensor([0, 1]), 0.9, 0.0)
    assert float(two) == pytest.approx(((0.16 + 0.49) + (0.0 + 0.25)) / 2)


def test_fedaws_assembles_each_embedding_row_from_its_holders_only():
    """Yu et al. 2020, Algorithm 1: a client returns only its own class's embedding. Three
    clients, two classes of 2-d embeddings starting at w_0 = (1, 0), w_1 = (0, 1); client 0
    (30 images of class 0) moves w_0 to (3, 0), client 1 (10 of class 1) moves w_1 to (0, 5),
    client 2 (10 of class 1) to (0, 3); the body b (a scalar) goes to 1, 2, 3. The server: b =
    (30 + 20 + 30) / 50 = 1.6 (FedAvg over everyone), w_0 = (3, 0) (its only holder, not
    (30 * 3 + 20 * 1) / 50 = 2.2 as a plain FedAvg of W gives), w_1 = (10 * 5 + 10 * 3) / 20 =
    (0, 4). With spreadout off (lr 0) that is the new state. The pitfall named: averaging W
    over all clients, which moves w_0 by only 30/50 of its holder's update."""
    from bench.methods.fedaws import FedAwS, PositiveHooks

    method = FedAwS(FedAwS.Params(spreadout_lr=0.0))
    key = "head.weight"
    start = {"body": torch.tensor([0.0]), key: torch.tensor([[1.0, 0.0], [0.0, 1.0]])}
    acc = method.start_round(start)
    for n, cls, body, row in ((30, 0, 1.0, [3.0, 0.0]), (10, 1, 2.0, [0.0, 5.0]),
                              (10, 1, 3.0, [0.0, 3.0])):
        hooks = PositiveHooks(method.params, 2)
        hooks.seen = torch.bincount(torch.full((n,), cls), minlength=2)
        trained = {"body": torch.tensor([body]), key: start[key].clone()}
        trained[key][cls] = torch.tensor(row)

        class Model:
            def state_dict(self, trained=trained):
                return trained
        msg, _ = method.client_message(Model(), start, key, None, hooks, None, 0.1)
        assert msg["rows"].shape == (1, 2)  # only its own class's row goes up
        method.accumulate(acc, msg, n)
    new, _ = method.aggregate(acc, start, key, 3)
    assert float(new["body"]) == pytest.approx(1.6)
    assert torch.allclose(new[key], torch.tensor([[3.0, 0.0], [0.0, 4.0]]))


@pytest.mark.slow
def test_fedaws_without_spreadout_collapses_under_silos(tmp_path):
    """Under silos (one class per client) the class embeddings end farther apart with the
    spreadout step than without it."""
    spread = {}
    for lr in (0.0, 1.0):
        out = tmp_path / f"lr{lr}"
        assert main(["run", "--methods", "fedaws", "--splits", "silos", "--out", str(out),
                     "--set", f"fedaws.spreadout_lr={lr}", *tiny_overrides(rounds=3)]) == 0
        (rec,) = stored_records(out)
        spread[lr] = rec.extra["mean_class_cosine"]
    assert spread[1.0] < spread[0.0] - 0.05


# --- FedCVAE-Ens and DENSE ------------------------------------------------------------------
def test_elbo_kl_term_is_zero_at_the_prior():
    """mu = 0, log sigma^2 = 0: KL = 0; logits 0 on x = 1/2: BCE = log 2 per pixel.
    mu = 1, log sigma^2 = 0 adds 1/2 per latent dimension."""
    x = torch.full((1, 4), 0.5)
    zero = torch.zeros(1, 3)
    assert float(elbo_loss(torch.zeros(1, 4), x, zero, zero)) == pytest.approx(4 * math.log(2))
    assert float(elbo_loss(torch.zeros(1, 4), x, zero + 1, zero)) == pytest.approx(
        4 * math.log(2) + 1.5)


def test_dense_generator_loss_terms():
    """Eq. 5-6 with the authors' mask (omega = 1 where ensemble and student disagree).
    Teacher logits (2, 0), target 0: CE = log(1 + e^-2). A disagreeing student (0, 2): the KL
    enters with a minus sign (the generator widens the disagreement); an agreeing student
    (1, 0): no adversarial term. `agree` (the DFAD / CMI mask, the pitfall of copying that
    lineage's code) swaps the two cases."""
    t = torch.tensor([[2.0, 0.0]])
    y = torch.tensor([0])
    ce = math.log1p(math.exp(-2))
    differ, same = torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 0.0]])
    kl_differ, kl_same = float(kl_divergence(t, differ)), float(kl_divergence(t, same))
    assert kl_differ > 0 and kl_same > 0
    assert float(generator_loss(t, differ, y, 0.0, 1.0, 1.0)) == \
        pytest.approx(ce - kl_differ, abs=1e-6)
    assert float(generator_loss(t, same, y, 0.0, 1.0, 1.0)) == pytest.approx(ce, abs=1e-6)
    assert float(generator_loss(t, differ, y, 0.0, 1.0, 1.0, "agree")) == \
        pytest.approx(ce, abs=1e-6)
    assert float(generator_loss(t, same, y, 0.0, 1.0, 1.0, "agree")) == \
        pytest.approx(ce - kl_same, abs=1e-6)


def test_dense_batch_norm_statistics():
    """A BatchNorm2d whose running statistics are (0, 1) seeing a batch of constant 3: the
    term is |3 - 0| + |0 - 1| = 4 (one channel)."""
    bn = torch.nn.BatchNorm2d(1).eval()
    stats = BatchNormStatistics([bn])
    bn(torch.full((2, 1, 2, 2), 3.0))
    assert float(stats.loss()) == pytest.approx(4.0)
    assert stats.loss() == 0.0  # read once


@pytest.mark.slow
@pytest.mark.parametrize("method", ["feddyn", "fednova", "moon", "fedaws", "fedcvae", "dense"])
def test_peer_end_to_end(tmp_path, capsys, method):
    extra = {"fedcvae": ["--set", "fedcvae.vae_epochs=20", "--set", "fedcvae.classifier_epochs=5",
                         "--set", "fedcvae.samples_per_class=50"],
             "dense": ["--set", "dense.epochs=10", "--set", "dense.g_steps=1",
                       "--set", "dense.s_steps=5", "--set", "dense.batch_size=64",
                       "--set", "local_epochs=3"],
             # positive-only losses need more than one epoch a round to leave chance
             "fedaws": ["--set", "local_epochs=3"]}  # later --set values win
    args = ["run", "--methods", method, "--splits", "dirichlet:0.5", "--out", str(tmp_path),
            *tiny_overrides(rounds=3), *extra.get(method, [])]
    assert main(args) == 0
    (rec,) = stored_records(tmp_path)
    if method == "dense":  # its student needs more than this budget; its teachers do not
        assert rec.extra["ensemble_test_accuracy"] > 0.15
        assert 0 <= rec.metrics.selected["accuracy"] <= 1
    else:
        assert rec.metrics.selected["accuracy"] > 0.15  # above chance on 10 digits
    assert rec.communication["model"].total_bytes > 0
    assert main(args) == 0  # stored: skipped
    assert "1 already stored, 0 to run" in capsys.readouterr().err


@pytest.mark.slow
def test_fedcvae_unlearning_is_exact(tmp_path, capsys):
    """`bench unlearn` forgets a FedCVAE-Ens client: the result is bitwise the run that never
    had it (a run from scratch with exclude_clients), and the client's class is forgotten."""
    small = ["--set", "fedcvae.vae_epochs=5", "--set", "fedcvae.classifier_epochs=3",
             "--set", "fedcvae.samples_per_class=30"]
    base = ["run", "--methods", "fedcvae", "--splits", "silos", *tiny_overrides(), *small]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    (run_id,) = [r.run_id for r in stored_records(tmp_path / "a")]
    assert main(["unlearn", "--run", run_id, "--clients", "3", "--out",
                 str(tmp_path / "a")]) == 0
    assert "(classes [3])" in capsys.readouterr().out
    assert main([*base, "--set", "fedcvae.exclude_clients=3", "--out",
                 str(tmp_path / "b")]) == 0
    after = stored_records(tmp_path / "a")
    after = next(r for r in after if r.unlearning is not None)
    (scratch,) = stored_records(tmp_path / "b")
    assert after.metrics == scratch.metrics
    assert after.metrics.selected["per_class_accuracy"][3] == 0.0


def test_estimate_counts_every_method(capsys):
    """`bench estimate` (and so `--all`, whose grid holds every method) prices each peer."""
    from bench.methods.registry import METHODS

    assert main(["estimate", "--methods", ",".join(METHODS), "--splits", "silos"]) == 0
    out = capsys.readouterr().out
    for name in METHODS:
        assert f" {name} " in out or f"| {name} |" in out, name
