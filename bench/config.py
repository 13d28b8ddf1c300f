"""Run configurations: one resolved, hashable config per run.

A `RunConfig` pins everything that determines a run's numbers: dataset, resolution, split,
client count, method and its hyperparameters, the training protocol and the seed. Its
identity (`run_id`) is a hash of that content; where the run executes (device, output folder)
is not part of it. Per-dataset protocol defaults live in `bench/protocol.py`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from dataclasses import dataclass, field

from .datasets.registry import canonical_name, get_entry
from .datasets.splits import parse_split
from .methods.base import TrainConfig
from .methods.dp import DPConfig, require_accountant
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
    dp: DPConfig | None = None  # differential privacy (methods/dp.py); None: no DP

    def to_dict(self) -> dict:
        """Its content; `dp` only when set, so that the ids of runs without DP stay as they
        were before DP existed."""
        d = {"schema": SCHEMA, **dataclasses.asdict(self)}
        if self.dp is None:
            del d["dp"]
        return d

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
        dp = DPConfig(**d["dp"]) if d.get("dp") else None
        return cls(**{**d, "train": TrainConfig(**d["train"]), "dp": dp})


@dataclass
class Overrides:
    """Values given with --set: train fields, resolution, n_clients, METHOD.PARAM, dp.FIELD."""

    train: dict = field(default_factory=dict)
    run: dict = field(default_factory=dict)
    method: dict = field(default_factory=dict)  # method -> {param: value}
    dp: dict = field(default_factory=dict)  # DPConfig's fields


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


def _field(key: str) -> tuple[str, str, object]:
    """Where a --set key goes (train | run | dp | METHOD) and its default, or a one-line
    ConfigError that lists the valid keys."""
    train_fields = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    run_fields = {"resolution": 0, "n_clients": 0}
    dp_fields = {"epsilon": 1.0, **{f.name: f.default for f in dataclasses.fields(DPConfig)
                                    if f.name != "epsilon"}}
    if key.startswith("dp."):
        name = key[3:]
        if name not in dp_fields:
            raise ConfigError(f"--set {key}: unknown key; valid: "
                              f"{', '.join('dp.' + k for k in dp_fields)}")
        return "dp", name, dp_fields[name]
    if key in train_fields:
        return "train", key, train_fields[key]
    if key in run_fields:
        return "run", key, run_fields[key]
    if "." in key and key.split(".", 1)[0] in registered():
        name, param = key.split(".", 1)
        defaults = method_params(name)
        if param not in defaults:
            raise ConfigError(f"--set {key}: {name} has no parameter {param!r}; valid: "
                              f"{', '.join(defaults) or 'none'}")
        return name, param, defaults[param]
    if "." in key:
        raise ConfigError(f"--set {key}: unknown method {key.split('.', 1)[0]!r}; valid "
                          f"methods: {', '.join(registered())}")
    owners = [f"{name}.{key}" for name in registered() if key in method_params(name)]
    if owners:
        raise ConfigError(f"--set {key}: a method's parameter is set as METHOD.{key}: "
                          f"{' or '.join(owners)}")
    valid = [*train_fields, *run_fields, "METHOD.PARAM", "dp.epsilon"]
    raise ConfigError(f"--set {key}: unknown key; valid keys: {', '.join(valid)}")


def _split_item(item: str) -> tuple[str, str]:
    key, sep, raw = item.partition("=")
    if not sep:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
    return key, raw


def parse_overrides(items: list[str]) -> Overrides:
    """The --set items of one setting (a later item wins over an earlier one of its key)."""
    out = Overrides()
    for item in items:
        key, raw = _split_item(item)
        where, name, default = _field(key)
        value = _coerce(key, raw, default)
        if where in ("train", "run", "dp"):
            getattr(out, where)[name] = value
        else:
            out.method.setdefault(where, {})[name] = value
    return out


def swept_values(item: str) -> list[str] | None:
    """The values a --set item sweeps (`lr=0.01,0.1`: ['0.01', '0.1']), or None where it sets
    one value: no comma, or a key that holds a list itself (`exclude_clients=1,2`)."""
    key, raw = _split_item(item)
    if "," not in raw or isinstance(_field(key)[2], tuple):
        return None
    values = [v.strip() for v in raw.strip().strip("[]").split(",")]
    if not all(values):
        raise ConfigError(f"--set {item!r}: an empty value in the comma list; give "
                          f"{key}=V1,V2,...")
    return list(dict.fromkeys(values))


def sweep_settings(items: list[str]) -> list[list[str]]:
    """The --set items of every setting of a sweep: a comma list sweeps its key (two values of
    `lr=0.01,0.1`: two settings; a list-valued key's comma list is one value); several swept
    keys give every combination, in the order given. No comma list: one setting."""
    choices = []
    for item in items:
        values = swept_values(item)
        key = item.partition("=")[0]
        choices.append([item] if values is None else [f"{key}={v}" for v in values])
    return [list(combo) for combo in itertools.product(*choices)]


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
        built = build_method(method, params)
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from None
    dp = _dp(overrides.dp, built, train)
    return RunConfig(dataset, canonical, n_clients, method, params, train, resolution, int(seed),
                     dp)


def _dp(given: dict, method, train: TrainConfig) -> DPConfig | None:
    """The run's DP settings, checked against what the method, with its parameters,
    supports (None: no DP)."""
    cls = type(method)
    if not given:
        return None
    if "epsilon" not in given:
        raise ConfigError("--set dp.*: differential privacy needs its target, --set "
                          "dp.epsilon=E (and optionally dp.delta, dp.level, dp.clip)")
    dp = DPConfig(**given)
    try:
        dp.validate()
        require_accountant()
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if dp.level not in cls.capabilities.dp_levels:
        able = [name for name in registered()
                if dp.level in method_class(name).capabilities.dp_levels]
        raise ConfigError(f"{cls.name} does not run with DP at level {dp.level!r}; methods "
                          f"that do: {', '.join(able)}")
    if dp.level == "example" and train.norm == "batch":
        raise ConfigError("DP needs per-example gradients and batch norm mixes the examples "
                          "of a batch: --set norm=group")
    refusal = method.dp_refusal(dp)
    if refusal:
        raise ConfigError(refusal)
    return dp


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

