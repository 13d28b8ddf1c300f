"""The training losses of the two formulations; every draw comes from `gen` (CPU), then moves.

DDPM: epsilon prediction (Ho et al., 2020, Eq. 14, the "simple" loss),

    L = E_{x0, t ~ U{0..T-1}, eps ~ N(0, I)} || eps - eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t) ||^2

EDM (Karras et al., 2022, Eq. 8 with Table 1, "Ours"):

    L = E_{x0, ln sigma ~ N(P_mean, P_std^2), n ~ N(0, sigma^2 I)} lambda(sigma) || D(x0 + n; sigma) - x0 ||^2,
    lambda(sigma) = (sigma^2 + sigma_d^2) / (sigma sigma_d)^2,

which is || F - (x0 - c_skip (x0 + n)) / c_out ||^2 since lambda c_out^2 = 1: unit weight on the
raw network output at every noise level (tests/test_edm.py checks the identity). EDM2's learned
per-level uncertainty weight (Karras et al., 2024) is not part of this loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .network import denoise
from .params import FFParams


def epsilon_loss(unet, schedule, x0: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n = x0.shape[0]
    t = torch.randint(0, schedule.config.num_train_timesteps, (n,), generator=gen)
    eps = torch.randn(x0.shape, generator=gen)
    t, eps = t.to(x0.device), eps.to(x0.device, x0.dtype)
    xt = schedule.add_noise(x0, eps, t)
    return F.mse_loss(unet(xt, t).sample.float(), eps.float())


def edm_sigmas(p: FFParams, n: int, gen: torch.Generator) -> torch.Tensor:
    """Training noise levels: ln sigma ~ N(P_mean, P_std^2), shape (n, 1, 1, 1)."""
    return (torch.randn(n, generator=gen) * p.edm_p_std + p.edm_p_mean).exp().view(-1, 1, 1, 1)


def edm_loss(unet, schedule, x0: torch.Tensor, gen: torch.Generator,
             p: FFParams) -> torch.Tensor:
    sigma = edm_sigmas(p, x0.shape[0], gen)
    noise = torch.randn(x0.shape, generator=gen)
    sigma, noise = sigma.to(x0.device), noise.to(x0.device, x0.dtype)
    sd = p.edm_sigma_data
    weight = (sigma ** 2 + sd ** 2) / (sigma * sd) ** 2
    d = denoise(unet, schedule, x0 + noise * sigma, sigma)
    return (weight * (d - x0.float()) ** 2).mean()


@torch.no_grad()
def per_image_loss(unet, schedule, x0: torch.Tensor, level: float, noise: torch.Tensor,
                   p: FFParams) -> torch.Tensor:
    """The formulation's training loss of each image at one fixed noise level (`level`: EDM's
    sigma, or DDPM's timestep as a fraction of T) with the given noise: what a loss-threshold
    membership attack reads (methods/privacy.py)."""
    if p.formulation == "edm":
        sd = p.edm_sigma_data
        sigma = torch.full((x0.shape[0], 1, 1, 1), level, device=x0.device)
        weight = (sigma ** 2 + sd ** 2) / (sigma * sd) ** 2
        d = denoise(unet, schedule, x0 + noise * sigma, sigma)
        return (weight * (d - x0.float()) ** 2).flatten(1).mean(1)
    t = torch.full((x0.shape[0],), int(level * schedule.config.num_train_timesteps),
                   device=x0.device, dtype=torch.int64)
    xt = schedule.add_noise(x0, noise, t)
    return (unet(xt, t).sample.float() - noise.float()).square().flatten(1).mean(1)


def loss_of_one(p: FFParams, schedule):
    """(call, x0, levels, draws) -> one image's training loss averaged over its K noise draws
    (DPDM's noise multiplicity, private.py): `x0` (C, R, R), `levels` (K,) (EDM's sigmas or
    DDPM's timesteps), `draws` (K, C, R, R); `call(x, levels)` runs the network. The loss of
    the formulation, per image, as `edm_loss` and `epsilon_loss` average it over a batch."""
    def edm(call, x0, levels, draws):
        k = levels.shape[0]
        x = x0[None].expand(k, *x0.shape).float()
        sigma = levels.view(k, 1, 1, 1)
        sd = p.edm_sigma_data
        weight = (sigma ** 2 + sd ** 2) / (sigma * sd) ** 2
        d = denoise(call, schedule, x + draws * sigma, sigma)
        return (weight * (d - x) ** 2).mean()

    def ddpm(call, x0, levels, draws):
        x = x0[None].expand(levels.shape[0], *x0.shape)
        return F.mse_loss(call(schedule.add_noise(x, draws, levels), levels).sample.float(),
                          draws.float())
    return edm if p.formulation == "edm" else ddpm
