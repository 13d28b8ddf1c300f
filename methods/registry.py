"""The explicit registry of methods: name -> class."""
from __future__ import annotations

import dataclasses
import functools

from .centralized import Centralized
from .dense import Dense
from .fedavg import FedAvg
from .fedaws import FedAwS
from .fedcvae import FedCVAE
from .feddyn import FedDyn
from .federatedfactory import FederatedFactory
from .fednova import FedNova
from .fedprox import FedProx
from .local_only import LocalOnly
from .moon import Moon
from .provenance import method_fingerprint
from .scaffold import Scaffold

METHODS: dict[str, type] = {
    "centralized": Centralized,
    "local_only": LocalOnly,
    "fedavg": FedAvg,
    "fedprox": FedProx,
    "scaffold": Scaffold,
    "feddyn": FedDyn,
    "fednova": FedNova,
    "moon": Moon,
    "fedaws": FedAwS,
    "federatedfactory": FederatedFactory,
    "fedcvae": FedCVAE,
    "dense": Dense,
}


def method_params(name: str, given: dict | None = None) -> dict:
    """A method's hyperparameters: its defaults, under the values of its named preset (for
    methods with `PRESETS`), under the `given` values."""
    cls = METHODS[name]
    given = dict(given or {})
    params = dataclasses.asdict(cls.Params())
    presets = cls.PRESETS
    if presets is not None:
        preset = given.get("preset", params["preset"])
        if preset not in presets:
            raise ValueError(f"{name}: unknown preset {preset!r}; valid choices: "
                             f"{', '.join(presets)}")
        params.update(presets[preset])
    params.update(given)
    return params


def build_method(name: str, params: dict | None = None):
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid choices: {', '.join(METHODS)}")
    cls = METHODS[name]
    fields = {f.name: f.type for f in dataclasses.fields(cls.Params)}
    unknown = set(params or {}) - set(fields)
    if unknown:
        raise ValueError(f"method {name!r} has no parameter {', '.join(sorted(unknown))}; "
                         f"valid: {', '.join(fields) or 'none'}")
    params = {k: tuple(v) if isinstance(v, list) else v for k, v in (params or {}).items()}
    return cls(cls.Params(**params))


@functools.lru_cache(maxsize=None)
def code_fingerprint(name: str) -> str:
    """The fingerprint of the code and library versions that determine `name`'s numbers
    (methods/provenance.py)."""
    return method_fingerprint(METHODS[name], tuple(METHODS.values()))
