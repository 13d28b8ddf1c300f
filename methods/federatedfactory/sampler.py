"""Sampling images from a trained module, each image from its own seed.

The starting noise of image j is drawn from a generator seeded with seeds[j]; the samplers are
deterministic after that (DDIM at eta 0, DPM-Solver++, Heun without churn), so an image depends
on its seed and its module only, not on the batch it is computed in or on other modules.
"""
from __future__ import annotations

import torch

from .network import build_unet
from .params import FFParams
from .schedule import sampler_schedule


def load_unet(p: FFParams, state: dict, channels: int, resolution: int, device) -> torch.nn.Module:
    with torch.device("meta"):
        unet = build_unet(p, channels, resolution)
    unet.load_state_dict(state, assign=True)
    return unet.to(device).eval()


@torch.no_grad()
def sample(unet, p: FFParams, seeds: list[int], channels: int, resolution: int,
           device) -> torch.Tensor:
    """uint8 images (len(seeds), C, R, R) on the CPU."""
    schedule = sampler_schedule(p.sampler, p.train_timesteps)
    cuda = torch.device(device).type == "cuda"
    out = []
    for start in range(0, len(seeds), p.sample_batch_size):
        batch = seeds[start:start + p.sample_batch_size]
        schedule.set_timesteps(p.sampler_steps)  # also resets multistep solver state
        x = torch.stack([torch.randn((channels, resolution, resolution),
                                     generator=torch.Generator().manual_seed(s)) for s in batch])
        x = (x * schedule.init_noise_sigma).to(device)
        for t in schedule.timesteps:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                eps = unet(schedule.scale_model_input(x, t), t).sample
            x = schedule.step(eps.float(), t, x).prev_sample
        out.append(((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu())
    return torch.cat(out) if out else torch.zeros((0, channels, resolution, resolution),
                                                  dtype=torch.uint8)
