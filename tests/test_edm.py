"""FederatedFactory's EDM formulation (Karras et al., 2022) and the generator's shape per
resolution, on tiny analytic cases.

Known pitfalls of other implementations, each pinned below:
- diffusers' HeunDiscreteScheduler with Karras sigmas is a sampler for DDPM-trained models: its
  sigmas start at the DDPM schedule's largest (about 20,000 for the capped cosine schedule,
  sqrt((1 - abar) / abar) at t = T - 1), not EDM's 80, and it feeds the network the discrete
  t, not c_noise = ln(sigma) / 4;
- UNet2DModel's "fourier" time embedding divides the network output by the timestep (the
  score-SDE VE convention), which breaks the preconditioning: the EDM denoiser uses the
  sinusoidal one;
- the EDM loss weight lambda(sigma) = (sigma^2 + sigma_d^2) / (sigma sigma_d)^2 is what makes
  the effective target of the raw network unit-variance; dropping it (a plain MSE on D)
  starves the low-noise levels;
- dropout draws from torch's global RNG: without a seeded fork, two trainings of the same
  module differ and the caller's RNG moves.
"""
import math

import numpy as np
import pytest
import torch

from bench.cli import main
from bench.config import parse_overrides, resolve
from bench.methods.federatedfactory.experts import ProductOfExperts, label_prior
from bench.methods.federatedfactory.loss import edm_loss
from bench.methods.federatedfactory.modules import train_module
from bench.methods.federatedfactory.network import (attention_levels, build_unet, denoise,
                                                    describe, generator_resolution)
from bench.methods.federatedfactory.params import PRESETS, FFParams
from bench.methods.federatedfactory.sampler import edm_heun, load_unet, network_evaluations, sample
from bench.methods.federatedfactory.schedule import edm_schedule, sampler_schedule
from bench.runner import execute

EDM = FFParams(formulation="edm", sampler="heun", sampler_steps=50)
PAPER = FFParams(**PRESETS["paper"])


class _Constant(torch.nn.Module):
    """A stand-in network: F = `value` everywhere; records what it was called with."""

    def __init__(self, value=0.0):
        super().__init__()
        self.value, self.calls = value, []

    def forward(self, x, t):
        self.calls.append((x.clone(), torch.as_tensor(t).clone()))
        return type("Out", (), {"sample": torch.full_like(x, self.value)})()


def test_preconditioning_is_karras_table_1():
    sd, x = 0.5, torch.randn(3, 1, 2, 2)
    sigma = torch.tensor([0.01, 0.5, 80.0]).view(-1, 1, 1, 1)
    net = _Constant(0.7)
    d = denoise(net, edm_schedule(EDM), x, sigma)
    c_skip = sd ** 2 / (sigma ** 2 + sd ** 2)
    c_out = sigma * sd / (sigma ** 2 + sd ** 2).sqrt()
    c_in = 1 / (sigma ** 2 + sd ** 2).sqrt()
    torch.testing.assert_close(d, c_skip * x + c_out * 0.7)
    seen_x, seen_t = net.calls[0]
    torch.testing.assert_close(seen_x, c_in * x)
    torch.testing.assert_close(seen_t, sigma.flatten().log() / 4)  # c_noise, not t or sigma


def test_edm_loss_is_unit_weighted_on_the_network_output():
    """lambda(sigma) c_out^2 = 1, so lambda ||D - x0||^2 = ||F - (x0 - c_skip x) / c_out||^2."""
    sd, x0 = 0.5, torch.rand(64, 1, 4, 4) * 2 - 1
    loss = edm_loss(_Constant(0.3), edm_schedule(EDM), x0, torch.Generator().manual_seed(1), EDM)
    g = torch.Generator().manual_seed(1)  # the same draws, in the same order
    sigma = (torch.randn(64, generator=g) * EDM.edm_p_std + EDM.edm_p_mean).exp().view(-1, 1, 1, 1)
    x = x0 + torch.randn(x0.shape, generator=g) * sigma
    c_skip = sd ** 2 / (sigma ** 2 + sd ** 2)
    c_out = sigma * sd / (sigma ** 2 + sd ** 2).sqrt()
    target = (x0 - c_skip * x) / c_out
    torch.testing.assert_close(loss, ((0.3 - target) ** 2).mean(), rtol=1e-4, atol=1e-5)


def test_training_noise_levels_are_log_normal_with_the_authors_values():
    from bench.methods.federatedfactory.loss import edm_sigmas

    ln = edm_sigmas(PAPER, 200_000, torch.Generator().manual_seed(0)).log()
    assert (PAPER.edm_p_mean, PAPER.edm_p_std, PAPER.edm_sigma_data) == (-0.8, 1.6, 0.5)
    assert abs(ln.mean().item() + 0.8) < 0.02 and abs(ln.std().item() - 1.6) < 0.02


def test_sampling_sigmas_are_edm_eq_5_and_not_the_ddpm_heun_ones():
    sched = edm_schedule(EDM)
    sched.set_timesteps(50)
    sig = sched.sigmas.double()
    i = torch.arange(50, dtype=torch.float64)
    eq5 = (80 ** (1 / 7) + i / 49 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    torch.testing.assert_close(sig[:50], eq5, rtol=1e-6, atol=1e-9)
    assert sig[50] == 0
    ddpm_heun = sampler_schedule("heun", 1000)
    ddpm_heun.set_timesteps(50)
    assert ddpm_heun.sigmas.max() > 10_000  # the pitfall: a DDPM model's sigmas, not EDM's 80


def test_heun_solves_the_gaussian_ode_to_second_order():
    """Data N(0, s^2): the ideal denoiser is D(x; sigma) = x s^2 / (s^2 + sigma^2), and the
    probability-flow ODE maps x(sigma_max) to x(0) = x(sigma_max) s / sqrt(s^2 + sigma_max^2)."""
    s = 0.3
    calls = []

    def ideal(x, sigma):
        calls.append(sigma)
        return x * s ** 2 / (s ** 2 + sigma ** 2)

    z = torch.randn(1000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    errors = {}
    for steps in (25, 50, 100):
        sched = edm_schedule(FFParams(formulation="edm", sampler="heun"))
        sched.set_timesteps(steps)
        sig = sched.sigmas.double().tolist()
        calls.clear()
        out = edm_heun(ideal, sig, z * sig[0])
        assert len(calls) == 2 * steps - 1 == network_evaluations(
            FFParams(formulation="edm", sampler="heun", sampler_steps=steps))
        exact = z * sig[0] * s / math.sqrt(s ** 2 + sig[0] ** 2)
        errors[steps] = (out - exact).abs().max().item()
    assert errors[50] < 0.01 * z.abs().max().item() * s
    assert errors[100] < errors[50] / 3 < errors[25] / 9  # second order: error ~ 1 / steps^2


def test_edm_module_is_deterministic_with_dropout_and_leaves_the_global_rng_alone():
    p = FFParams(formulation="edm", sampler="heun", sampler_steps=3, gen_images_seen=128,
                 gen_dropout=0.3)
    x = torch.rand(20, 1, 8, 8) * 2 - 1
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = train_module(p, x, seed=0)
    assert torch.equal(torch.random.get_rng_state(), before)
    b = train_module(p, x, seed=0)
    c = train_module(FFParams(**{**p.__dict__, "gen_dropout": 0.0}), x, seed=0)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)  # dropout did act
    imgs = sample(load_unet(p, a, 1, 8, "cpu"), p, [1, 2, 3], 1, 8, "cpu")
    assert imgs.dtype == torch.uint8 and imgs.shape == (3, 1, 8, 8)


def test_edm_rejects_a_ddpm_sampler(capsys):
    with pytest.raises(ValueError, match="valid choices with formulation=edm: heun"):
        FFParams(formulation="edm", sampler="ddim")
    assert main(["run", "--dry-run", "--set", "federatedfactory.sampler=ddim"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "heun" in err[0]


def test_paper_generator_widths_and_attention_per_resolution():
    """128 x [1, 2, 2, 2] at 28-32 px, 64 x [1, 2, 2, 2] at 128 px, attention at 16 and 8 px."""
    assert generator_resolution(PAPER, 28) == 32
    small, isic = describe(PAPER, 3, 28), describe(PAPER, 3, 128)
    assert small["channels"] == [128, 256, 256, 256] and small["attention_px"] == [16, 8]
    assert isic["channels"] == [64, 128, 128, 128] and isic["attention_px"] == [16]
    assert small["parameters"] == 49_062_787 and isic["parameters"] == 11_824_323
    assert attention_levels(PAPER, 64) == (2, 3)  # 64 -> 32 -> 16 -> 8
    unet = build_unet(PAPER, 3, 128)
    kinds = [type(b).__name__ for b in unet.down_blocks]
    assert kinds == ["DownBlock2D", "DownBlock2D", "DownBlock2D", "AttnDownBlock2D"]
    assert unet.config.time_embedding_type == "positional" and unet.config.dropout == 0.3
    assert network_evaluations(PAPER) == 99


def test_product_of_experts_prior_correction_recovers_the_bayes_posterior():
    """Two experts see the same likelihoods l(y) = p(x | y) under priors pi_1, pi_2, so
    p_k(y | x) = l(y) pi_k(y) / Z_k. The corrected rule with target pi gives
    softmax(log pi + 2 log l), the posterior of two independent observations; the plain rule
    is biased by pi_1 pi_2."""
    like = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    pi1, pi2, target = np.array([0.8, 0.1, 0.1]), np.array([0.1, 0.1, 0.8]), np.ones(3) / 3
    poe = ProductOfExperts(2, 3)
    for pi in (pi1, pi2):
        post = like * pi
        poe.add(np.log(post / post.sum(1, keepdims=True)), pi)
    bayes = target * like ** 2
    np.testing.assert_allclose(poe.corrected(target), bayes / bayes.sum(1, keepdims=True))
    plain = pi1 * pi2 * like ** 2
    np.testing.assert_allclose(poe.proba(), plain / plain.sum(1, keepdims=True))
    assert poe.proba()[0].argmax() == 2 and poe.corrected(target)[0].argmax() == 1


def test_product_of_experts_keeps_what_very_confident_experts_say():
    """Expert 1 is very sure: log p = (0, -150, -300); expert 2 prefers classes 1 and 2:
    (-400, -1, -0.4). The product's log scores are (-400, -151, -300.4): class 1. The pitfall
    (this suite's rule until 2026-11-30): exponentiate in float32 and log again, clipped at
    1e-300; e^-150 and e^-300 underflow to 0, expert 1 then says (0, -690.8, -690.8), and the
    product picks class 0, which expert 2 rules out by e^-400."""
    log_p = [np.array([[0.0, -150.0, -300.0]]), np.array([[-400.0, -1.0, -0.4]])]
    uniform = np.ones(3) / 3
    poe = ProductOfExperts(1, 3)
    for lp in log_p:
        poe.add(lp, uniform)
    assert poe.proba()[0].argmax() == 1 and poe.corrected(uniform)[0].argmax() == 1
    underflowed = sum(np.log(np.clip(np.exp(lp.astype(np.float32)).astype(np.float64), 1e-300,
                                     None)) for lp in log_p)
    assert underflowed[0].argmax() == 0  # what the exponentiated route would have predicted


def test_label_prior_is_smoothed_so_an_unseen_class_is_finite():
    prior = label_prior(torch.tensor([0, 0, 0, 1]), 3)
    np.testing.assert_allclose(prior, [4 / 7, 2 / 7, 1 / 7])


@pytest.mark.slow
def test_an_edm_run_records_its_generator_and_both_product_rules(tmp_path):
    config = resolve("digits", "federatedfactory", "silos", 0, parse_overrides([
        "federatedfactory.formulation=edm", "federatedfactory.sampler=heun",
        "federatedfactory.sampler_steps=3", "federatedfactory.gen_images_seen=128",
        "federatedfactory.samples_per_class=16", "federatedfactory.classifier_epochs=2"]))
    rec, _ = execute(config, torch.device("cpu"), cache_dir=tmp_path)
    gen = rec.extra["generator"]
    assert gen["formulation"] == "edm" and gen["network_evaluations_per_image"] == 5
    assert set(rec.metrics.variants) == {"server", "local", "local_plain"}


def test_dry_run_of_the_paper_grid_shows_the_authors_generators(capsys):
    assert main(["run", "--all", "--dry-run", "--datasets", "cifar10,isic2019",
                 "--methods", "federatedfactory", "--seeds", "0"]) == 0
    out = capsys.readouterr().out
    assert "edm 128x[1,2,2,2] at 32 px, attention at 16,8 px" in out
    assert "edm 64x[1,2,2,2] at 128 px, attention at 16 px" in out
