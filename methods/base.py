"""What every method shares: the training settings, the run context and the Method contract."""
from __future__ import annotations

import abc
import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import torch
from torch import nn

from . import numerics
from .checkpoints import Checkpoint
from .communication import tensor_bytes
from .data import DeviceData
from .dp import DPConfig, DPSpent
from .models import build_model
from .privacy import Audit
from .results import MODEL, Communication, Metrics
from .rng import Streams

if TYPE_CHECKING:
    from .cost import Cost, Workload


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings shared by every method of a table (one protocol for all)."""

    model: str = "cnn"
    norm: str = "group"  # batch | group | none
    rounds: int = 30  # communication rounds; pooled / local-only training runs rounds x local_epochs epochs
    local_epochs: int = 2  # epochs over a client's data per round
    batch_size: int = 64
    lr: float = 0.05  # SGD learning rate at round 0
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_schedule: str = "cosine"  # cosine (over rounds, to 0) | constant
    client_fraction: float = 1.0  # share of clients sampled per round (at least one)

    def lr_at(self, step: int, total: int) -> float:
        if self.lr_schedule == "constant":
            return self.lr
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * step / total))


@contextlib.contextmanager
def timed(timings: dict, phase: str):
    """Adds the seconds the block takes to `timings[phase]` (a phase may run in pieces)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        timings[phase] = timings.get(phase, 0.0) + time.perf_counter() - t0


def null_progress(total: int, desc: str):
    return contextlib.nullcontext(_NullBar())


class _NullBar:
    def update(self, n: int = 1) -> None: ...
    def set_postfix_str(self, s: str) -> None: ...
    def log(self, step: dict, **context) -> None: ...


@dataclass(frozen=True)
class Part:
    """A piece of a run that an executor may do ahead, as a task of its own (FederatedFactory:
    one generator; `Capabilities.parts`). Made once, by the command's `Method.parts`, it
    carries everything its work needs (`work`: the method's own value, e.g. a client, a class,
    a seed and the indices of its images), so the worker that does it neither re-lists the
    run's parts nor matches keys. `name` says what it computes (for logs); `key` identifies
    the work by content without the numerics of the process that listed it: runs that share a
    piece name it with an equal value, so an executor does it once. Where its result is
    cached is keyed by the numerics of the process that computes it."""

    name: str
    key: str
    work: Any = field(default=None, compare=False, hash=False, repr=False)

    def __str__(self) -> str:
        return f"{self.name}/{self.key}"


@dataclass
class RunContext:
    """Everything a method's `run` may use; built by the harness for one run."""

    data: DeviceData
    clients: list[torch.Tensor]  # one device index tensor into data.x_train per client
    train: TrainConfig
    streams: Streams
    # progress(total, desc) -> context manager yielding a bar with update(n), set_postfix_str(s)
    # and log(step): an evaluated round or epoch (Selection.last_step), after its update
    # (bench/monitor.py)
    progress: Callable[[int, str], Any] = null_progress
    cache_dir: Path | None = None  # where methods may keep reusable intermediate work
    clients_at_once: int = 1  # >1: weight-averaging methods train clients vectorised (torch.func)
    # >1: on the CPU, the clients of a round that `vectorises_clients` methods train, that many
    # at a time in threads of their own (bitwise the records of one at a time: methods/federated.py)
    client_threads: int = 1
    # what the run's float results depend on beyond its config and code (methods/numerics.py:
    # threads, pins, CPU, torch): its record carries it, caches of reusable work key on it;
    # None: this process's numerics on the run's device, as torch is set now
    numerics: numerics.Numerics | None = None
    # where the run's long loops save and resume (methods/checkpoints.py); off by default
    checkpoint: Checkpoint = field(default_factory=Checkpoint.off)
    # differential privacy the run asked for (methods/dp.py: RunConfig.dp); None: no DP
    dp: DPConfig | None = None

    def __post_init__(self):
        if self.numerics is None:
            self.numerics = numerics.current(self.device.type)

    @property
    def device(self) -> torch.device:
        return self.data.device

    @property
    def n_classes(self) -> int:
        return self.data.info.n_classes

    def new_model(self, purpose: str = "init") -> nn.Module:
        """A freshly initialised classifier on the device, seeded by the run's `purpose` stream."""
        with self.streams.global_torch(purpose):
            model = build_model(self.train.model, self.data.info.channels, self.n_classes,
                                self.data.resolution, self.train.norm)
        return self.data.place(model)

    def classifier_bytes(self) -> int:
        """Bytes of the table's classifier on the wire (float32 weights and its buffers)."""
        with torch.device("meta"):
            return tensor_bytes(build_model(self.train.model, self.data.info.channels,
                                            self.n_classes, self.data.resolution,
                                            self.train.norm).state_dict())


@dataclass
class MethodResult:
    metrics: Metrics  # the evaluation of each model the method serves (methods/results.py)
    curves: dict  # name -> list, one entry per round / epoch ("<variant>/<name>" for several)
    communication: dict[str, Communication]  # per variant, the same keys as metrics.variants
    timings: dict = field(default_factory=dict)  # phase -> seconds
    extra: dict = field(default_factory=dict)
    artifacts: dict = field(default_factory=dict)  # name -> uint8 image array, saved as PNG
    # the membership audit of what the method shares (methods/privacy.py): "shared", what the
    # server holds of each client (or `not_audited(reason)`), and "received" where the
    # clients also receive a model of the others' data (weight averaging)
    audit: dict[str, Audit] = field(default_factory=dict)
    # what a DP run spent (methods/dp.py); None: the run had no DP
    dp: DPSpent | None = None

    def __post_init__(self):
        if set(self.communication) != set(self.metrics.variants):
            raise ValueError(f"communication {sorted(self.communication)} and metrics "
                             f"{sorted(self.metrics.variants)} must name the same variants")


@dataclass(frozen=True)
class Capabilities:
    """What a method can do, declared once in its class body (`capabilities = Capabilities(...)`)
    and read by the harness from there alone; each is checked by the conformance suite
    (bench/conformance.py): a method that declares one does it."""

    # False: the result does not depend on the client split (training on the pooled data, the
    # reference figures draw)
    uses_split: bool = True
    # `bench unlearn` can leave clients out of a stored run (Params.exclude_clients)
    unlearns: bool = False
    # its clients are independent within a round: it honours RunContext.clients_at_once
    # (methods/vectorized.py) and client_threads (methods/federated.py), so each client's hooks
    # may keep state of that client only
    vectorises_clients: bool = False
    # splits into independent pieces the parallel executors run as tasks of their own
    # (`Method.parts` and `Method.do_part`)
    parts: bool = False
    # the models it may serve, its record's `metrics.variants` (MODEL: one model; a run may
    # serve fewer, e.g. FederatedFactory with modes=server)
    variants: tuple[str, ...] = (MODEL,)
    # the levels of differential privacy it runs with (methods/dp.py): "example" (DP-SGD in
    # each client), "client" (DP-FedAvg at the server); `--set dp.level=...` is refused for
    # the others
    dp_levels: tuple[str, ...] = ()


class Method(abc.ABC):
    """The contract of a method: a class with a `name`, its frozen `Params` dataclass (an
    instance of it is the method's only state: one object serves any number of runs), its
    `capabilities`, and the hooks below. `run` and `cost` are abstract: a method that does not
    say what it costs cannot be built (the guard of `bench run` prices every method).
    docs/extending.md shows a new method end to end; `bench.conformance.check_method(cls)` tests
    one."""

    name: ClassVar[str]
    Params: ClassVar[type]
    # named sets of Params values (`--set METHOD.preset=NAME`); None: the method has none
    PRESETS: ClassVar[dict | None] = None
    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init__(self, params=None):
        self.params = params if params is not None else self.Params()

    @abc.abstractmethod
    def run(self, ctx: RunContext) -> MethodResult:
        """One run: train, select on validation, evaluate on test."""

    @abc.abstractmethod
    def cost(self, work: Workload) -> Cost:
        """The run's work for `work`'s facts (methods/cost.py): its phases' images and FLOPs,
        the networks it trains besides the classifier, and unit costs its authors logged."""

    def summary(self, channels: int, resolution: int) -> str | None:
        """What the method resolves to for data of that shape (`bench run --dry-run`)."""
        return None

    def dp_refusal(self, dp: DPConfig) -> str | None:
        """Why this method, with its parameters, cannot run with `dp` at a level it declares
        (`capabilities.dp_levels`), as a one-line error that says what to do; None: it can."""
        return None

    def parts(self, ctx: RunContext, device_type: str | None = None) -> list[Part]:
        """With `capabilities.parts`: the run's independent pieces not yet in ctx.cache_dir
        when done on `device_type` (runs that share a piece give equal parts); the parallel
        executors run them as tasks of their own (`do_part`) and start the run once they are
        done, which then finds them cached (bench/executors.py)."""
        return []

    def do_part(self, ctx: RunContext, part: Part) -> None:
        """Compute `part` (from `parts`, listed in any process) into ctx.cache_dir."""
        raise NotImplementedError(f"{self.name} has no parts")
