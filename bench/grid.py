"""Grid expansion: selections on the command line -> the list of resolved run configs.

Methods that do not depend on the split (centralized) get one run per dataset and seed,
whatever the number of splits selected.
"""
from __future__ import annotations

from .config import ConfigError, Overrides, RunConfig, resolve


def expand(datasets: list[str], blocks: list[tuple[list[str], list[str]]], seeds: list[int],
           overrides: Overrides | None = None, scale: str = "paper") -> list[RunConfig]:
    """Every dataset x seed x (method, split) of each block of (methods, splits)."""
    configs: dict[str, RunConfig] = {}
    for dataset in datasets:
        for seed in seeds:
            for methods, splits in blocks:
                for split in splits:
                    for method in methods:
                        c = resolve(dataset, method, split, seed, overrides, scale)
                        configs.setdefault(c.run_id, c)
    return list(configs.values())


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' or '0-4' or '3'."""
    seeds: list[int] = []
    for part in text.split(","):
        a, sep, b = part.strip().partition("-")
        try:
            seeds.extend(range(int(a), int(b) + 1) if sep else [int(a)])
        except ValueError:
            raise ConfigError(f"--seeds {text!r}: expected integers like 0,1,2 or 0-4") from None
    if not seeds:
        raise ConfigError("--seeds: no seed given")
    return sorted(set(seeds))
