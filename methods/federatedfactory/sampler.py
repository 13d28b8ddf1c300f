"""Sampling images from a trained module, each image from its own seed.

The starting noise of image j is drawn from a generator seeded with seeds[j]; the samplers are
deterministic after that (DDIM at eta 0, DPM-Solver++, Heun without churn), so an image depends
on its seed and its module only, not on the batch it is computed in or on other modules.

EDM formulation: EDM's deterministic Heun sampler (Karras et al., 2022, Algorithm 1 with
S_churn = 0) on the probability-flow ODE dx/dsigma = (x - D(x; sigma)) / sigma,

    d_i = (x_i - D(x_i; s_i)) / s_i,   x' = x_i + (s_{i+1} - s_i) d_i,
    x_{i+1} = x_i + (s_{i+1} - s_i) (d_i + (x' - D(x'; s_{i+1})) / s_{i+1}) / 2   if s_{i+1} > 0,
    x_{i+1} = x'                                                                otherwise,

from x_0 = sigma_max * noise: N steps cost 2N - 1 network evaluations (50 -> 99).
"""
from __future__ import annotations

from typing import Callable

import torch

from ..data import mixed_precision
from .network import build_unet, denoise
from .params import FFParams
from .schedule import edm_schedule, sampler_schedule


def network_evaluations(p: FFParams) -> int:
    """Network evaluations per image: Heun's last step (to sigma 0) is a single Euler one."""
    return 2 * p.sampler_steps - 1 if p.sampler == "heun" else p.sampler_steps


def load_unet(p: FFParams, state: dict, channels: int, resolution: int, device) -> torch.nn.Module:
    with torch.device("meta"):
        unet = build_unet(p, channels, resolution)
    unet.load_state_dict(state, assign=True)
    return unet.to(device).eval()


def edm_heun(denoiser: Callable, sigmas: list[float], x: torch.Tensor) -> torch.Tensor:
    """Algorithm 1 of Karras et al. (2022) without churn; `sigmas` decreasing, last 0, and `x`
    already scaled to sigmas[0]. `denoiser(x, sigma)` is D with sigma a float."""
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        d = (x - denoiser(x, s)) / s
        x_next = x + (s_next - s) * d
        if s_next > 0:
            x_next = x + (s_next - s) * (d + (x_next - denoiser(x_next, s_next)) / s_next) / 2
        x = x_next
    return x


@torch.no_grad()
def sample(unet, p: FFParams, seeds: list[int], channels: int, resolution: int,
           device) -> torch.Tensor:
    """uint8 images (len(seeds), C, R, R) on the CPU."""
    out = []
    for start in range(0, len(seeds), p.sample_batch_size):
        batch = seeds[start:start + p.sample_batch_size]
        noise = torch.stack([torch.randn((channels, resolution, resolution),
                                         generator=torch.Generator().manual_seed(s))
                             for s in batch]).to(device)
        with mixed_precision(device):
            x = (_edm if p.formulation == "edm" else _ddpm)(unet, p, noise)
        out.append(((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu())
    return torch.cat(out) if out else torch.zeros((0, channels, resolution, resolution),
                                                  dtype=torch.uint8)


def _ddpm(unet, p: FFParams, noise: torch.Tensor) -> torch.Tensor:
    schedule = sampler_schedule(p.sampler, p.train_timesteps)
    schedule.set_timesteps(p.sampler_steps)  # a new schedule per batch: no solver state leaks
    x = noise * schedule.init_noise_sigma
    for t in schedule.timesteps:
        eps = unet(schedule.scale_model_input(x, t), t).sample
        x = schedule.step(eps.float(), t, x).prev_sample
    return x


def _edm(unet, p: FFParams, noise: torch.Tensor) -> torch.Tensor:
    schedule = edm_schedule(p)
    schedule.set_timesteps(p.sampler_steps)
    sigmas = schedule.sigmas.tolist()

    def denoiser(x, s):
        return denoise(unet, schedule, x, torch.full((len(x), 1, 1, 1), s, device=x.device))
    return edm_heun(denoiser, sigmas, noise * sigmas[0])
