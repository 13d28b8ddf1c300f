"""FederatedFactory's hyperparameters and its two presets.

`cpu` (default): sized for the embedded digits on a 2-core CPU (measured on a CPU prototype): a
UNet of two levels (32, 64 channels, one ResNet block each, GroupNorm of 8 groups), trained
for 12,800 images seen per module (200 steps of 64) with AdamW 2e-3 and an EMA, sampled with
DDIM in 25 steps, 300 images per class.

`paper`: the published setting for GPUs (arXiv 2603.16370, Sec. 4 and its public code): a UNet of about
50M parameters at 32 px, 25M images seen per generator, 50-step Heun (99 network
evaluations), 10,000 images per class, ResNet-50 for 300 epochs (batch 128, lr 0.1).
"""
from __future__ import annotations

from dataclasses import dataclass

SAMPLERS = ("ddim", "dpmsolver++", "heun")
MODES = ("server", "local")


@dataclass(frozen=True)
class FFParams:
    preset: str = "cpu"
    # generator network (diffusers UNet2DModel), at gen_resolution (0: the table's resolution),
    # rounded up to a multiple of 2^(levels - 1); samples are resized to the table's resolution
    gen_resolution: int = 0
    gen_channels: tuple = (32, 64)  # block_out_channels, one per resolution level
    gen_layers_per_block: int = 1
    gen_attention_levels: tuple = ()  # indices of levels with self-attention
    gen_norm_groups: int = 8
    # training of one module (one per client and class it holds)
    gen_images_seen: int = 12_800  # training length, in images
    gen_batch_size: int = 64
    gen_lr: float = 2e-3  # AdamW
    gen_ema_decay: float = 0.995  # EMA of the weights used for sampling (with warm-up)
    train_timesteps: int = 1000  # DDPM, cosine (squaredcos_cap_v2) schedule, epsilon loss
    min_class_samples: int = 10  # a client's class with fewer images gets no module
    generator_seed: int = -1  # -1: the run's seed (whole pipeline); >= 0: shared generators
    # synthesis
    samples_per_class: int = 300
    sampler: str = "ddim"  # ddim | dpmsolver++ | heun
    sampler_steps: int = 25
    sample_batch_size: int = 256
    # downstream classifier (the table's classifier and optimiser, see TrainConfig)
    classifier_epochs: int = 30
    modes: tuple = MODES  # which downstream modes to train; the first is the headline
    exclude_clients: tuple = ()  # clients whose modules are left out (unlearning)
    send_dtype: str = "float32"  # dtype of the modules on the wire

    def __post_init__(self):
        def check(name, value, valid):
            if value not in valid:
                raise ValueError(f"federatedfactory.{name}={value!r}; valid choices: "
                                 f"{', '.join(valid)}")
        check("preset", self.preset, tuple(PRESETS))
        check("sampler", self.sampler, SAMPLERS)
        check("send_dtype", self.send_dtype, ("float32", "bfloat16", "float16"))
        if not self.modes:
            raise ValueError("federatedfactory.modes: give at least one of server, local")
        for m in self.modes:
            check("modes", m, MODES)
        if any(c % 2 or c < self.gen_norm_groups for c in self.gen_channels):
            raise ValueError("federatedfactory.gen_channels must be even and >= gen_norm_groups")


PRESETS: dict[str, dict] = {
    "cpu": {},
    "paper": {
        "gen_resolution": 0,  # the table's resolution (MedMNIST 28 -> 32: rounded up to 8)
        "gen_channels": (128, 256, 256, 256),
        "gen_layers_per_block": 3,
        "gen_attention_levels": (1, 2),  # self-attention at 16 and 8 px
        "gen_norm_groups": 32,
        "gen_images_seen": 25_000_000,
        "gen_batch_size": 512,
        "gen_lr": 1e-4,
        "gen_ema_decay": 0.9999,
        "samples_per_class": 10_000,
        "sampler": "heun",
        "sampler_steps": 50,
        "sample_batch_size": 1024,
        "classifier_epochs": 300,
    },
}
