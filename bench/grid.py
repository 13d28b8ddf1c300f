"""Grid expansion: a named grid and a selection on the command line -> resolved run configs.

Methods that do not depend on the split (centralized) get one run per dataset and seed,
whatever the number of splits selected.
"""
from __future__ import annotations

import copy
import dataclasses

from .config import (
    ConfigError,
    Overrides,
    RunConfig,
    parse_overrides,
    resolve,
    sweep_settings,
)
from .protocol import GRIDS, Grid


def expand(datasets: list[str], blocks: list[tuple[list[str], list[str]]], seeds: list[int],
           overrides: Overrides | None = None, scale: str = "paper",
           sweep: tuple = (), epsilons: tuple = ()) -> list[RunConfig]:
    """Every dataset x seed x (method, split) of each block of (methods, splits), and for each
    (METHOD.PARAM, factors) of `sweep` the same run with PARAM at factor x its resolved value
    (one parameter at a time; runs of another method are not swept); with `epsilons`, each run
    also once per target epsilon (`--set dp.epsilon=E`, at the level the overrides set)."""
    configs: dict[str, RunConfig] = {}
    for dataset in datasets:
        for seed in seeds:
            for methods, splits in blocks:
                for split in splits:
                    for method in methods:
                        for o in _private(overrides, epsilons):
                            c = resolve(dataset, method, split, seed, o, scale)
                            configs.setdefault(c.run_id, c)
                            for v in _swept(c, sweep, o, scale):
                                configs.setdefault(v.run_id, v)
    return list(configs.values())


def _private(overrides: Overrides | None, epsilons: tuple):
    """The overrides without DP (and without its level, which needs a target), then with each
    target epsilon."""
    o = overrides or Overrides()
    if not epsilons:
        yield o
        return
    yield dataclasses.replace(o, dp={})
    for eps in epsilons:
        yield dataclasses.replace(o, dp={**o.dp, "epsilon": float(eps)})


def _swept(c: RunConfig, sweep: tuple, overrides: Overrides | None, scale: str):
    for key, factors in sweep:
        method, param = key.split(".", 1)
        if method != c.method:
            continue
        base = c.method_params[param]
        for f in factors:
            o = copy.deepcopy(overrides) if overrides else Overrides()
            o.method.setdefault(method, {})[param] = type(base)(max(1, int(base * f + 0.5)))
            yield resolve(c.dataset, c.method, c.split, c.seed, o, scale)


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' or '0-4' or '3'."""
    seeds: list[int] = []
    for part in text.split(","):
        a, sep, b = part.strip().partition("-")
        try:
            seeds.extend(range(int(a), int(b) + 1) if sep else [int(a)])
        except ValueError:
            raise ConfigError(f"--seeds {text!r}: expected integers like 0,1,2 or 0-4") from None
        if sep and int(b) < int(a):
            raise ConfigError(f"--seeds {text!r}: a range goes from low to high, e.g. {b}-{a}")
    if not seeds:
        raise ConfigError("--seeds: no seed given")
    return sorted(set(seeds))


def select(grid: Grid, datasets=None, methods=None, splits=None, seeds=None):
    """(datasets, blocks, seeds) of `grid` narrowed by a selection: `splits` given replaces
    the splits of every block; `methods` given alone keeps each method's splits in the grid
    (FederatedFactory: silos only, in the default grid), or all the grid's splits for a method
    the grid does not name."""
    datasets = list(datasets or grid.datasets)
    if methods and splits:
        blocks = [(list(methods), list(splits))]
    elif methods:
        every = list(dict.fromkeys(s for _, ss in grid.blocks for s in ss))
        own: dict[tuple, list] = {}
        for m in methods:
            ss = [s for ms, sp in grid.blocks if m in ms for s in sp]
            own.setdefault(tuple(dict.fromkeys(ss)) or tuple(every), []).append(m)
        blocks = [(ms, list(ss)) for ss, ms in own.items()]
    elif splits:
        blocks = [(list(ms), list(splits)) for ms, _ in grid.blocks]
    else:
        blocks = [(list(ms), list(ss)) for ms, ss in grid.blocks]
    return datasets, blocks, list(seeds or grid.seeds)


def grid_configs(name: str, overrides: list[str] = (), scale: str | None = None,
                 datasets=None, methods=None, splits=None, seeds=None) -> list[RunConfig]:
    """The resolved configs of the named grid (bench/protocol.py), narrowed by a selection;
    `overrides` (--set) are applied after the grid's own."""
    if name not in GRIDS:
        raise ConfigError(f"unknown grid {name!r}; valid choices: {', '.join(GRIDS)}")
    grid = GRIDS[name]
    configs: dict[str, RunConfig] = {}
    # a comma list in --set is a sweep: the grid once per setting (bench/config.py)
    for items in sweep_settings([*grid.overrides, *overrides]):
        for c in expand(*select(grid, datasets, methods, splits, seeds), parse_overrides(items),
                        scale or grid.scale, grid.sweep, grid.epsilons):
            configs.setdefault(c.run_id, c)
    return list(configs.values())
