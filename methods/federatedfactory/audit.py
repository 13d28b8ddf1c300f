"""The membership attack on a generative module (methods/privacy.py): each image's denoising
loss at fixed noise levels, with noise drawn from one seed, so that the member and the
non-member sets of a module see the same draws position by position."""
from __future__ import annotations

import numpy as np
import torch

from .loss import per_image_loss
from .params import FFParams
from .sampler import load_unet
from .schedule import edm_schedule, training_schedule

# low noise levels reveal the most (Carlini et al. 2023); EDM: sigma; DDPM: t / T
NOISE_LEVELS = {"edm": (0.02, 0.1, 0.5), "ddpm": (0.02, 0.1, 0.3)}
DRAWS = 2  # noise draws per image and level


def module_scores(p: FFParams, state: dict, images: torch.Tensor, seed: int,
                  device: torch.device, chunk: int = 256) -> np.ndarray:
    """-mean over NOISE_LEVELS x DRAWS of the module's loss on each uint8 image (n, C, R, R)
    at the module's resolution: higher is more member-like."""
    unet = load_unet(p, state, images.shape[1], images.shape[-1], device)
    schedule = edm_schedule(p) if p.formulation == "edm" else \
        training_schedule(p.train_timesteps)
    gen = torch.Generator().manual_seed(seed)
    x0 = images.to(device).float().mul(2 / 255).sub(1)
    total = torch.zeros(len(x0), dtype=torch.float64)
    levels = NOISE_LEVELS[p.formulation]
    for level in levels:
        for _ in range(DRAWS):
            noise = torch.randn(x0.shape, generator=gen).to(device)
            total += torch.cat([per_image_loss(unet, schedule, xb, level, nb, p).double().cpu()
                                for xb, nb in zip(torch.split(x0, chunk),
                                                  torch.split(noise, chunk))])
    return -(total / (len(levels) * DRAWS)).numpy()
