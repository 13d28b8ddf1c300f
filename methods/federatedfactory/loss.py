"""The training loss: epsilon prediction (Ho et al., 2020, Eq. 14, the "simple" loss).

    L = E_{x0, t ~ U{0..T-1}, eps ~ N(0, I)} || eps - eps_theta(sqrt(abar_t) x0 + sqrt(1 - abar_t) eps, t) ||^2
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def epsilon_loss(unet, schedule, x0: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Draws t and eps from `gen` (CPU) and moves them to x0's device."""
    n = x0.shape[0]
    t = torch.randint(0, schedule.config.num_train_timesteps, (n,), generator=gen)
    eps = torch.randn(x0.shape, generator=gen)
    t, eps = t.to(x0.device), eps.to(x0.device, x0.dtype)
    xt = schedule.add_noise(x0, eps, t)
    return F.mse_loss(unet(xt, t).sample.float(), eps.float())
