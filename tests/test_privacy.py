"""The membership-inference audit (methods/privacy.py): its statistics on analytic cases, and
its attacks on planted leaks: a generator trained far past the knee on a few images reads
clearly above 0.5, an untrained one near 0.5; the same for a memorising classifier."""
import dataclasses

import numpy as np
import pytest
import torch

from bench.cli import main
from bench.methods.data import DeviceData
from bench.methods.federatedfactory.audit import module_scores
from bench.methods.federatedfactory.modules import train_module
from bench.methods.federatedfactory.params import FFParams
from bench.methods.models import build_model
from bench.methods.privacy import (Audit, _tpr_at, attack_metrics, balanced, classifier_scores,
                                   excess_over_null)
from bench.runner import cached_dataset
from helpers import stored_records, tiny_overrides


def test_auc_and_tpr_on_analytic_cases():
    rng = np.random.default_rng(0)
    sep = attack_metrics([np.array([3.0, 4.0, 5.0])], [np.array([0.0, 1.0, 2.0])], rng)
    assert sep["auc"] == 1.0 and sep["tpr_at_1pct_fpr"] == 1.0
    assert sep["members"] == sep["non_members"] == 3
    assert attack_metrics([np.zeros(4)], [np.zeros(4)], rng)["auc"] == 0.5  # ties: 1/2
    assert attack_metrics([np.array([0.0])], [np.array([1.0])], rng)["auc"] == 0.0
    # one member in two beats the other non-member: (1 + 0.5 + 0 + 1) / 4 with a tie
    assert attack_metrics([np.array([1.0, 2.0])], [np.array([1.0, 0.0])], rng)["auc"] == \
        pytest.approx(0.875)
    # the threshold lets through at most 1 % of the non-members: 1 of 100 here (99 scores
    # above 98), so 98.5 and 99.5 count: 2 of 3. The old quantile rule (threshold 99: none of
    # 100 through, a TPR at 0 % FPR) gave 1/3.
    non = np.arange(100.0)
    assert _tpr_at(np.array([98.5, 99.5, 50.0]), non, 0.01) == (pytest.approx(2 / 3), 0.01)
    # 200 non-members: two through; ties at the threshold stay below it (the FPR reached
    # is then under the target, and said)
    assert _tpr_at(np.array([197.5]), np.arange(200.0), 0.01) == (1.0, 0.01)
    tied = np.array([0.0] * 98 + [5.0, 5.0])
    assert _tpr_at(np.array([5.0, 6.0]), tied, 0.01) == (0.5, 0.0)
    assert _tpr_at(np.array([1.0]), np.array([0.0, 2.0]), 0.01) == (0.0, 0.0)  # 0 allowed


def test_the_classifier_score_does_not_saturate():
    """LiRA's logit-scaled confidence in float64: margins of 20 and 40 score differently where
    float32 cross-entropy (the old score) is exactly 0 for both, so members and non-members
    tie."""
    import torch.nn.functional as F

    from bench.methods.privacy import logit_scaled_confidence

    logits = torch.tensor([[20.0, 0.0, 0.0], [40.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    y = torch.tensor([0, 0, 1])
    old = -F.cross_entropy(logits, y, reduction="none")
    assert old[0] == old[1] == 0.0  # saturated
    score = logit_scaled_confidence(logits, y)
    assert score.dtype == torch.float64 and score[1] > score[0] > 19
    # log p - log(1 - p) for the third row, computed the long way
    p = torch.softmax(logits[2].double(), 0)[1]
    assert score[2].item() == pytest.approx((torch.log(p) - torch.log1p(-p)).item(), rel=1e-12)


def test_each_artefact_is_attacked_on_its_own_and_weighted_by_its_members():
    """Two artefacts whose scores live on other scales, each separating its members: the
    headline is 1.0. Pitfall: pooling raw scores mixes the scales (two perfect attacks read
    0.75). The old audit pooled after subtracting each artefact's median non-member score,
    which still compares one artefact's scores with another's: two attacks that fail (0.5
    each) read 56 % from the cross-artefact pairs alone."""
    rng = np.random.default_rng(0)
    a_m, a_n = np.array([10.0, 11.0]), np.array([8.0, 9.0])
    b_m, b_n = np.array([-8.0, -7.0]), np.array([-10.0, -9.0])
    out = attack_metrics([a_m, b_m], [a_n, b_n], rng)
    assert out["auc"] == 1.0 and out["per_artefact_auc"] == [1.0, 1.0]
    assert out["per_artefact_tpr"] == [1.0, 1.0]
    assert attack_metrics([np.concatenate([a_m, b_m])], [np.concatenate([a_n, b_n])],
                          rng)["auc"] == 0.75

    fail_a, fail_b = (np.array([10.0, 11.0]), np.array([0.0, 20.0])), \
        (np.array([1.0, 1.1]), np.array([0.9, 1.2]))

    def old_pooled(pairs):  # the audit before this fix
        m = np.concatenate([a - np.median(b) for a, b in pairs])
        n = np.concatenate([b - np.median(b) for _, b in pairs])
        return attack_metrics([m], [n], rng)["auc"]

    assert old_pooled([fail_a, fail_b]) == pytest.approx(9 / 16)
    assert attack_metrics(*zip(fail_a, fail_b), rng)["auc"] == 0.5
    # the members weight the mean: 2 members at 1.0, 6 at 0.5
    c_m, c_n = np.array([1.0, 1, 1, 2, 2, 2]), np.array([1.0, 1, 1, 2, 2, 2])
    assert attack_metrics([a_m, c_m], [a_n, c_n], rng)["auc"] == pytest.approx(
        (2 * 1.0 + 6 * 0.5) / 8)


def test_the_bootstrap_resamples_images_and_draws_a_shared_image_once_for_all():
    """1,000 replicates (200 put about 5 in each 2.5 % tail). An image that two artefacts
    score (a validation image both attack as a non-member) is drawn once for both: resampled
    as independent, the two artefacts' errors cancel and the interval comes out too thin."""
    from bench.methods.privacy import BOOTSTRAP, _counts

    assert BOOTSTRAP >= 1000
    a, b = _counts([np.array([5, 7, 9]), np.array([7, 9, 11])], np.random.default_rng(0))
    assert a.shape == b.shape == (BOOTSTRAP, 3)
    assert (a[:, 1:] == b[:, :2]).all()  # images 7 and 9
    assert ((a.sum(1) + b[:, 2]) == 4).all()  # four distinct images, four draws
    # one model attacked twice on the same images: as wide as attacking it once
    rng = np.random.default_rng(1)
    m, n = rng.normal(0.3, 1, 60), rng.normal(0, 1, 60)
    ids = [np.arange(60)] * 2
    width = lambda out: out["auc_ci"][1] - out["auc_ci"][0]  # noqa: E731
    once = width(attack_metrics([m], [n], np.random.default_rng(2)))
    shared = width(attack_metrics([m, m], [n, n], np.random.default_rng(2), ids, ids))
    independent = width(attack_metrics([m, m], [n, n], np.random.default_rng(2)))
    assert shared == pytest.approx(once, rel=0.15) and independent < 0.85 * shared


def test_the_tpr_interval_holds_its_estimate_with_few_non_members():
    """Under 100 non-members an artefact's threshold is its largest non-member score (none of
    them may pass it), and a bootstrap that resamples the non-members lowers that threshold in
    every replicate that leaves the largest out: the TPR's interval sat above its own estimate
    (FederatedFactory's 26 modules under Dirichlet 0.1 on digits, 11 non-members each, read
    5.6 % [6.0, 16.1]; the old rule misses at 6 of these 20 draws). The interval holds each
    threshold where the estimate put it and resamples the members (a binomial's width, not a
    wider one that would hold anything); the AUC's is unchanged."""
    for seed in range(20):
        data = np.random.default_rng(seed)  # no leak: members and non-members alike
        members = [data.normal(size=11) for _ in range(26)]
        non_members = [data.normal(size=11) for _ in range(26)]
        out = attack_metrics(members, non_members, np.random.default_rng(0))
        tpr, (lo, hi) = out["tpr_at_1pct_fpr"], out["tpr_ci"]
        assert out["fpr_reached"] == 0.0
        assert lo <= tpr <= hi, (seed, out)
        assert hi - lo < 1.5 * 3.92 * np.sqrt(tpr * (1 - tpr) / out["members"]), (seed, out)
        assert out["auc_ci"][0] <= out["auc"] <= out["auc_ci"][1], (seed, out)
    audit = Audit.of("x", "y", out)
    assert audit.settings["tpr_interval"] == "members resampled, each artefact's threshold held"


def test_the_null_control_reads_half_and_catches_non_members_from_another_source():
    """The null control: a network trained on the other half of the validation split (it has
    seen the members' source, but neither set) attacks the audit's images. Members against
    validation non-members: 0.5 within its interval. Planted: non-members from another
    source (the validation images shifted by a pixel; the old audit drew non-members from the
    test split, which for PneumoniaMNIST is another source): the null reads above 0.5 and the
    audit says the control fails. The network at its initialisation, a weaker null, reads the
    planted shift as 0.5 too: it cannot see a source."""
    from bench.config import parse_overrides, resolve
    from bench.methods.privacy import (Audit, member_pairs, null_epochs, null_network,
                                       pair_scores, validation_halves)
    from bench.runner import run_context

    ctx, _ = run_context(resolve("digits", "fedavg", "iid", 0, parse_overrides([])),
                         torch.device("cpu"))
    first, second = validation_halves(ctx)
    assert not set(first) & set(second) and len(first) + len(second) == len(ctx.data.y_val)
    rng = np.random.default_rng(0)
    m, n = member_pairs(ctx, torch.arange(len(ctx.data.y_train)), first, rng)
    assert set(n) <= set(first) and len(m) == len(n) > 100
    net = null_network(ctx, second, null_epochs(ctx))
    assert null_epochs(ctx) == 20 and null_epochs(ctx, 4) == 4  # the run's 15 x 10, capped

    def null_of(network):
        out = attack_metrics(*[[s] for s in pair_scores(ctx, network, m, n)], rng)
        return Audit("x", null_auc=out["auc"], null_auc_ci=tuple(out["auc_ci"]))

    assert null_of(net).null_holds
    real = ctx.data.x_val
    ctx.data.x_val = torch.roll(real, 1, dims=-1)  # planted: another source
    shifted = null_of(net)
    assert not shifted.null_holds and shifted.null_auc > 0.55, shifted
    assert null_of(ctx.new_model("x")).null_holds  # an untrained network is blind to it


def test_the_excess_over_the_null_cancels_a_source_effect_and_keeps_a_leak():
    """Members and non-members from two sources: every member image reads 1 higher, to the
    audited artefact and to the null network alike (the source effect both see), each attack
    with noise of its own. The null control fails; the excess over it holds 0 in its paired
    interval. A planted leak (members 1 higher again, to the audited artefact only) shows in
    the excess. The pairing matters: its interval is narrower than the two attacks' own
    intervals on average, where the difference of two independent draws is wider than either
    (a planted unpaired draw fails here)."""
    gen = np.random.default_rng(1)
    n = 300
    source = np.r_[np.ones(n), np.zeros(n)] + gen.normal(size=2 * n)  # what the images are

    def attack(extra=0.0):  # one attack's scores of the same images
        s = source + 0.3 * gen.normal(size=2 * n)
        return s[:n] + extra, s[n:]

    null, blind, leaky = attack(), attack(), attack(extra=1.0)
    rng = np.random.default_rng(0)
    control = attack_metrics([null[0]], [null[1]], rng)
    assert not Audit("x", null_auc_ci=tuple(control["auc_ci"])).null_holds
    excess, (lo, hi) = excess_over_null([blind], [null], rng)
    audit = Audit("x", auc=0.0, excess_auc=excess, excess_auc_ci=(lo, hi))
    assert lo < 0 < hi and not audit.leaks_beyond_null, (excess, lo, hi)
    apart = attack_metrics([blind[0]], [blind[1]], rng)["auc_ci"]
    assert hi - lo < 0.5 * ((apart[1] - apart[0]) + (control["auc_ci"][1] - control["auc_ci"][0]))
    excess, (lo, hi) = excess_over_null([leaky], [null], rng)
    assert lo > 0.1 and lo < excess < hi, (excess, lo, hi)  # an interval of the AUC's excess
    assert excess == pytest.approx(attack_metrics([leaky[0]], [leaky[1]], rng)["auc"]
                                   - control["auc"])
    same = excess_over_null([null], [null], rng)  # the null against itself: exactly 0
    assert same == (0.0, (0.0, 0.0))
    # several artefacts sharing non-member images (ids), each paired with its own null: the
    # null of each against itself is 0 in every replicate, so a misaligned pairing shows
    two = [(null[0][:150], null[1][:100]), (leaky[0][150:], leaky[1][:100])]
    ids = ([np.arange(150), np.arange(150, 300)], [np.arange(100), np.arange(100)])
    assert excess_over_null(two, two, rng, *ids) == (0.0, (0.0, 0.0))
    assert excess_over_null(two, two[::-1], rng, *ids)[1] != (0.0, 0.0)
    assert Audit("x").leaks_beyond_null is None  # audits before the excess: not measured


def test_members_and_non_members_are_balanced_class_by_class():
    y_train = torch.tensor([0, 0, 0, 1, 1, 2])
    y_val = torch.tensor([0, 1, 1, 1, 3])
    m, n = balanced(torch.arange(6), y_train, y_val, np.random.default_rng(0))
    assert len(m) == len(n) == 3  # class 0: one held-out image; class 1: two; class 2: none
    assert sorted(y_train[m].tolist()) == sorted(y_val[n].tolist()) == [0, 1, 1]


@pytest.mark.slow
def test_a_generator_trained_past_the_knee_on_few_images_leaks_an_untrained_one_does_not():
    d = cached_dataset("digits", None)
    members, held = d.x_train[d.y_train == 0][:16], d.x_test[d.y_test == 0][:16]
    cpu, rng = torch.device("cpu"), np.random.default_rng(0)
    overfit = dataclasses.replace(FFParams(), gen_images_seen=16 * 300, gen_batch_size=16)
    state = train_module(overfit, members.float().mul(2 / 255).sub(1), seed=0)
    leak = attack_metrics([module_scores(overfit, state, members, 1, cpu)],
                          [module_scores(overfit, state, held, 1, cpu)], rng)
    assert leak["auc"] > 0.8 and leak["auc_ci"][0] > 0.5, leak
    # untrained (zero steps): train and test images of the same classes look alike to it
    untrained = dataclasses.replace(FFParams(), gen_images_seen=0)
    members, held = d.x_train[d.y_train < 4][:64], d.x_test[d.y_test < 4][:64]
    state = train_module(untrained, members.float().mul(2 / 255).sub(1), seed=0)
    none = attack_metrics([module_scores(untrained, state, members, 1, cpu)],
                          [module_scores(untrained, state, held, 1, cpu)], rng)
    assert abs(none["auc"] - 0.5) < 0.12 and none["auc_ci"][0] < 0.5 < none["auc_ci"][1], none


def test_a_memorising_classifier_leaks_through_its_loss():
    """Yeom et al.'s loss attack: a classifier fitted to 48 images for many steps gives them a
    lower loss than held-out images of the same classes; an untrained one does not."""
    d = cached_dataset("digits", None)
    data = DeviceData(d, 8, torch.device("cpu"))
    g = torch.Generator().manual_seed(0)
    m = torch.randperm(len(d.y_train), generator=g)[:48]
    n = torch.randperm(len(d.y_test), generator=g)[:48]
    torch.manual_seed(0)
    model = build_model("cnn", 1, 10, 8, "group")
    fresh = attack_metrics([classifier_scores(model, data, data.x_train[m], data.y_train[m])],
                           [classifier_scores(model, data, data.x_test[n], data.y_test[n])],
                           np.random.default_rng(0))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = data.to_float(data.x_train[m]), data.y_train[m]
    model.train()
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    leak = attack_metrics([classifier_scores(model, data, data.x_train[m], data.y_train[m])],
                          [classifier_scores(model, data, data.x_test[n], data.y_test[n])],
                          np.random.default_rng(0))
    assert leak["auc"] > 0.75 and leak["auc_ci"][0] > 0.5, leak
    assert abs(fresh["auc"] - 0.5) < 0.15, fresh


def test_records_carry_the_audit_and_the_table_a_membership_column(tmp_path, capsys):
    assert main(["run", "--methods", "fedavg,local_only,centralized", "--splits", "silos",
                 "--out", str(tmp_path), *tiny_overrides(rounds=2)]) == 0
    records = {r.method: r.audit["shared"] for r in stored_records(tmp_path)}
    fed = records["fedavg"]
    assert fed.attack.startswith("threshold on the logit-scaled") and 0 <= fed.auc <= 1
    assert fed.auc_ci[0] <= fed.auc <= fed.auc_ci[1]
    assert fed.members == fed.non_members > 0 and fed.non_members_from == "validation"
    assert fed.bootstrap >= 1000 and len(fed.per_artefact_tpr) == len(fed.per_artefact_auc)
    assert fed.null_artefact.startswith("the classifier attack on a network trained")
    assert fed.null_holds, fed  # the null control is in every audit, and reads 0.5
    assert fed.excess_auc == pytest.approx(fed.auc - fed.null_auc)
    assert fed.excess_auc_ci[0] <= fed.excess_auc <= fed.excess_auc_ci[1]
    assert records["local_only"].not_audited == "it shares nothing"
    assert "images themselves" in records["centralized"].not_audited
    capsys.readouterr()
    assert main(["table", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out.split("membership-inference AUC")[1]
    assert f"| fedavg | {100 * fed.auc:.1f} (n=1) |" in out and "local_only" not in out
    assert main(["report", "--out", str(tmp_path), "--metrics", "membership_excess"]) == 0
    out = capsys.readouterr().out
    assert "minus its null control's" in out and f"{100 * fed.excess_auc:.1f} (n=1)" in out



@pytest.mark.parametrize("at_once", [1, 3])
def test_the_server_attacks_each_clients_model_of_its_last_round(tmp_path, monkeypatch,
                                                                 at_once):
    """Weight averaging: the headline audit scores each client's trained model as the server
    receives it in the last round the client takes part in (a client never sampled is not
    attacked), one client at a time and vectorised; the global model every client receives is
    audited beside it (`audit["received"]`, on the same images). A planted "attack the client's first model" fails
    the comparison of fingerprints below (clients take part in several rounds)."""
    from bench.methods import federated
    from bench.methods.models import weights_sha256

    trained, observed = {}, {}  # (client, round) -> sha of its trained model; purpose -> ...
    phase, observe = federated.client_phase, federated.ClassifierAudit.observe

    def spy_phase(*args, **kwargs):
        *head, on_trained = args

        def spy(k, r, model):
            trained[(k, r)] = weights_sha256([model])
            on_trained(k, r, model)
        return phase(*head, spy, **kwargs)

    images = {}

    def spy_observe(self, k, model):
        observed.setdefault(self.purpose, {})[k] = weights_sha256([model])
        images.setdefault(self.purpose, {})[k] = self.pairs[k]
        return observe(self, k, model)

    monkeypatch.setattr(federated, "client_phase", spy_phase)
    monkeypatch.setattr(federated.ClassifierAudit, "observe", spy_observe)
    assert main(["run", "--methods", "fedavg", "--splits", "silos", "--out", str(tmp_path),
                 "--executor", "sequential", "--set", "norm=group",
                 "--set", "client_fraction=0.4", "--clients-at-once", str(at_once),
                 *tiny_overrides(rounds=4)]) == 0
    (record,) = stored_records(tmp_path)
    returned, received = record.audit["shared"], record.audit["received"]
    assert returned.artefact == federated.RETURNED and 0 <= returned.auc <= 1
    assert received.artefact.startswith("the final global model")
    last = {}
    for k, r in sorted(trained, key=lambda kr: kr[1]):
        last[k] = r
    assert len(trained) == 4 * 4 and len(last) < len(trained)  # some client came back
    assert observed["rounds"] == {k: trained[(k, r)] for k, r in last.items()}
    assert len(returned.per_artefact_auc) == len(last)
    assert len(set(observed["rounds/received"].values())) == 1  # the final global model
    # both views attack the same images (the old audit drew each its own sample)
    assert all(images["rounds/received"][k] is images["rounds"][k] for k in last)
