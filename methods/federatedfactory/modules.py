"""Training one generative module: an unconditional diffusion model of one client's images of
one class, from scratch, with an EMA of its weights (diffusers' EMAModel) used for sampling.

Dropout (gen_dropout > 0) draws from torch's global generator, which no layer lets us replace:
training runs inside a forked global RNG seeded with the module's seed, so the draws are a
function of that seed and leave the caller's RNG untouched."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..checkpoints import Checkpoint, RngState, resumable
from ..data import mixed_precision
from ..dp import clipped_noisy_gradients
from .loss import edm_loss, edm_sigmas, epsilon_loss, loss_of_one
from .network import build_unet
from .params import FFParams
from .schedule import edm_schedule, training_schedule


@dataclass(frozen=True)
class ModulePrivacy:
    """DPDM's settings for one module (private.py): the clipping norm, its noise multiplier,
    the noise draws per image and the seed of the Gaussian noise (a stream of its own)."""

    clip: float
    sigma: float
    noise_draws: int
    noise_seed: int


def training_loss(p: FFParams):
    """(unet, x0, gen) -> loss of the formulation."""
    if p.formulation == "edm":
        schedule = edm_schedule(p)
        return lambda unet, x0, gen: edm_loss(unet, schedule, x0, gen, p)
    schedule = training_schedule(p.train_timesteps)
    return lambda unet, x0, gen: epsilon_loss(unet, schedule, x0, gen)


def train_module(p: FFParams, images: torch.Tensor, seed: int, progress=None,
                 checkpoint: Checkpoint | None = None,
                 private: ModulePrivacy | None = None) -> dict:
    """Train on `images` (float in [-1, 1], (n, C, R, R), on the training device).

    Returns the EMA weights as a float32 state dict on the CPU. Batches are drawn with
    replacement; every draw (batches, timesteps, noise, initialisation) comes from `seed`.
    With a `checkpoint`, the loop saves (network, EMA, optimiser, steps done, the batch
    generator's and the forked global generator's states) as phase "module" when due and
    resumes from it, to the same bits.

    With `private`, every step is DPDM's (private.py): a Poisson-sampled batch, each image's
    loss over `noise_draws` draws, its gradient clipped, Gaussian noise added (from its own
    generator, saved with the others), in float32.
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
        noise = torch.Generator().manual_seed(private.noise_seed) if private else None
        step = private_step(p, unet, images, gen, noise, private) if private else None

        def save() -> dict:  # the weights, both optimiser states, every generator's state
            return {"unet": unet.state_dict(), "optimizer": opt.state_dict(),
                    "ema": ema.state_dict(), "batches": RngState(gen.get_state()),
                    **({"dp_noise": RngState(noise.get_state())} if private else {}),
                    "global": RngState(torch.get_rng_state()),
                    **({"global_cuda": RngState(torch.cuda.get_rng_state(device))}
                       if cuda else {})}

        def load(saved: dict) -> None:
            unet.load_state_dict(saved["unet"])
            opt.load_state_dict(saved["optimizer"])
            ema.load_state_dict(saved["ema"])
            gen.set_state(saved["batches"].tensor)
            if private:
                noise.set_state(saved["dp_noise"].tensor)
            torch.set_rng_state(saved["global"].tensor)
            if cuda:
                torch.cuda.set_rng_state(saved["global_cuda"].tensor, device)

        for _ in resumable(checkpoint, "module", steps, save, load,
                           lambda done: f"step {done} of {steps}", progress):
            if private:
                for param, g in zip(unet.parameters(), step()):
                    param.grad = g
            else:
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


def private_step(p: FFParams, unet, images: torch.Tensor, gen: torch.Generator,
                 noise: torch.Generator, private: ModulePrivacy):
    """() -> one DPDM step's privatised gradients (in the order of `unet.parameters()`): the
    batch Poisson-sampled from `gen` (each image with probability gen_batch_size / n), each
    image's noise levels and noise drawn from `gen`, the Gaussian noise from `noise`."""
    n, k = images.shape[0], private.noise_draws
    q = min(1.0, p.gen_batch_size / n)
    schedule = edm_schedule(p) if p.formulation == "edm" else training_schedule(p.train_timesteps)
    one = loss_of_one(p, schedule)

    def step() -> list[torch.Tensor]:
        keep = torch.rand(n, generator=gen) < q
        x0 = images[keep.to(images.device)]
        b = x0.shape[0]
        if p.formulation == "edm":
            levels = edm_sigmas(p, b * k, gen).view(b, k)
        else:
            levels = torch.randint(0, p.train_timesteps, (b, k), generator=gen)
        draws = torch.randn((b, k, *images.shape[1:]), generator=gen)
        return clipped_noisy_gradients(unet, one, (x0, levels.to(images.device),
                                                   draws.to(images.device)),
                                       private.clip, private.sigma, q * n, noise)
    return step


def training_steps(p: FFParams) -> int:
    return math.ceil(p.gen_images_seen / p.gen_batch_size)
