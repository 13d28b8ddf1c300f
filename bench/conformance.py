"""The method contract, tested: `check_method(cls)` runs a common battery on any method, the
suite's own (tests/test_conformance.py runs it over every registered method) or a user's.

As scikit-learn's `check_estimator` does for estimators: one tiny run on the embedded digits
(a few seconds with small settings, `sets`) and what every method must do, each a `Check`:

- contract: a subclass of `Method` with a `name`, a frozen `Params` dataclass, `run` and `cost`;
- cost: `cost()` gives phases of positive, finite FLOPs, the guard of `bench run` prices the
  run, and the memory estimate sizes it;
- record: the run gives a typed record whose variants are among those declared
  (`Capabilities.variants`), with communication for each;
- deterministic: a second run gives the same record, bit for bit;
- resume: a run interrupted right after its first checkpoint is saved (as a kill there would
  leave it) resumes from that checkpoint to the same record, bit for bit;
- capabilities: what the method declares holds (`unlearns`: a run without client 0 differs
  and never reads client 0's images; `parts`: parts done ahead as tasks give the same record;
  `vectorises_clients`: clients trained at once agree with looped ones to float tolerance,
  and two trained at once in threads (`--client-threads`) give the bits of one at a time);
- audit: the record says what the membership audit found on what the clients shared, or why
  it was not audited;
- fingerprint: the record's code fingerprint covers the method's own source file.

`check_method` returns the checks and raises `ConformanceError` naming every one that failed.
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import parse_overrides, resolve
from .methods.checkpoints import Checkpoint
from .methods.dp import DPConfig
from .methods.privacy import SHARED, Audit
from .methods.registry import MethodError, _checked, adding

TOLERANCE = 1e-4  # vectorised clients against looped ones (float rounding of batched kernels)


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str = ""

    def __str__(self) -> str:
        return f"{'ok' if self.passed else 'FAILED'} {self.name}" + \
            (f": {self.detail}" if self.detail else "")


class ConformanceError(AssertionError):
    def __init__(self, method: str, checks: list[Check]):
        self.checks = checks
        failed = [c for c in checks if not c.passed]
        super().__init__(f"{method} breaks the method contract: " +
                         "; ".join(f"{c.name}: {c.detail}" for c in failed))


class _Interrupted(Exception):
    """Raised where a kill would have stopped the run."""


def _kind(phase: str) -> str:
    """A checkpoint phase without its numbers: the loop it belongs to ('batches/c3' ->
    'batches/c#', one `fit` per client)."""
    return re.sub(r"\d+", "#", phase)


@contextlib.contextmanager
def _saves(seen: list[str], interrupt: str | None = None):
    """In this process, Checkpoint.save also notes each phase it writes in `seen` and, with
    `interrupt` (a phase kind), raises right after the first save of that kind (written), as a
    kill there would leave it."""
    save = Checkpoint.save

    def saving(self, phase, at, state):
        save(self, phase, at, state)
        seen.append(phase)
        if interrupt is not None and _kind(phase) == interrupt:
            raise _Interrupted(f"{phase} at {at}")
    Checkpoint.save = saving
    try:
        yield
    finally:
        Checkpoint.save = save


def _without_cache(value):
    """`value` without its "cache" keys, at any depth (a record may say whether a piece of
    work was found cached, e.g. each generator's; that is not a result)."""
    if isinstance(value, dict):
        return {k: _without_cache(v) for k, v in value.items() if k != "cache"}
    if isinstance(value, list):
        return [_without_cache(v) for v in value]
    return value


def comparable(record) -> dict:
    """What a record says that must not depend on timing, a kill or the cache: all but the
    timings, the environment, the time it was written, the checkpoints' own account, and
    whether a piece of work was found cached."""
    d = record.to_dict()
    for key in ("timings", "environment", "created", "checkpoints"):
        d.pop(key, None)
    d["extra"] = _without_cache(d["extra"])
    return d


def _differs(a: dict, b: dict, path: str = "") -> str:
    """The first key path at which two records' dicts differ ('' when equal)."""
    if type(a) is not type(b):
        return path or "(root)"
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                return f"{path}.{k}"
            inner = _differs(a[k], b[k], f"{path}.{k}")
            if inner:
                return inner
        return ""
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path} (length)"
        return next((d for d in (_differs(x, y, f"{path}[{i}]")
                                 for i, (x, y) in enumerate(zip(a, b))) if d), "")
    same = a == b or (isinstance(a, float) and isinstance(b, float) and
                      math.isnan(a) and math.isnan(b))
    return "" if same else path or "(root)"


def _close(a, b, tol: float) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return set(a) == set(b) and all(_close(a[k], b[k], tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= tol or (math.isnan(a) and math.isnan(b))
    return a == b


def check_method(cls: type, sets: tuple[str, ...] = ("rounds=2", "local_epochs=1"),
                 dataset: str = "digits", split: str = "silos",
                 workdir: str | Path | None = None) -> list[Check]:
    """Run the battery on method class `cls` with `--set` values `sets` (keep them small: the
    battery runs the method about five times). Returns the checks; raises ConformanceError
    when any fails."""
    name = getattr(cls, "name", cls.__name__)
    try:
        _checked(cls, name)
        if not (dataclasses.is_dataclass(cls.Params)
                and cls.Params.__dataclass_params__.frozen):
            raise MethodError(f"{name}.Params must be a frozen dataclass")
    except (MethodError, AttributeError) as e:
        raise ConformanceError(name, [Check("contract", False, str(e))]) from None
    checks = [Check("contract", True)]
    with contextlib.ExitStack() as stack:
        stack.enter_context(adding(cls))
        root = Path(workdir) if workdir is not None else \
            Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="flbench-check-")))
        config = resolve(dataset, name, split, 0, parse_overrides(list(sets)))
        checks += _battery(cls, config, root)
    if not all(c.passed for c in checks):
        raise ConformanceError(name, checks)
    return checks


def _battery(cls, config, root: Path) -> list[Check]:
    from .estimate import forecast, peak_memory, run_cost
    from .datasets.registry import loader_file
    from .methods.provenance import method_files
    from .methods.registry import registered
    from .runner import execute

    checks = []
    cpu = torch.device("cpu")

    def run(folder: str, every: float | None = 0, **kwargs):
        """A run in a folder of its own, saving a checkpoint after every step (`every` 0) or
        none (None)."""
        out = root / folder
        return execute(config, cpu, cache_dir=out / "cache",
                       checkpoint_path=out / "run.ckpt" if every is not None else None,
                       checkpoint_every=every, **kwargs)[0]

    # cost: every method says what it costs, and the guard can price it
    cost = run_cost(config)
    flops = [p.flops for p in cost.phases]
    ok = bool(flops) and all(math.isfinite(f) and f > 0 for f in flops)
    detail = "" if ok else f"cost() gives phases {[(p.name, p.flops) for p in cost.phases]}"
    if ok:
        f = forecast([config], "cuda", gpus=1)
        memory = peak_memory(config)
        if f is None or not f.hours > 0 or not memory.bytes > 0:
            ok, detail = False, "the guard of `bench run` cannot price it"
    checks.append(Check("cost", ok, detail))

    # record, deterministic (the second run saves checkpoints, the first none: saving must
    # change nothing), resume
    first = run("first", every=None)
    declared = set(cls.capabilities.variants)
    variants = set(first.metrics.variants)
    ok = variants <= declared and set(first.communication) == variants
    checks.append(Check("record", ok, "" if ok else
                        f"variants {sorted(variants)} (declared {sorted(declared)}), "
                        f"communication for {sorted(first.communication)}"))
    phases: list[str] = []
    with _saves(phases):
        second = run("second")
    where = _differs(comparable(first), comparable(second))
    checks.append(Check("deterministic", not where,
                        f"two runs of the same config differ at {where}" if where else ""))
    checks.append(_resume(run, first, list(dict.fromkeys(map(_kind, phases)))))

    # capabilities
    caps = cls.capabilities
    if caps.unlearns:
        checks.append(_unlearns(cls, config, root, first))
    if caps.parts:
        checks.append(_parts(config, root, first))
    if caps.vectorises_clients:
        at_once = run("at_once", clients_at_once=2)
        ok = _close(first.metrics.to_dict(), at_once.metrics.to_dict(), TOLERANCE)
        checks.append(Check("vectorises_clients", ok, "" if ok else
                            f"clients trained two at a time differ from looped ones by more "
                            f"than {TOLERANCE}"))
        # independent clients: two trained at once in threads give the bits of one at a time
        threaded = run("client_threads", every=None, client_threads=2)
        where = _differs(comparable(first), comparable(threaded))
        checks.append(Check("client_threads", not where,
                            f"clients trained two at a time in threads differ from one at a "
                            f"time at {where}" if where else ""))

    # differential privacy: each declared level records what its accountant spent, and its
    # noise changes the run
    for level in caps.dp_levels:
        target = DPConfig(epsilon=8.0, level=level)
        private = execute(dataclasses.replace(config, dp=target), cpu,
                          cache_dir=root / f"dp_{level}" / "cache")[0]
        spent = private.dp
        ok = spent is not None and spent.level == level and bool(spent.parties) and \
            0 < spent.epsilon <= target.epsilon and \
            private.metrics.to_dict() != first.metrics.to_dict()
        checks.append(Check(f"dp_{level}", ok, "" if ok else
                            f"a run with --set dp.level={level} must record the epsilon its "
                            f"accountant spent (MethodResult.dp) and differ from the run "
                            f"without DP (methods/dp.py); it recorded {spent}"))

    # audit
    shared = first.audit.get(SHARED)
    ok = isinstance(shared, Audit) and (shared.attack is not None and shared.auc is not None
                                        or bool(shared.not_audited))
    checks.append(Check("audit", ok, "" if ok else
                        "MethodResult.audit['shared'] must hold the membership audit of what "
                        "the clients share, or not_audited(reason) (methods/privacy.py)"))

    # fingerprint: the files the record's code fingerprint hashes hold the method's source
    try:
        source = Path(inspect.getfile(cls)).resolve()
    except TypeError:  # a class of __main__ or a notebook cell
        source = None
    covered = method_files(cls, tuple(registered().values()),
                           loader=loader_file(config.dataset).name)
    ok = source is not None and source in {Path(p).resolve() for p in covered}
    checks.append(Check("fingerprint", ok, "" if ok else
                        f"the record's code fingerprint does not cover the method's source "
                        f"({source or 'none: define the method in a module file'})"))
    return checks


def _resume(run, first, kinds: list[str]) -> Check:
    """For each loop that saved (each phase kind, in order): a run interrupted right after
    that loop's first save, then started again, must resume from it and end with `first`'s
    record, bit for bit."""
    if not kinds:
        return Check("resume", False, "the run saved no checkpoint: its long loops must save "
                                      "through methods/checkpoints.py (`resumable`)")
    for i, kind in enumerate(kinds):
        folder, seen = f"resumed_{i}", []
        try:
            with _saves(seen, interrupt=kind):
                run(folder)
        except _Interrupted:
            pass
        else:
            continue  # a phase seen once only after another one was interrupted, say
        resumed = run(folder)
        where = _differs(comparable(first), comparable(resumed))
        if where:
            return Check("resume", False, f"interrupted after its first save of {kind}, the "
                                          f"resumed run differs at {where}")
        if not resumed.checkpoints["resumed"]:
            return Check("resume", False, f"interrupted after its first save of {kind}, the "
                                          f"run did not resume that checkpoint")
    return Check("resume", True, f"interrupted and resumed in {', '.join(kinds)}")


def _unlearns(cls, config, root: Path, full) -> Check:
    """A run that also leaves out the first client the run had differs from the full run, and
    never reads that client's images (they are replaced by noise here and the result must not
    change)."""
    from .runner import execute
    from . import runner

    if "exclude_clients" not in {f.name for f in dataclasses.fields(cls.Params)}:
        return Check("unlearns", False, "Params has no exclude_clients")
    left_out = tuple(config.method_params.get("exclude_clients", ()))
    forget = next(k for k in range(config.n_clients) if k not in left_out)
    params = {**config.method_params, "exclude_clients": (*left_out, forget)}
    without = dataclasses.replace(config, method_params=params)
    forgot = execute(without, torch.device("cpu"), cache_dir=root / "unlearn" / "cache")[0]
    if forgot.metrics.to_dict() == full.metrics.to_dict():
        return Check("unlearns", False, f"leaving client {forget} out changed nothing")
    dataset = runner.cached_dataset(config.dataset, None)
    partition = runner.client_indices(config, dataset)
    noisy = dataclasses.replace(dataset, x_train=dataset.x_train.clone())
    own = torch.from_numpy(partition[forget])
    noisy.x_train[own] = torch.randint_like(noisy.x_train[own], 0, 256,
                                            generator=torch.Generator().manual_seed(1))
    cached = runner.cached_dataset
    runner.cached_dataset = lambda *a, **k: noisy
    try:
        blind = execute(without, torch.device("cpu"), cache_dir=root / "unlearn" / "blind")[0]
    finally:
        runner.cached_dataset = cached
    where = _differs(comparable(forgot), comparable(blind))
    return Check("unlearns", not where, f"client {forget}'s images changed the run without "
                                        f"it (at {where})" if where else "")


def _parts(config, root: Path, first) -> Check:
    """Parts listed here and done as tasks of their own (as the parallel executors do), then
    the run: the same record as the run that did everything itself."""
    from .runner import Execution, execute, pending_parts, perform_part

    out = root / "parts"
    execution = Execution(out=str(out), device="cpu")
    parts = pending_parts(config, execution, "cpu")
    if not parts:
        return Check("parts", False, "capabilities.parts is declared but parts() gave none")
    for part in parts:
        perform_part(config, execution, part)
    left = pending_parts(config, execution, "cpu")
    if left:
        return Check("parts", False, f"{len(left)} of its parts are still pending after they "
                                     f"were done (do_part must put them where parts() looks)")
    record = execute(config, torch.device("cpu"), cache_dir=execution.cache_dir)[0]
    where = _differs(comparable(first), comparable(record))
    return Check("parts", not where, f"the run after its parts differs at {where}"
                 if where else "")
