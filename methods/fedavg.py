"""FedAvg (McMahan et al., AISTATS 2017, Algorithm 1).

Client k starts from the global weights w_t and runs E local epochs of SGD; the server sets
    w_{t+1} = sum_k n_k w_{t+1}^k / sum_k n_k        (n_k: client k's training samples)
over the clients of the round. Buffers (batch-norm statistics) are averaged the same way;
integer buffers (batch counters) take the last client's value. This is the weight-averaging
base's default behaviour (methods/weight_averaging.py) with nothing changed.
"""
from __future__ import annotations

from dataclasses import dataclass

from .base import Capabilities
from .weight_averaging import WeightAveraging


class FedAvg(WeightAveraging):
    name = "fedavg"
    # its message is the trained weights and the server averages them: DP-FedAvg's clipped,
    # noised mean of updates replaces the mean (methods/dp.py)
    capabilities = Capabilities(vectorises_clients=True, dp_levels=("example", "client"))

    @dataclass(frozen=True)
    class Params:
        pass
