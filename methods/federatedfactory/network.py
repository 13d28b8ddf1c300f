"""The generator network: diffusers' UNet2DModel, unconditional, trained from scratch."""
from __future__ import annotations

from diffusers import UNet2DModel

from .params import FFParams


def build_unet(p: FFParams, channels: int, resolution: int) -> UNet2DModel:
    levels = len(p.gen_channels)
    attn = set(p.gen_attention_levels)
    down = tuple("AttnDownBlock2D" if i in attn else "DownBlock2D" for i in range(levels))
    up = tuple("AttnUpBlock2D" if levels - 1 - i in attn else "UpBlock2D" for i in range(levels))
    return UNet2DModel(
        sample_size=resolution,
        in_channels=channels,
        out_channels=channels,
        layers_per_block=p.gen_layers_per_block,
        block_out_channels=tuple(p.gen_channels),
        down_block_types=down,
        up_block_types=up,
        norm_num_groups=p.gen_norm_groups,
    )
