"""FedAdam (Reddi et al., "Adaptive Federated Optimization", ICLR 2021, Algorithm 2, FedAdam's
line): the server's second moment is an exponential average of the squared pseudo-gradient,
    v_t = beta2 v_{t-1} + (1 - beta2) Delta_t^2,
the rest of the update is methods/fedopt.py's (x_{t+1} = x_t + eta m_t / (sqrt(v_t) + tau)).
"""
from __future__ import annotations

from dataclasses import dataclass

from .fedopt import AdaptiveServer, WithSecondMomentDecay


class FedAdam(AdaptiveServer):
    name = "fedadam"

    @dataclass(frozen=True)
    class Params(WithSecondMomentDecay):
        method = "fedadam"

    def second_moment(self, v, delta_sq):
        return self.params.beta2 * v + (1 - self.params.beta2) * delta_sq
