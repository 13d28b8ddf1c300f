"""The generator network: diffusers' UNet2DModel, unconditional, trained from scratch, and (EDM
formulation) the preconditioned denoiser built on it.

Shape of the network at a given resolution (the authors' rule, EDM2's): widths `gen_channels`
up to 64 px and `gen_channels_above_64px` above (Fed-ISIC2019 at 128 px), one level per width,
each halving the resolution but the last; self-attention at the levels whose feature maps are
`gen_attention_resolutions` px (16 and 8 in the paper preset), whatever the input size.

EDM preconditioning (Karras et al., 2022, Table 1, "Ours"), sigma_d the data's std:

    D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x; c_noise(sigma))
    c_skip = sigma_d^2 / (sigma^2 + sigma_d^2)      c_out = sigma sigma_d / sqrt(sigma^2 + sigma_d^2)
    c_in = 1 / sqrt(sigma^2 + sigma_d^2)            c_noise = ln(sigma) / 4

c_noise enters the UNet through its sinusoidal ("positional") time embedding, as in EDM's
DDPM++ network; the "fourier" embedding of UNet2DModel would divide the output by the
timestep (the score-SDE VE convention) and break D.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .params import FFParams

if TYPE_CHECKING:
    from diffusers import UNet2DModel


def generator_resolution(p: FFParams, data_resolution: int) -> int:
    """`gen_resolution` (0: the data's), rounded up to a multiple of 2^(levels - 1)."""
    res = p.gen_resolution or data_resolution
    factor = 2 ** (len(level_channels(p, res)) - 1)
    return -(-res // factor) * factor


def level_channels(p: FFParams, resolution: int) -> tuple:
    return tuple(p.gen_channels_above_64px if resolution > 64 and p.gen_channels_above_64px
                 else p.gen_channels)


def attention_levels(p: FFParams, resolution: int) -> tuple:
    """Indices of the levels whose feature maps are in `gen_attention_resolutions`."""
    sizes = set(p.gen_attention_resolutions)
    return tuple(i for i in range(len(level_channels(p, resolution)))
                 if resolution // 2 ** i in sizes)


def build_unet(p: FFParams, channels: int, resolution: int) -> UNet2DModel:
    from diffusers import UNet2DModel  # here, not at import (schedule.py says why)

    widths = level_channels(p, resolution)
    attn = set(attention_levels(p, resolution))
    levels = len(widths)
    down = tuple("AttnDownBlock2D" if i in attn else "DownBlock2D" for i in range(levels))
    up = tuple("AttnUpBlock2D" if levels - 1 - i in attn else "UpBlock2D" for i in range(levels))
    return UNet2DModel(
        sample_size=resolution,
        in_channels=channels,
        out_channels=channels,
        layers_per_block=p.gen_layers_per_block,
        block_out_channels=widths,
        down_block_types=down,
        up_block_types=up,
        norm_num_groups=p.gen_norm_groups,
        dropout=p.gen_dropout,
        time_embedding_type="positional",
    )


def denoise(unet, schedule, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """D(x; sigma) in float32, sigma of shape (n, 1, 1, 1); `schedule` (diffusers'
    EDMEulerScheduler) holds sigma_data and computes c_in, c_noise and c_skip, c_out."""
    f = unet(schedule.precondition_inputs(x, sigma),
             schedule.precondition_noise(sigma.flatten())).sample
    return schedule.precondition_outputs(x.float(), f.float(), sigma)


def describe(p: FFParams, channels: int, data_resolution: int) -> dict:
    """The generator a run gets at this data resolution, as a record states it."""
    res = generator_resolution(p, data_resolution)
    widths = level_channels(p, res)
    with torch.device("meta"):
        n = sum(t.numel() for t in build_unet(p, channels, res).parameters())
    return {"formulation": p.formulation, "resolution": res, "channels": list(widths),
            "attention_px": [res // 2 ** i for i in attention_levels(p, res)],
            "layers_per_block": p.gen_layers_per_block, "dropout": p.gen_dropout,
            "parameters": n}
