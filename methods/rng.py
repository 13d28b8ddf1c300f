"""Explicit random streams, one per purpose.

A run's seed is expanded with `numpy.random.SeedSequence` into independent streams named by
purpose ("split", "init", "batches/client3", ...), so adding a draw to one purpose never shifts
another, and no code touches a global RNG except model initialisation, which runs inside
`torch.random.fork_rng` so nothing leaks out (torch layers initialise from the global RNG).
"""
from __future__ import annotations

import contextlib
import zlib

import numpy as np
import torch


class Streams:
    def __init__(self, seed: int):
        self.seed = int(seed)

    def _sequence(self, purpose: str) -> np.random.SeedSequence:
        key = zlib.crc32(purpose.encode())  # stable across processes (unlike hash())
        return np.random.SeedSequence(self.seed, spawn_key=(key,))

    def int_seed(self, purpose: str) -> int:
        return int(self._sequence(purpose).generate_state(1, dtype=np.uint64)[0] >> 1)

    def numpy(self, purpose: str) -> np.random.Generator:
        return np.random.default_rng(self._sequence(purpose))

    def torch(self, purpose: str) -> torch.Generator:
        """A CPU generator: draws (permutations, noise) are made on the CPU and moved, so the
        same seed gives the same draws on every device."""
        return torch.Generator().manual_seed(self.int_seed(purpose))

    @contextlib.contextmanager
    def global_torch(self, purpose: str):
        """Seed torch's global RNG for a block (model construction) and restore it after."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.int_seed(purpose))
            yield
