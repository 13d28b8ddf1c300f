"""Noise schedules (training) and the samplers built on them, from diffusers.

DDPM formulation. Training: DDPM forward process with the cosine schedule of Nichol & Dhariwal (2021)
("squaredcos_cap_v2"), 1000 steps. Sampling reuses the same schedule with a fast solver:
- "ddim": DDIM (eta 0, deterministic), trailing timestep spacing, x0 clipped to [-1, 1]
  (on a CPU prototype, clipping held digits accuracy at 10 steps where DPM-Solver++ fell);
- "dpmsolver++": DPM-Solver++ (2M), multistep;
- "heun": Heun's 2nd-order method on Karras sigmas (Karras et al., 2022), the paper's
  sampler: `steps` steps cost 2 * steps - 1 network evaluations.

EDM formulation (Karras et al., 2022): diffusers' EDMEulerScheduler holds sigma_data, computes
the preconditioning (network.denoise) and the sampling sigmas
sigma_i = (sigma_max^(1/rho) + i / (N - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,
i < N, then 0 (EDM Eq. 5); its Euler step is not used: sampler.edm_heun takes Heun steps.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .params import FFParams

if TYPE_CHECKING:
    from diffusers import DDPMScheduler, EDMEulerScheduler

# diffusers is imported where a schedule is made, not with this module: importing it costs
# seconds (torch._dynamo with it), which every worker of a grid would pay for its baselines


def training_schedule(timesteps: int) -> DDPMScheduler:
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=timesteps, beta_schedule="squaredcos_cap_v2",
                         prediction_type="epsilon", clip_sample=True)


def sampler_schedule(kind: str, timesteps: int):
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, HeunDiscreteScheduler

    base = dict(num_train_timesteps=timesteps, beta_schedule="squaredcos_cap_v2",
                prediction_type="epsilon")
    if kind == "ddim":
        return DDIMScheduler(**base, clip_sample=True, timestep_spacing="trailing",
                             set_alpha_to_one=False)
    if kind == "dpmsolver++":
        return DPMSolverMultistepScheduler(**base, algorithm_type="dpmsolver++", solver_order=2,
                                           timestep_spacing="trailing")
    if kind == "heun":
        return HeunDiscreteScheduler(**base, use_karras_sigmas=True)
    raise ValueError(f"unknown sampler {kind!r}; valid choices: ddim, dpmsolver++, heun")


def edm_schedule(p: FFParams) -> EDMEulerScheduler:
    from diffusers import EDMEulerScheduler

    # diffusers' "epsilon" here is EDM's F-prediction: D = c_skip x + c_out F, c_out > 0
    return EDMEulerScheduler(sigma_min=p.edm_sigma_min, sigma_max=p.edm_sigma_max,
                             sigma_data=p.edm_sigma_data, rho=p.edm_rho,
                             sigma_schedule="karras", prediction_type="epsilon",
                             final_sigmas_type="zero")
