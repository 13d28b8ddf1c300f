"""The registry of methods: name -> class.

The suite's own methods are `METHODS`. A method can also live in the user's own repository,
registered in one of two ways (docs/extending.md):

- an entry point in the group `flbench.methods` of an installed package
  (`[project.entry-points."flbench.methods"] fedavgm = "mypkg.fedavgm:FedAvgM"`), found in
  every process that imports the suite, a Ray cluster's nodes included;
- `--methods mypkg.fedavgm:FedAvgM` (or FLBENCH_METHODS=mypkg.fedavgm:FedAvgM, a comma list),
  for a module on the Python path: the command puts the reference in FLBENCH_METHODS, which
  the processes it starts (joblib workers, a local Ray cluster) inherit.

Either way the method is known by its class's `name` and must subclass `Method`
(methods/base.py), `run` and `cost` included.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import os

from .base import Method
from .centralized import Centralized
from .dense import Dense
from .ditto import Ditto
from .fedadagrad import FedAdagrad
from .fedadam import FedAdam
from .fedavg import FedAvg
from .fedavgm import FedAvgM
from .fedaws import FedAwS
from .fedcvae import FedCVAE
from .feddyn import FedDyn
from .federatedfactory import FederatedFactory
from .fednova import FedNova
from .fedper import FedPer
from .fedrep import FedRep
from .fedyogi import FedYogi
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
    "fedavgm": FedAvgM,
    "fedadam": FedAdam,
    "fedyogi": FedYogi,
    "fedadagrad": FedAdagrad,
    "ditto": Ditto,
    "fedrep": FedRep,
    "fedper": FedPer,
    "federatedfactory": FederatedFactory,
    "fedcvae": FedCVAE,
    "dense": Dense,
}
ENTRY_POINTS = "flbench.methods"
REFERENCES = "FLBENCH_METHODS"  # module:Class references, comma separated


class MethodError(ValueError):
    """A method that cannot be registered (its reference does not import, or it breaks the
    contract)."""


def load_reference(ref: str) -> type:
    """The class `module:Class` names, checked against the contract."""
    module, _, attr = ref.partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise MethodError(f"method {ref!r}: {err}; give a module on the Python path and its "
                          f"class as module:Class") from None
    return _checked(cls, ref)


def _checked(cls, where: str) -> type:
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise MethodError(f"method {where!r} is not a subclass of bench.methods.base.Method")
    if getattr(cls, "__abstractmethods__", None):
        missing = ", ".join(sorted(cls.__abstractmethods__))
        raise MethodError(f"method {where!r} does not implement {missing} (methods/base.py: "
                          f"every method says what it costs)")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name or name != name.lower() or ":" in name:
        raise MethodError(f"method {where!r} needs a `name` in lower case (the name runs, "
                          f"--set keys and tables know it by), got {name!r}")
    return cls


@functools.cache
def _entry_points() -> tuple[tuple[str, type], ...]:
    from importlib.metadata import entry_points

    found = []
    for ep in entry_points(group=ENTRY_POINTS):
        where = f"{ep.value} (entry point {ep.name} of an installed package)"
        try:
            cls = ep.load()
        except Exception as err:  # noqa: BLE001 - a broken package: one line, not a traceback
            raise MethodError(f"method {where}: {type(err).__name__}: {err}; fix or uninstall "
                              f"that package") from None
        found.append((ep.name, _checked(cls, where)))
    return tuple(found)


def register_references(refs: list[str]) -> list[str]:
    """Load `module:Class` references, add them to FLBENCH_METHODS (which the processes this
    one starts inherit) and return their names."""
    names = [load_reference(r).name for r in refs]
    before = os.environ.get(REFERENCES)
    known = [r for r in (before or "").split(",") if r]
    os.environ[REFERENCES] = ",".join(known + [r for r in refs if r not in known])
    try:
        registered()  # a name taken by another method fails here, not later
    except MethodError:
        if before is None:
            del os.environ[REFERENCES]
        else:
            os.environ[REFERENCES] = before
        raise
    return names


@functools.cache
def _referenced(value: str) -> tuple[tuple[str, type], ...]:
    return tuple((cls.name, cls) for cls in map(load_reference, filter(None, value.split(","))))


def registered() -> dict[str, type]:
    """Every method this process knows: the suite's own, then installed entry points, then
    FLBENCH_METHODS references."""
    found = dict(METHODS)
    for name, cls in _entry_points() + _referenced(os.environ.get(REFERENCES, "")):
        if cls.name != name:
            raise MethodError(f"entry point {name!r} names a method called {cls.name!r}; "
                              f"register it under its own name")
        if found.get(name, cls) is not cls:
            raise MethodError(f"method {name!r} is registered twice ({found[name].__module__} "
                              f"and {cls.__module__}); rename one")
        found[name] = cls
    return found


@contextlib.contextmanager
def adding(cls: type):
    """`cls` registered in this process for the duration (bench.conformance.check_method runs
    a class that may not be registered otherwise); a registered class is left as it is."""
    if registered().get(cls.name) is cls:
        yield
        return
    if cls.name in registered():
        raise MethodError(f"method {cls.name!r} is registered already (another class)")
    METHODS[cls.name] = cls
    try:
        yield
    finally:
        METHODS.pop(cls.name, None)
        code_fingerprint.cache_clear()


def method_class(name: str) -> type:
    methods = registered()
    if name not in methods:
        raise ValueError(f"unknown method {name!r}; valid choices: {', '.join(methods)} (or "
                         f"module:Class for a method of your own)")
    return methods[name]


def method_params(name: str, given: dict | None = None) -> dict:
    """A method's hyperparameters: its defaults, under the values of its named preset (for
    methods with `PRESETS`), under the `given` values."""
    cls = method_class(name)
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
    cls = method_class(name)
    fields = {f.name: f.type for f in dataclasses.fields(cls.Params)}
    unknown = set(params or {}) - set(fields)
    if unknown:
        raise ValueError(f"method {name!r} has no parameter {', '.join(sorted(unknown))}; "
                         f"valid: {', '.join(fields) or 'none'}")
    params = {k: tuple(v) if isinstance(v, list) else v for k, v in (params or {}).items()}
    return cls(cls.Params(**params))


@functools.lru_cache(maxsize=None)
def code_fingerprint(name: str, dataset: str) -> str:
    """The fingerprint of the code and library versions that determine the numbers of method
    `name` on `dataset` (methods/provenance.py)."""
    from ..datasets.registry import loader_file

    return method_fingerprint(method_class(name), tuple(registered().values()),
                              loader=loader_file(dataset).name)
