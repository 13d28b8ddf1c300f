"""FederatedFactory's hyperparameters and its two presets.

Two formulations of the generator, on the same diffusers UNet backbone:
- "ddpm": DDPM with the cosine schedule, epsilon prediction, samplers DDIM / DPM-Solver++ /
  Heun on the DDPM schedule (schedule.py, loss.py);
- "edm": Karras et al. (2022): preconditioned denoiser, log-normal training noise levels with
  the EDM loss weight, EDM's deterministic Heun sampler on the rho-spaced sigmas (the authors'
  formulation; network.py, loss.py, sampler.py).

`cpu` (default): sized for the embedded digits on a 2-core CPU (measured on a CPU prototype): a
UNet of two levels (32, 64 channels, one ResNet block each, GroupNorm of 8 groups), trained
for 12,800 images seen per module (200 steps of 64) with AdamW 2e-3 and an EMA, 300 images
per class. The EDM formulation with Heun in 13 steps (25 network evaluations): against DDPM
with DDIM in 25 steps, at the same cost, it tied on digits under silos (3 seeds) and gained 1.9
points of server accuracy on the real PneumoniaMNIST file (3 seeds;
docs/findings/measurements.md). The DDPM
setting as measured: formulation=ddpm, sampler=ddim, sampler_steps=25. Since 2026-11-26 Heun
takes 7 steps (13 network evaluations): on digits silos and on PneumoniaMNIST (3 seeds each)
the accuracy of both modes stayed within the seeds' spread of 13 steps' at 0.4-0.5x the
sampling time (docs/findings/generator.md).

`cpu_colour`: `cpu` with the generators trained and sampled at 16 px, their images resized to
the table's resolution, and Heun in 13 steps (as measured there; 7 steps were not tried on
colour images); the `cpu` protocol gives it to colour (3-channel) data. Chosen on the
`photos` set (colour crops of eight photographs, silos, seeds 0-2; docs/findings/colour.md):
server accuracy 75.7 % against FedAvg's 53.3 %, synthetic images recognised by a reference
classifier as often as real test crops, 12-13.5 min a run on 2 cores; at 8 px the
accuracy was within the spread but the images less recognisable; at 32 px (seed 0) both were
better, at 4.5x the time.

`paper`: the authors' generator (arXiv 2603.16370 and its public code): the EDM formulation
with P_mean -0.8, P_std 1.6, sigma_data 0.5, dropout 0.3; widths 128 x [1, 2, 2, 2] at 28-32 px
and 64 x [1, 2, 2, 2] above 64 px (Fed-ISIC2019 at 128 px); self-attention at 16 and 8 px only;
25M images seen per generator; EDM Heun, 50 steps (99 network evaluations) from sigma 80 to
0.002 with rho 7; 10,000 images per class; ResNet-50 for 300 epochs (batch 128, lr 0.1).
The authors' network is EDM2's magnitude-preserving UNet, which no maintained package ships:
ours is diffusers' UNet2DModel with the same widths, depth and attention placement (docs/methods.md,
"The paper's generator").
"""
from __future__ import annotations

from dataclasses import dataclass

FORMULATIONS = ("ddpm", "edm")
SAMPLERS = {"ddpm": ("ddim", "dpmsolver++", "heun"), "edm": ("heun",)}
MODES = ("server", "local")
TARGET_PRIORS = ("uniform", "train")


@dataclass(frozen=True)
class FFParams:
    preset: str = "cpu"
    formulation: str = "edm"  # edm | ddpm
    # generator network (diffusers UNet2DModel), at gen_resolution (0: the table's resolution),
    # rounded up to a multiple of 2^(levels - 1); samples are resized to the table's resolution
    gen_resolution: int = 0
    gen_channels: tuple = (32, 64)  # block_out_channels, one per resolution level
    gen_channels_above_64px: tuple = ()  # widths for generators above 64 px (): gen_channels
    gen_layers_per_block: int = 1
    gen_attention_resolutions: tuple = ()  # self-attention at these feature-map sizes (px)
    gen_norm_groups: int = 8
    gen_dropout: float = 0.0  # in every ResNet block
    # EDM (formulation "edm", Karras et al. 2022): ln sigma ~ N(P_mean, P_std^2) in training,
    # sigma_data the data's std (images in [-1, 1]); sampling from sigma_max to sigma_min.
    # Defaults: the authors' values (EDM's own CIFAR-10 values were -1.2, 1.2)
    edm_p_mean: float = -0.8
    edm_p_std: float = 1.6
    edm_sigma_data: float = 0.5
    edm_sigma_min: float = 0.002
    edm_sigma_max: float = 80.0
    edm_rho: float = 7.0
    # training of one module (one per client and class it holds)
    gen_images_seen: int = 12_800  # training length, in images
    gen_batch_size: int = 64
    gen_lr: float = 2e-3  # AdamW
    gen_ema_decay: float = 0.995  # EMA of the weights used for sampling (with warm-up)
    train_timesteps: int = 1000  # DDPM only: cosine (squaredcos_cap_v2) schedule, epsilon loss
    min_class_samples: int = 10  # a client's class with fewer images gets no module
    generator_seed: int = -1  # -1: the run's seed (whole pipeline); >= 0: shared generators
    # synthesis
    samples_per_class: int = 300
    sampler: str = "heun"  # edm: heun; ddpm: ddim | dpmsolver++ | heun
    sampler_steps: int = 7  # heun: 2 * steps - 1 network evaluations
    sample_batch_size: int = 256
    # downstream classifier (the table's classifier and optimiser, see TrainConfig)
    classifier_epochs: int = 30
    modes: tuple = MODES  # which downstream modes to train; the first is the headline
    # local mode's product of experts divides out each expert's training label prior and
    # applies this target prior once (experts.py); the paper's plain product is stored too
    poe_target_prior: str = "uniform"  # uniform (the synthetic set's) | train (the clients')
    exclude_clients: tuple = ()  # clients whose modules are left out (unlearning)
    send_dtype: str = "float32"  # dtype of the modules on the wire

    def __post_init__(self):
        def check(name, value, valid):
            if value not in valid:
                raise ValueError(f"federatedfactory.{name}={value!r}; valid choices: "
                                 f"{', '.join(valid)}")
        check("preset", self.preset, tuple(PRESETS))
        check("formulation", self.formulation, FORMULATIONS)
        if self.sampler not in SAMPLERS[self.formulation]:
            raise ValueError(f"federatedfactory.sampler={self.sampler!r} has no "
                             f"{self.formulation} form; valid choices with formulation="
                             f"{self.formulation}: {', '.join(SAMPLERS[self.formulation])}")
        check("poe_target_prior", self.poe_target_prior, TARGET_PRIORS)
        check("send_dtype", self.send_dtype, ("float32", "bfloat16", "float16"))
        if not self.modes:
            raise ValueError("federatedfactory.modes: give at least one of server, local")
        for m in self.modes:
            check("modes", m, MODES)
        for name in ("gen_channels", "gen_channels_above_64px"):
            if any(c % 2 or c < self.gen_norm_groups for c in getattr(self, name)):
                raise ValueError(f"federatedfactory.{name} must be even and >= gen_norm_groups")
        if not 0 <= self.gen_dropout < 1:
            raise ValueError("federatedfactory.gen_dropout must be in [0, 1)")
        if not 0 < self.edm_sigma_min < self.edm_sigma_max:
            raise ValueError("federatedfactory: need 0 < edm_sigma_min < edm_sigma_max")


PRESETS: dict[str, dict] = {
    "cpu": {},
    # colour natural images on a CPU (the `cpu` protocol picks it for 3-channel data): the
    # generators learn and sample at 16 px and their images are resized to the table's 32 px;
    # Heun in 13 steps, the setting measured on colour images
    "cpu_colour": {"gen_resolution": 16, "sampler_steps": 13},
    "paper": {
        "formulation": "edm",
        "edm_p_mean": -0.8,
        "edm_p_std": 1.6,
        "edm_sigma_data": 0.5,
        "gen_dropout": 0.3,
        "gen_resolution": 0,  # the table's resolution (MedMNIST 28 -> 32: rounded up to 8)
        "gen_channels": (128, 256, 256, 256),  # model_channels 128, multipliers [1, 2, 2, 2]
        "gen_channels_above_64px": (64, 128, 128, 128),  # Fed-ISIC2019 at 128 px
        "gen_layers_per_block": 3,
        "gen_attention_resolutions": (16, 8),  # as EDM2: whatever the input size
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
