"""A run's record as one frozen value, and the only code that turns it into JSON and back.

`Record.to_dict` writes the current layout (`RECORD_SCHEMA`); `Record.from_dict` reads it and,
through `migrate`, every older one. The layout of a record is documented in docs/records.md.

Schema 1 (until 2026-11-30) kept the headline model's metrics at the top of `metrics`, with
FederatedFactory's downstream modes under `metrics.variants`, and a communication dict whose
keys differed per method (`total_up_bytes`, `module_bytes_per_client`, `local_mode`, ...).
Schema 2 has `metrics.variants` in every record (a method that serves one model names it
`model`) and one `Communication` per variant. Schema 3 (2026-12-04) types `provenance` as
`Provenance` (code, libraries, numerics) and stores each value once: the torch version, the
device type and the thread count only in `provenance.numerics` (schema 2 also kept them at the
top of `provenance` and in `environment`); the membership audits move from `extra.privacy`
and `extra.privacy_received` to `audit` ("shared", "received"), typed as `Audit`. The
migrations move values and never compute one: tests/test_records.py reads schema-1 records of
every method and schema-2 records of the default grid and compares every number.

Table labels name a variant as `method[variant]`, the one model of a method as `method`;
`label` and `parse_label` are the one place that spells and reads them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .config import RunConfig
from .methods.dp import DPSpent
from .methods.numerics import Numerics
from .methods.privacy import RECEIVED, SHARED, Audit
from .methods.results import MODEL, Communication, Evaluation, Metrics

RECORD_SCHEMA = 3  # the layout of a record (the config's own SCHEMA is part of its run id)


def label(method: str, variant: str = MODEL) -> str:
    """'federatedfactory', 'server' -> 'federatedfactory[server]'; a method's one model: its
    name alone."""
    return method if variant == MODEL else f"{method}[{variant}]"


def parse_label(text: str) -> tuple[str, str]:
    """The inverse of `label`: -> (method, variant). What a table adds in parentheses ('dense
    (no L_BN)', 'fedaws (spreadout_lr=0.1)') is not part of the name."""
    name, _, variant = text.split(" (")[0].partition("[")
    return name, variant.rstrip("]") or MODEL


@dataclass(frozen=True)
class Provenance:
    """What a run's numbers depend on beyond its config (bench/provenance.py): the fingerprint
    of its code, the versions of the libraries whose kernels and schedulers determine its
    floats besides torch, and the numerics it computed with (torch, device type, threads,
    pins, CPU; methods/numerics.py). None: a record written before numerics were recorded."""

    code: str
    libraries: dict  # name -> version (diffusers)
    numerics: Numerics | None

    @property
    def device_type(self) -> str | None:
        return None if self.numerics is None else self.numerics.device_type

    def to_dict(self) -> dict:
        return {"code": self.code, "libraries": dict(self.libraries),
                "numerics": None if self.numerics is None else self.numerics.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "Provenance":
        numerics = d.get("numerics")
        return cls(d["code"], dict(d.get("libraries", {})),
                   None if numerics is None else Numerics.from_dict(numerics))


@dataclass(frozen=True)
class Record:
    """Everything stored of one run (docs/records.md)."""

    run_id: str
    config: RunConfig
    dataset_info: dict  # n_classes, class_names, sizes, metric
    split: dict  # client_sizes, client_class_counts
    model_parameters: int
    metrics: Metrics
    curves: dict  # name -> list ("<variant>/<name>" for a method with several variants)
    communication: dict[str, Communication]  # per variant
    timings: dict
    extra: dict
    environment: dict  # where it ran, for the reader (bench/environment.py)
    provenance: Provenance
    created: str
    artifacts: dict = field(default_factory=dict)  # name -> PNG file name beside the record
    unlearning: dict | None = None  # bench unlearn's comparison (bench/unlearn.py)
    # where a killed run resumed from, and what its checkpoints cost (methods/checkpoints.py);
    # None: checkpointing was off
    checkpoints: dict | None = None
    # the membership audits of what the method shares (methods/privacy.py): "shared" and,
    # for weight averaging, "received"; "shared/<variant>" where a variant shares more (the
    # local classifiers of FederatedFactory's local mode)
    audit: dict[str, Audit] = field(default_factory=dict)
    # the privacy a DP run spent, as its accountant reckons it (methods/dp.py); None: no DP
    dp: DPSpent | None = None

    def __post_init__(self):
        if set(self.communication) != set(self.metrics.variants):
            raise ValueError(f"record {self.run_id}: communication {sorted(self.communication)}"
                             f" and metrics {sorted(self.metrics.variants)} name other variants")

    @property
    def method(self) -> str:
        return self.config.method

    def variants(self) -> list[tuple[str, str, Evaluation]]:
        """(table label, variant, its evaluation) of each model the run serves."""
        return [(label(self.method, v), v, e) for v, e in self.metrics.variants.items()]

    @staticmethod
    def curve_prefix(variant: str) -> str:
        """The curves of a named variant are '<variant>/<name>'; those of a method's one model
        are '<name>'."""
        return "" if variant == MODEL else f"{variant}/"

    def replace(self, **changes) -> "Record":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["config"] = self.config.to_dict()
        d["metrics"] = self.metrics.to_dict()
        d["communication"] = {k: c.to_dict() for k, c in self.communication.items()}
        d["provenance"] = self.provenance.to_dict()
        d["audit"] = {k: a.to_dict() for k, a in self.audit.items()}
        d["dp"] = self.dp.to_dict() if self.dp else None
        for optional in ("unlearning", "checkpoints", "dp"):
            if d[optional] is None:
                del d[optional]
        return {**d, "schema": RECORD_SCHEMA}

    @classmethod
    def from_dict(cls, d: dict) -> "Record":
        """A record of any schema this version knows (KeyError / TypeError / ValueError when it
        is not one)."""
        d = migrate(d)
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**{k: v for k, v in d.items() if k in names},
                      "config": RunConfig.from_dict(d["config"]),
                      "metrics": Metrics.from_dict(d["metrics"]),
                      "communication": {k: Communication.from_dict(c)
                                        for k, c in d["communication"].items()},
                      "provenance": Provenance.from_dict(d["provenance"]),
                      "audit": {k: Audit.from_dict(a) for k, a in d.get("audit", {}).items()},
                      "dp": DPSpent.from_dict(d["dp"]) if d.get("dp") else None})


# --- reading older layouts ------------------------------------------------------------------
def migrate(d: dict) -> dict:
    """A record dict of any known schema -> the current layout (a new dict; values moved,
    none computed). ValueError for a schema this version does not know."""
    schema = d.get("schema")
    if schema == RECORD_SCHEMA:
        return d
    if schema == 2:
        return _from_schema_2(d)
    if schema == 1:
        return _from_schema_2(_from_schema_1(d))
    raise ValueError(f"schema {schema} (this version reads 1 to {RECORD_SCHEMA})")


def _from_schema_1(d: dict) -> dict:
    metrics = d["metrics"]
    if "variants" in metrics:  # FederatedFactory: the top level copied its first mode's
        variants = metrics["variants"]
        headline = d["config"]["method_params"]["modes"][0]
    else:
        variants = {MODEL: {k: metrics.get(k) for k in ("selected", "final", "diverged_at")}}
        headline = MODEL
    old = d["communication"]
    comm = {v: _communication_1(old, v) for v in variants}
    return {**d, "schema": 2,
            "metrics": {"headline": headline, "variants": variants}, "communication": comm}


def _from_schema_2(d: dict) -> dict:
    """Schema 2's provenance {code, torch, diffusers, device_type, numerics?} and environment
    {torch, torch_threads, ...} -> one Provenance, each value once; extra.privacy and
    extra.privacy_received -> audit.shared and audit.received. A record without numerics
    keeps None there and nothing is inferred: its torch version, threads and device type stay
    in `environment`."""
    old, env = d["provenance"], dict(d["environment"])
    numerics = old.get("numerics")
    if numerics is not None:
        env.pop("torch", None)
        if numerics.get("threads") is not None:  # a GPU run's numerics have none: kept
            env.pop("torch_threads", None)
    elif "device_type" in old:
        env["device_type"] = old["device_type"]
    libraries = {k: v for k, v in old.items()
                 if k not in ("code", "torch", "device_type", "numerics")}
    extra = dict(d["extra"])
    audit = {party: extra.pop(key) for party, key in ((SHARED, "privacy"),
                                                       (RECEIVED, "privacy_received"))
             if key in extra}
    return {**d, "schema": RECORD_SCHEMA, "environment": env, "extra": extra, "audit": audit,
            "provenance": {"code": old["code"], "libraries": libraries, "numerics": numerics}}


def _communication_1(old: dict, variant: str) -> dict:
    """Schema 1's communication dict of a run -> that of one of its variants. Methods that
    only wrote `total_bytes` (centralized: the images up; local-only: 0) sent it all up."""
    source = old["local_mode"] if variant.startswith("local") and "local_mode" in old else old
    up = source.get("total_up_bytes", source["total_bytes"] if "total_down_bytes" not in source
                    else source["total_bytes"] - source["total_down_bytes"])
    out = {"rounds": old["rounds"], "up_bytes": up,
           "down_bytes": source.get("total_down_bytes", 0)}
    if "up_bytes_per_client_round" in old:
        out["per_client_round"] = {"up": old["up_bytes_per_client_round"],
                                   "down": old["down_bytes_per_client_round"]}
    per_client = old.get("module_bytes_per_client", old.get("decoder_bytes_per_client"))
    if per_client is not None:
        out["up_bytes_per_client"] = per_client
    for key in ("send_dtype", "note"):
        if key in old:
            out[key] = old[key]
    return out
