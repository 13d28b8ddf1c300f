"""Bytes on the wire, counted at the tensors' real dtypes (float32 weights: 4 bytes each)."""
from __future__ import annotations

import dataclasses

import torch

from .results import Communication


def tensor_bytes(message) -> int:
    """Bytes of a tensor, a dict of them, or a dataclass of those (a method's typed message),
    at each tensor's dtype; anything else counts nothing."""
    if isinstance(message, torch.Tensor):
        return message.numel() * message.element_size()
    if isinstance(message, dict):
        return sum(tensor_bytes(v) for v in message.values())
    if dataclasses.is_dataclass(message):
        return sum(tensor_bytes(getattr(message, f.name)) for f in dataclasses.fields(message))
    return 0


class CommLog:
    """Accumulates what the server sends down and the clients send up."""

    def __init__(self) -> None:
        self.down = self.up = 0
        self.per_round: list[int] = []  # cumulative bytes (up + down) after each round
        self.down_per_client = self.up_per_client = 0  # one client, one round (the latest)

    def client(self, down: int, up: int) -> None:
        self.down += down
        self.up += up
        self.down_per_client, self.up_per_client = down, up

    def end_round(self) -> None:
        self.per_round.append(self.down + self.up)

    def summary(self, rounds: int) -> Communication:
        return Communication(rounds, self.up, self.down,
                             per_client_round={"up": self.up_per_client,
                                               "down": self.down_per_client})
