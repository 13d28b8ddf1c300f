"""Training one generative module: an unconditional diffusion model of one client's images of
one class, from scratch, with an EMA of its weights (diffusers' EMAModel) used for sampling.

Dropout (gen_dropout > 0) draws from torch's global generator, which no layer lets us replace:
training runs inside a forked global RNG seeded with the module's seed, so the draws are a
function of that seed and leave the caller's RNG untouched."""
from __future__ import annotations

import math

import torch

from ..checkpoints import Checkpoint, RngState, resumable
from ..data import mixed_precision
from .loss import edm_loss, epsilon_loss
from .network import build_unet
from .params import FFParams
from .schedule import edm_schedule, training_schedule


def training_loss(p: FFParams):
    """(unet, x0, gen) -> loss of the formulation."""
    if p.formulation == "edm":
        schedule = edm_schedule(p)
        return lambda unet, x0, gen: edm_loss(unet, schedule, x0, gen, p)
    schedule = training_schedule(p.train_timesteps)
    return lambda unet, x0, gen: epsilon_loss(unet, schedule, x0, gen)


def train_module(p: FFParams, images: torch.Tensor, seed: int, progress=None,
                 checkpoint: Checkpoint | None = None) -> dict:
    """Train on `images` (float in [-1, 1], (n, C, R, R), on the training device).

    Returns the EMA weights as a float32 state dict on the CPU. Batches are drawn with
    replacement; every draw (batches, timesteps, noise, initialisation) comes from `seed`.
    With a `checkpoint`, the loop saves (network, EMA, optimiser, steps done, the batch
    generator's and the forked global generator's states) as phase "module" when due and
    resumes from it, to the same bits.
    """
    from diffusers.training_utils import EMAModel  # here, not at import (schedule.py says why)

    device = images.device
    channels, resolution = images.shape[1], images.shape[-1]
    cuda = device.type == "cuda"
    checkpoint = checkpoint or Checkpoint.off()
    steps = training_steps(p)
    with torch.random.fork_rng(devices=[device] if cuda else []):
        torch.manual_seed(seed)  # initialisation, then dropout
        unet = build_unet(p, channels, resolution)
        unet.to(device).train()
        gen = torch.Generator().manual_seed(seed)
        loss_fn = training_loss(p)
        opt = torch.optim.AdamW(unet.parameters(), lr=p.gen_lr)
        ema = EMAModel(unet.parameters(), decay=p.gen_ema_decay, use_ema_warmup=True,
                       power=3 / 4)
        def save() -> dict:  # the weights, both optimiser states, every generator's state
            return {"unet": unet.state_dict(), "optimizer": opt.state_dict(),
                    "ema": ema.state_dict(), "batches": RngState(gen.get_state()),
                    "global": RngState(torch.get_rng_state()),
                    **({"global_cuda": RngState(torch.cuda.get_rng_state(device))}
                       if cuda else {})}

        def load(saved: dict) -> None:
            unet.load_state_dict(saved["unet"])
            opt.load_state_dict(saved["optimizer"])
            ema.load_state_dict(saved["ema"])
            gen.set_state(saved["batches"].tensor)
            torch.set_rng_state(saved["global"].tensor)
            if cuda:
                torch.cuda.set_rng_state(saved["global_cuda"].tensor, device)

        for _ in resumable(checkpoint, "module", steps, save, load,
                           lambda done: f"step {done} of {steps}", progress):
            idx = torch.randint(0, images.shape[0], (p.gen_batch_size,), generator=gen)
            with mixed_precision(device):
                loss = loss_fn(unet, images[idx.to(device)], gen)
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
