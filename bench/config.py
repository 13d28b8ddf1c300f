"""Run configurations: one resolved, hashable config per run.

A `RunConfig` pins everything that determines a run's numbers: dataset, resolution, split,
client count, method and its hyperparameters, the training protocol and the seed. Its
identity (`run_id`) is a hash of that content; where the run executes (device, output folder)
is not part of it. Per-dataset protocol defaults live in `bench/protocol.py`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from .datasets.registry import canonical_name, get_entry
from .datasets.splits import parse_split
from .methods.base import TrainConfig
from .methods.models import MODELS, NORMS
from .methods.registry import build_method, method_class, method_params, registered

SCHEMA = 1  # version of the config layout; part of every run id (records: bench/records.py)
NO_SPLIT = "pooled"  # the split field of methods that do not depend on the split
LR_SCHEDULES = ("cosine", "constant")


class ConfigError(ValueError):
    """A bad option or value; the message lists the valid choices."""


@dataclass(frozen=True)
class RunConfig:
    dataset: str
    split: str  # canonical split spec, or NO_SPLIT
    n_clients: int
    method: str
    method_params: dict
    train: TrainConfig
    resolution: int
    seed: int

    def to_dict(self) -> dict:
        return {"schema": SCHEMA, **dataclasses.asdict(self)}

    @property
    def run_id(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        return f"{self.dataset} {self.method} {self.split} seed {self.seed}"

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        d = {k: v for k, v in d.items() if k != "schema"}
        return cls(**{**d, "train": TrainConfig(**d["train"])})


@dataclass
class Overrides:
    """Values given with --set: train fields, resolution, n_clients, METHOD.PARAM."""

    train: dict = field(default_factory=dict)
    run: dict = field(default_factory=dict)
    method: dict = field(default_factory=dict)  # method -> {param: value}


def _coerce(key: str, raw: str, like):
    if isinstance(like, bool):
        if raw.lower() not in ("true", "false", "1", "0"):
            raise ConfigError(f"--set {key}: expected true or false, got {raw!r}")
        return raw.lower() in ("true", "1")
    if isinstance(like, tuple):  # comma-separated: "32,64" or "[32, 64]" -> (32, 64); "" -> ()
        items = [x.strip() for x in raw.strip().strip("[]()").split(",") if x.strip()]
        try:
            return tuple(int(x) if x.lstrip("-").isdigit() else x for x in items)
        except ValueError:
            raise ConfigError(f"--set {key}: expected comma-separated values") from None
    for typ in (int, float, str):
        if isinstance(like, typ):
            try:
                return typ(raw)
            except ValueError:
                raise ConfigError(f"--set {key}: expected a {typ.__name__}, got {raw!r}") from None
    return raw


def parse_overrides(items: list[str]) -> Overrides:
    out = Overrides()
    train_fields = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    run_fields = {"resolution": 0, "n_clients": 0}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        if key in train_fields:
            out.train[key] = _coerce(key, raw, train_fields[key])
        elif key in run_fields:
            out.run[key] = _coerce(key, raw, run_fields[key])
        elif "." in key and key.split(".", 1)[0] in registered():
            name, param = key.split(".", 1)
            defaults = method_params(name)
            if param not in defaults:
                raise ConfigError(f"--set {key}: {name} has no parameter {param!r}; valid: "
                                  f"{', '.join(defaults) or 'none'}")
            out.method.setdefault(name, {})[param] = _coerce(key, raw, defaults[param])
        elif "." in key:
            raise ConfigError(f"--set {key}: unknown method {key.split('.', 1)[0]!r}; valid "
                              f"methods: {', '.join(registered())}")
        else:
            owners = [f"{name}.{key}" for name in registered() if key in method_params(name)]
            if owners:
                raise ConfigError(f"--set {key}: a method's parameter is set as METHOD.{key}: "
                                  f"{' or '.join(owners)}")
            valid = [*train_fields, *run_fields, "METHOD.PARAM"]
            raise ConfigError(f"--set {key}: unknown key; valid keys: {', '.join(valid)}")
    return out


def resolve(dataset: str, method: str, split: str, seed: int,
            overrides: Overrides | None = None, scale: str = "paper") -> RunConfig:
    """Build and validate one run's config from the dataset's protocol at `scale` and the
    overrides (which win)."""
    from .protocol import protocol_for

    overrides = overrides or Overrides()
    try:
        cls = method_class(method)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    dataset = canonical_name(dataset)
    info = get_entry(dataset).info
    try:
        proto = protocol_for(dataset, scale)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    train = dataclasses.replace(proto["train"], **overrides.train)
    _validate_train(train)
    resolution = int(overrides.run.get("resolution", proto["resolution"]))
    if cls.capabilities.uses_split:
        spec = parse_split(split)
        if spec.kind.needs_classes_clients:
            n_clients = int(overrides.run.get("n_clients", info.n_classes))
        elif spec.kind.needs_groups:
            if not info.natural_clients:
                raise ConfigError(f"split {split!r}: {dataset} has no natural clients; it "
                                  f"exists for datasets with centers (isic2019)")
            n_clients = info.natural_clients
        else:
            n_clients = int(overrides.run.get("n_clients", proto["n_clients"]))
        canonical = spec.canonical
    else:
        parse_split(split)  # still reject a malformed spec
        canonical, n_clients = NO_SPLIT, 0
    try:
        given = {**proto["method_params"].get(method, {}), **overrides.method.get(method, {})}
        params = method_params(method, given)
        build_method(method, params)
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from None
    return RunConfig(dataset, canonical, n_clients, method, params, train, resolution, int(seed))


def _validate_train(t: TrainConfig) -> None:
    if t.model not in MODELS:
        raise ConfigError(f"unknown model {t.model!r}; valid choices: {', '.join(MODELS)}")
    if t.norm not in NORMS:
        raise ConfigError(f"unknown norm {t.norm!r}; valid choices: {', '.join(NORMS)}")
    if t.lr_schedule not in LR_SCHEDULES:
        raise ConfigError(f"unknown lr_schedule {t.lr_schedule!r}; valid choices: "
                          f"{', '.join(LR_SCHEDULES)}")
    if not 0 < t.client_fraction <= 1:
        raise ConfigError(f"client_fraction must be in (0, 1], got {t.client_fraction}")
    for name in ("rounds", "local_epochs", "batch_size"):
        if getattr(t, name) < 1:
            raise ConfigError(f"{name} must be >= 1, got {getattr(t, name)}")
    if t.lr <= 0:
        raise ConfigError(f"lr must be > 0, got {t.lr}")

