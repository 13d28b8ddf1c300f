"""The explicit registry of methods: name -> class."""
from __future__ import annotations

import dataclasses

from .centralized import Centralized
from .fedavg import FedAvg
from .fedprox import FedProx
from .local_only import LocalOnly
from .scaffold import Scaffold

METHODS: dict[str, type] = {
    "centralized": Centralized,
    "local_only": LocalOnly,
    "fedavg": FedAvg,
    "fedprox": FedProx,
    "scaffold": Scaffold,
}


def method_params(name: str) -> dict:
    """The default hyperparameters of a method."""
    return dataclasses.asdict(METHODS[name].Params())


def build_method(name: str, params: dict | None = None):
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid choices: {', '.join(METHODS)}")
    cls = METHODS[name]
    fields = {f.name: f.type for f in dataclasses.fields(cls.Params)}
    unknown = set(params or {}) - set(fields)
    if unknown:
        raise ValueError(f"method {name!r} has no parameter {', '.join(sorted(unknown))}; "
                         f"valid: {', '.join(fields) or 'none'}")
    return cls(cls.Params(**(params or {})))
