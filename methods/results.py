"""What a method's run yields, as frozen values: the numbers of each model it serves
(`Metrics`, one `Evaluation` per variant) and the bytes each of them costs on the wire
(`Communication`). The harness writes them into a record (bench/records.py).

A method that serves one model names it `MODEL`; FederatedFactory serves two, "server" (one
classifier on all synthetic data) and "local" (a product of experts). Every variant has its own
evaluation and its own communication, so no reader special-cases a method.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

MODEL = "model"  # the variant of a method that serves one model; tables show the method alone


@dataclass(frozen=True)
class Evaluation:
    """One model's test metrics (each with its validation ones under "val") at the
    validation-selected round and at the last round (None: diverged before any finite round),
    and the step at which it diverged (None: it did not; local-only: one per client)."""

    selected: dict | None
    final: dict | None
    diverged_at: int | list | None = None

    @classmethod
    def from_dict(cls, d: dict) -> "Evaluation":
        return cls(d.get("selected"), d.get("final"), d.get("diverged_at"))


@dataclass(frozen=True)
class Metrics:
    """The evaluations of a run's models, by variant name, and which of them is the headline
    (the one a run's progress line and summary name; default: the first given)."""

    variants: dict[str, Evaluation]
    headline_variant: str = ""

    def __post_init__(self):
        if not self.variants:
            raise ValueError("a run's metrics need at least one variant")
        if not self.headline_variant:
            object.__setattr__(self, "headline_variant", next(iter(self.variants)))
        if self.headline_variant not in self.variants:
            raise ValueError(f"headline {self.headline_variant!r} is not one of the variants "
                             f"{sorted(self.variants)}")

    @classmethod
    def single(cls, evaluation: Evaluation) -> "Metrics":
        return cls({MODEL: evaluation})

    @property
    def headline(self) -> Evaluation:
        return self.variants[self.headline_variant]

    @property
    def selected(self) -> dict | None:
        return self.headline.selected

    @property
    def final(self) -> dict | None:
        return self.headline.final

    def to_dict(self) -> dict:
        return {"headline": self.headline_variant,
                "variants": {k: asdict(v) for k, v in self.variants.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> "Metrics":
        return cls({k: Evaluation.from_dict(v) for k, v in d["variants"].items()},
                   d["headline"])


@dataclass(frozen=True)
class Communication:
    """Bytes on the wire of one served model over the whole run, at the tensors' dtypes
    (methods/communication.py). `up_bytes`: clients to server; `down_bytes`: server to clients.
    `per_client_round`: one client in one round (the latest), {"up": .., "down": ..}, for
    round-based methods; `up_bytes_per_client`: client id -> bytes it sent, for one-shot
    methods; `note`: what moved, where the numbers alone do not say (raw images, ...)."""

    rounds: int
    up_bytes: int
    down_bytes: int
    per_client_round: dict | None = None
    up_bytes_per_client: dict | None = None
    send_dtype: str | None = None
    note: str | None = None

    @property
    def total_bytes(self) -> int:
        return self.up_bytes + self.down_bytes

    def to_dict(self) -> dict:
        return {**asdict(self), "total_bytes": self.total_bytes}

    @classmethod
    def from_dict(cls, d: dict) -> "Communication":
        return cls(**{k: v for k, v in d.items() if k != "total_bytes"})
