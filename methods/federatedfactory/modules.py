"""Training one generative module: an unconditional diffusion model of one client's images of
one class, from scratch, with an EMA of its weights (diffusers' EMAModel) used for sampling."""
from __future__ import annotations

import math

import torch
from diffusers.training_utils import EMAModel

from .loss import epsilon_loss
from .network import build_unet
from .params import FFParams
from .schedule import training_schedule


def train_module(p: FFParams, images: torch.Tensor, seed: int, progress=None) -> dict:
    """Train on `images` (float in [-1, 1], (n, C, R, R), on the training device).

    Returns the EMA weights as a float32 state dict on the CPU. Batches are drawn with
    replacement; every draw (batches, timesteps, noise, initialisation) comes from `seed`.
    """
    device = images.device
    channels, resolution = images.shape[1], images.shape[-1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = build_unet(p, channels, resolution)
    unet.to(device).train()
    gen = torch.Generator().manual_seed(seed)
    schedule = training_schedule(p.train_timesteps)
    opt = torch.optim.AdamW(unet.parameters(), lr=p.gen_lr)
    ema = EMAModel(unet.parameters(), decay=p.gen_ema_decay, use_ema_warmup=True, power=3 / 4)
    steps = math.ceil(p.gen_images_seen / p.gen_batch_size)
    cuda = device.type == "cuda"
    for _ in range(steps):
        idx = torch.randint(0, images.shape[0], (p.gen_batch_size,), generator=gen)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            loss = epsilon_loss(unet, schedule, images[idx.to(device)], gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema.step(unet.parameters())
        if progress is not None:
            progress.update(1)
    ema.copy_to(unet.parameters())
    return {k: v.detach().float().cpu() for k, v in unet.state_dict().items()}


def training_steps(p: FFParams) -> int:
    return math.ceil(p.gen_images_seen / p.gen_batch_size)
