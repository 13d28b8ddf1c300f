"""Differential privacy for the one-shot methods: FederatedFactory's modules by DPDM (each
image's diffusion loss averaged over its noise draws, then clipped and noised), its local
classifiers, DENSE's uploaded classifiers and FedCVAE-Ens's CVAEs by DP-SGD, and how a FederatedFactory client's
epsilon composes over what it sends (methods/federatedfactory/private.py).

Pitfalls named here: a DP module served from the cache of a module trained without DP (the
same images and seed), a client's epsilon taken as its modules' alone when its local
classifier trains on the same images, and a classifier accounted at its real images' rate when
the synthetic images dilute its batches."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.cli import main
from bench.methods.dp import DPConfig, clipped_noisy_gradients, composed, noise_multiplier
from bench.methods.federatedfactory.loss import edm_loss, edm_sigmas, epsilon_loss, loss_of_one
from bench.methods.federatedfactory.modules import ModulePrivacy, private_step, training_steps
from bench.methods.federatedfactory.network import build_unet
from bench.methods.federatedfactory.params import FFParams
from bench.methods.federatedfactory.private import plan
from bench.methods.federatedfactory.schedule import edm_schedule, training_schedule
from bench.runner import cached_dataset
from helpers import TINY_FF_CLI, stored_records, tiny_overrides


@pytest.mark.parametrize("formulation", ["edm", "ddpm"])
def test_dpdm_clips_each_images_gradient_of_its_loss_over_its_noise_draws(formulation):
    """Each image's loss is the formulation's training loss (loss.py's `edm_loss` or
    `epsilon_loss`, the losses training without DP uses) on K copies of the image with its K
    draws; its gradient, by autograd one image at a time, is clipped to C; the clipped
    gradients are summed and divided by the expected batch. With sigma 0 that is all of
    DPDM's step."""
    torch.manual_seed(0)
    p = FFParams(formulation=formulation, sampler="heun" if formulation == "edm" else "ddim")
    unet = build_unet(p, 1, 8)
    schedule = edm_schedule(p) if formulation == "edm" else training_schedule(p.train_timesteps)
    x0 = torch.rand(3, 1, 8, 8) * 2 - 1
    k, clip = 2, 0.05  # clip small enough that every image's gradient is clipped
    training_loss = (lambda x, g: edm_loss(unet, schedule, x, g, p)) if formulation == "edm" \
        else (lambda x, g: epsilon_loss(unet, schedule, x, g))
    levels, draws, expected, norms = [], [], [torch.zeros_like(q) for q in unet.parameters()], []
    for i in range(3):
        copies = x0[i][None].expand(k, 1, 8, 8)
        grads = torch.autograd.grad(training_loss(copies, torch.Generator().manual_seed(i)),
                                    list(unet.parameters()))
        # the same draws, as the training loss drew them from its generator
        g = torch.Generator().manual_seed(i)
        levels.append(edm_sigmas(p, k, g).flatten() if formulation == "edm" else
                      torch.randint(0, p.train_timesteps, (k,), generator=g))
        draws.append(torch.randn((k, 1, 8, 8), generator=g))
        norm = float(torch.sqrt(sum(q.pow(2).sum() for q in grads)))
        norms.append(norm)
        for e, q in zip(expected, grads):
            e += q * min(1.0, clip / norm) / 5.0
    assert min(norms) > clip
    got = clipped_noisy_gradients(unet, loss_of_one(p, schedule),
                                  (x0, torch.stack(levels), torch.stack(draws)), clip, 0.0, 5.0,
                                  torch.Generator().manual_seed(0))
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-7)


def test_a_dpdm_step_samples_every_image_at_its_rate_and_divides_by_the_expected_batch():
    """`private_step` draws its batch by Poisson sampling at q = gen_batch_size / n (here 1:
    fewer images than the batch), then each image's K draws, from the module's generator, and
    divides by q n; its noise has standard deviation sigma C / (q n)."""
    torch.manual_seed(0)
    p = FFParams()
    unet = build_unet(p, 1, 8)
    images = torch.rand(5, 1, 8, 8) * 2 - 1
    step = private_step(p, unet, images, torch.Generator().manual_seed(1),
                        torch.Generator().manual_seed(2), ModulePrivacy(1.0, 0.0, 3, 2))
    g = torch.Generator().manual_seed(1)
    assert bool((torch.rand(5, generator=g) < 1.0).all())
    levels = edm_sigmas(p, 15, g).view(5, 3)
    draws = torch.randn((5, 3, 1, 8, 8), generator=g)
    expected = clipped_noisy_gradients(unet, loss_of_one(p, edm_schedule(p)),
                                       (images, levels, draws), 1.0, 0.0, 5.0,
                                       torch.Generator())
    for got, e in zip(step(), expected):
        torch.testing.assert_close(got, e)
    # the noise: the same step at sigma 3, clip 2, less the step at sigma 0, clip 2
    def at(sigma):
        return private_step(p, unet, images, torch.Generator().manual_seed(1),
                            torch.Generator().manual_seed(2), ModulePrivacy(2.0, sigma, 3, 2))()
    noise = [a - b for a, b in zip(at(3.0), at(0.0))]
    big = max(noise, key=lambda t: t.numel())
    assert big.numel() > 10_000 and big.std().item() == pytest.approx(3.0 * 2.0 / 5, rel=0.03)


def test_a_clients_epsilon_composes_its_modules_in_parallel_and_its_classifier_in_turn():
    """Server mode: a client's modules see disjoint images, so its epsilon is its largest
    module's, each module calibrated to the whole target. Local mode: each image trains a
    module and the classifier, so the target is split and the client's epsilon is the
    composition, under the target and above either part (a client's epsilon taken as its
    modules' alone understates it). The classifier is accounted at the rate of its whole
    training set, real and synthetic images together."""
    p = FFParams()
    dp = DPConfig(epsilon=4.0)
    modules = {(0, 0): 60, (0, 1): 200, (1, 1): 120}
    sizes = {0: 260 + 300, 1: 120 + 600}
    server = plan(p, dp, modules, sizes, 64, local_mode=False)
    rows = {r["party"]: r for r in server.spent.parties}
    assert set(server.modules) == set(modules) and not server.classifiers
    assert all(3.9 <= rows[f"client {k} class {c} module"]["epsilon"] <= 4.0
               for k, c in modules)
    assert rows["client 0"]["epsilon"] == max(rows["client 0 class 0 module"]["epsilon"],
                                              rows["client 0 class 1 module"]["epsilon"])
    assert rows["client 0 class 0 module"]["sample_rate"] == 1.0  # 60 images, batch 64
    assert rows["client 0 class 1 module"]["sample_rate"] == pytest.approx(64 / 200)
    assert server.spent.epsilon == max(rows["client 0"]["epsilon"], rows["client 1"]["epsilon"])

    local = plan(p, dp, modules, sizes, 64, local_mode=True)
    rows = {r["party"]: r for r in local.spent.parties}
    assert rows["client 1 classifier"]["sample_rate"] == pytest.approx(64 / 720)
    assert rows["client 1 classifier"]["steps"] == p.classifier_epochs * 12  # ceil(720 / 64)
    module, classifier = rows["client 1 class 1 module"], rows["client 1 classifier"]
    assert module["epsilon"] <= 2.0 and classifier["epsilon"] <= 2.0
    both = composed(dp, [(module["noise_multiplier"], module["sample_rate"], module["steps"]),
                         (classifier["noise_multiplier"], classifier["sample_rate"],
                          classifier["steps"])])
    assert rows["client 1"]["epsilon"] == pytest.approx(min(both, module["epsilon"]
                                                            + classifier["epsilon"]))
    assert max(module["epsilon"], classifier["epsilon"]) < rows["client 1"]["epsilon"] <= 4.0
    assert local.spent.epsilon <= 4.0
    # a member client without a module (fewer than min_class_samples of every class) still
    # sends a classifier: planned and accounted, its epsilon the classifier's
    alone = plan(p, dp, modules, {**sizes, 2: 9 * 300 + 40}, 64, local_mode=True)
    rows = {r["party"]: r for r in alone.spent.parties}
    assert 2 in alone.classifiers
    assert rows["client 2"]["epsilon"] == rows["client 2 classifier"]["epsilon"] <= 2.0
    # the split costs noise: each module needs more than with the whole target
    assert local.modules[(1, 1)] > server.modules[(1, 1)]
    sigma, _ = noise_multiplier(dataclasses.replace(dp, epsilon=2.0, delta=5e-6),
                                64 / 120, training_steps(p))
    assert local.modules[(1, 1)] == pytest.approx(sigma)


def test_a_dp_federatedfactory_run_trains_its_own_modules_and_records_what_it_spent(tmp_path):
    """A DP run beside a run without DP in one folder: its modules are trained anew (a
    cache hit would serve modules trained without noise) and with noise, and the record holds
    every module's, every local classifier's and every client's epsilon."""
    args = ["run", "--methods", "federatedfactory", "--splits", "silos", "--executor",
            "sequential", "--out", str(tmp_path), *TINY_FF_CLI,
            "--set", "federatedfactory.gen_images_seen=128"]
    assert main([*args, "--set", "federatedfactory.modes=server"]) == 0
    assert main([*args, "--set", "dp.epsilon=8", "--set", "dp.noise_draws=2"]) == 0
    records = {bool(r.dp): r for r in stored_records(tmp_path)}
    plain, private = records[False], records[True]
    assert all(m["cache"] == "miss" for m in private.extra["modules"])
    assert {m["key"] for m in private.extra["modules"]}.isdisjoint(
        {m["key"] for m in plain.extra["modules"]})
    parties = {r["party"]: r for r in private.dp.parties}
    n_modules = len(private.extra["modules"])
    assert sum(name.endswith("module") for name in parties) == n_modules
    assert sum(name.endswith("classifier") for name in parties) == 10
    clients = [r["epsilon"] for name, r in parties.items() if name.count(" ") == 1]
    assert len(clients) == 10 and private.dp.epsilon == max(clients) <= 8.0
    assert private.config.dp.noise_draws == 2
    # the server's classifier trains on synthetic images alone, without DP in both runs: its
    # numbers differ only if the modules that drew them do
    assert private.metrics.variants["server"] != plain.metrics.variants["server"]
    # the sample grid a DP run publishes shows validation images, never training ones: row c
    # (8 px cells, 2 px between rows) holds 8 synthetic images, a 6 px gap, then 8 real ones
    data = cached_dataset("digits", None)
    for record, x, y in ((private, data.x_val, data.y_val), (plain, data.x_train, data.y_train)):
        (png,) = Path(tmp_path).rglob(record.artifacts["samples"])
        grid = torch.from_numpy(np.asarray(Image.open(png)))
        for c in range(10):
            real = torch.cat(list(x[y == c][:8, 0]), dim=1)
            assert torch.equal(grid[10 * c:10 * c + 8, 8 * 8 + 6:], real)


def test_a_dp_dense_run_privatises_the_uploaded_classifiers(tmp_path, capsys):
    """DENSE's clients train their classifiers by DP-SGD, each accounted over its epochs; the
    generator and the student only read them (so the runs differ only through them).
    BatchNorm classifiers cannot be privatised."""
    args = ["run", "--methods", "dense", "--splits", "silos", "--executor", "sequential",
            "--out", str(tmp_path), *tiny_overrides(rounds=1), "--set", "dense.epochs=2"]
    assert main(args) == 0
    args += ["--set", "dp.epsilon=4"]
    assert main(args) == 0
    records = {bool(r.dp): r for r in stored_records(tmp_path)}
    rec = records[True]
    assert rec.extra["ensemble_test_accuracy"] != records[False].extra["ensemble_test_accuracy"]
    assert len(rec.dp.parties) == 10 and 3.9 <= rec.dp.epsilon <= 4.0
    # one round of one epoch over about 120 images in batches of 64: two DP-SGD steps each
    assert all(r["steps"] == 2 for r in rec.dp.parties)
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "bn"), "--set",
                 "dense.classifier_norm=batch"]) == 2
    err = capsys.readouterr().err.strip()
    assert "classifier_norm=batch with DP" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "bn").exists()


def test_a_dp_fedcvae_run_trains_each_cvae_by_dp_sgd(tmp_path):
    """Each client's CVAE by DP-SGD over its epochs (the negative ELBO's per-image gradients:
    the one-hot labels by comparison, since vmap cannot take F.one_hot); the record keeps
    each client's epsilon, and the noise changes the decoders."""
    args = ["run", "--methods", "fedcvae", "--splits", "silos", "--executor", "sequential",
            "--out", str(tmp_path), *tiny_overrides(rounds=1),
            "--set", "fedcvae.classifier_epochs=2", "--set", "fedcvae.samples_per_class=16"]
    assert main(args) == 0
    assert main([*args, "--set", "dp.epsilon=4"]) == 0
    records = {bool(r.dp): r for r in stored_records(tmp_path)}
    plain, private = records[False], records[True]
    assert [r["party"] for r in private.dp.parties] == [f"client {k}" for k in range(10)]
    assert all(r["steps"] == 2 for r in private.dp.parties)  # 1 epoch, about 120 images, 64
    assert 3.9 <= private.dp.epsilon <= 4.0
    assert private.metrics != plain.metrics


def test_per_image_gradients_in_chunks_sum_to_the_same(monkeypatch):
    """Per-image gradients hold a copy of the parameters per image: a batch's are computed in
    chunks of at most PER_EXAMPLE_BYTES (the paper preset's UNet could not hold a batch's at
    once). Chunks of one image give the clipped sum of the whole batch at once; a digits
    model's batch fits in one chunk."""
    import bench.methods.dp as dp

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    x, y = torch.randn(7, 1, 8, 8), torch.randint(0, 10, (7,))
    whole = dp.private_gradients(model, x, y, 0.5, 0.0, 7.0, torch.Generator())
    assert dp.PER_EXAMPLE_BYTES // (4 * 650) >= 64
    monkeypatch.setattr(dp, "PER_EXAMPLE_BYTES", 4 * 650)  # one image per chunk
    chunked = dp.private_gradients(model, x, y, 0.5, 0.0, 7.0, torch.Generator())
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a, b)
