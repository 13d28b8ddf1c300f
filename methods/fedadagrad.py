"""FedAdagrad (Reddi et al., "Adaptive Federated Optimization", ICLR 2021, Algorithm 2,
FedAdagrad's line): the second moment sums the squared pseudo-gradients,
    v_t = v_{t-1} + Delta_t^2,
so the server's steps shrink as rounds go by; the rest of the update is methods/fedopt.py's.
"""
from __future__ import annotations

from dataclasses import dataclass

from .fedopt import AdaptiveServer, check_params


class FedAdagrad(AdaptiveServer):
    name = "fedadagrad"

    @dataclass(frozen=True)
    class Params:
        server_lr: float = 0.01  # eta (methods/fedopt.py says how it was chosen)
        beta1: float = 0.9
        tau: float = 1e-3

        def __post_init__(self):
            check_params("fedadagrad", self.server_lr, self.beta1, self.tau)

    def second_moment(self, v, delta_sq):
        return v + delta_sq
