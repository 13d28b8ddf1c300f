"""FedYogi (Reddi et al., "Adaptive Federated Optimization", ICLR 2021, Algorithm 2, FedYogi's
line; Yogi: Zaheer et al., NeurIPS 2018): the second moment moves toward Delta_t^2 by a step
that does not scale with v, so it grows no faster than additively,
    v_t = v_{t-1} - (1 - beta2) Delta_t^2 sign(v_{t-1} - Delta_t^2),
the rest of the update is methods/fedopt.py's.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .fedopt import AdaptiveServer, WithSecondMomentDecay


class FedYogi(AdaptiveServer):
    name = "fedyogi"

    @dataclass(frozen=True)
    class Params(WithSecondMomentDecay):
        method = "fedyogi"

    def second_moment(self, v, delta_sq):
        return v - (1 - self.params.beta2) * delta_sq * torch.sign(v - delta_sq)
