"""Checkpoints inside a run: a long loop saves what it needs to go on, and a run started again
after a kill (SIGKILL, a Slurm time limit, a preempted node, a Ray retry) continues from there
to the same bits as a run that was never stopped (docs/records.md, "Checkpoints").

One folder per run (beside its record, `<run_id>.ckpt/`) or per cached piece of work (a
generator module: `<key>.ckpt/` beside the cache entry), with one file per phase of the run
(`rounds.pt`, `ff__server.pt`, ...) holding that phase's latest state: a run killed in a later
phase resumes an earlier one from its last save (which may be its end). A loop asks `due()` at the end
of each round or epoch, and saves when `every` seconds of wall time have passed since the last
save (the cost is then bounded by one save per interval); `every=0` saves at every boundary
(the tests use it).

Resuming to the same bits needs no random state beyond what a loop saves: every draw of the
suite comes from a stream named by its purpose and step (methods/rng.py: `batches/r{r}/c{k}`,
`{purpose}/e{e}`), made afresh where it is used, and the client schedule is drawn up front.
The loops that hold a generator across steps (a generator module's) save its state.

A checkpoint carries the identity of what wrote it (the run id or content key, the code
fingerprint, library versions and numerics, bench/provenance.py, and whatever else changes the
bits: `--clients-at-once`): one written by other code, numerics or settings is discarded with
one line, and an unreadable one is moved aside as `<name>.corrupt`, as records are; neither is
ever used. The numerics name the device type, so a checkpoint written on a GPU is refused on
a CPU and the other way round (their bits differ), with that line.

Checkpoints are device-independent files: every tensor is read onto the CPU
(`MAP_LOCATION`), then moved to the run's device, except random generators' states, which
torch only takes as CPU byte tensors (`torch.set_rng_state`, `Generator.set_state`,
`torch.cuda.set_rng_state`): a loop saves them wrapped as `RngState`, and they stay on the
CPU. (Reading onto the run's device, as this module once did, moves those states to the GPU
and every resume on CUDA fails with "RNG state must be a torch.ByteTensor";
tests/test_resume.py plants that and sees it fail.) Files are written with the suite's
one atomic writer (datasets/files.py) and removed when the record (or cache entry) is
written. They are pickles (torch.save of tensors, dicts and the loops' dataclasses), read back
only from the results folder the suite writes: like the code, trust that folder.
"""
from __future__ import annotations

import dataclasses
import datetime
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ..datasets.files import atomic_write

if TYPE_CHECKING:
    import torch
# torch is imported where a checkpoint is read or written: the command line reads SUFFIX and
# DEFAULT_EVERY without it

SUFFIX = ".ckpt"
DEFAULT_EVERY = 600.0  # seconds of wall time between saves (bench run --checkpoint-every)
MAP_LOCATION = "cpu"  # where a checkpoint's tensors are read to, whatever the run's device


@dataclass(frozen=True)
class RngState:
    """A random generator's state as a checkpoint keeps it: a CPU byte tensor, left on the CPU
    when the rest of a resumed state moves to the run's device."""

    tensor: "torch.Tensor"


def to_device(tree: Any, device) -> Any:
    """`tree` (dicts, lists, tuples and dataclasses of tensors and other values: a server
    state such as SCAFFOLD's controls or the adaptive servers' moments is a dataclass) with
    every tensor on `device`; `RngState`s and other objects are left as they are."""
    import torch

    if isinstance(tree, torch.Tensor):
        return tree.to(device)
    if isinstance(tree, dict):
        return {k: to_device(v, device) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(to_device(v, device) for v in tree)
    if dataclasses.is_dataclass(tree) and not isinstance(tree, (type, RngState)):
        return dataclasses.replace(tree, **{f.name: to_device(getattr(tree, f.name), device)
                                            for f in dataclasses.fields(tree) if f.init})
    return tree


def _warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Checkpoint:
    """The checkpoint folder of one run or one piece of work, a file per phase. `every=None`
    (`Checkpoint.off()`) saves and resumes nothing, and neither do the checkpoints `derive`d
    from it; `path=None` with an interval has no folder of its own (a generator part's
    context) but derives checkpoints that do."""

    def __init__(self, path: str | os.PathLike | None, identity: dict,
                 every: float | None = DEFAULT_EVERY, device: torch.device | str = "cpu",
                 warn: Callable[[str], None] = _warn):
        self.path = Path(path) if path is not None else None
        self.identity, self.every, self.device, self.warn = identity, every, device, warn
        # what this run continued from (the record keeps it); checkpoints `derive`d from this
        # one (a generator module's) add to the same list
        self.resumed: list[dict] = []
        self.saves, self.save_seconds, self.bytes = 0, 0.0, 0
        self._last = time.monotonic()

    @classmethod
    def off(cls) -> "Checkpoint":
        return cls(None, {}, every=None)

    @property
    def on(self) -> bool:
        return self.path is not None and self.every is not None

    def derive(self, path: str | os.PathLike, identity: dict) -> "Checkpoint":
        """The checkpoint of a piece of work the run does (a generator module, keyed by its
        content), with this one's interval, device and messages."""
        derived = Checkpoint(path if self.every is not None else None, identity, self.every,
                             self.device, self.warn)
        derived.resumed = self.resumed
        return derived

    def file(self, phase: str) -> Path:
        return self.path / f"{phase.replace('/', '__')}.pt"

    # --- reading -----------------------------------------------------------------------
    def resume(self, phase: str) -> Any | None:
        """The saved state of `phase` (None: nothing usable, start it afresh); the record will
        say the run continued from it. A file of other code or numerics is deleted, an
        unreadable one moved aside, each with one line."""
        if not self.on or not self.file(phase).exists():
            return None
        import torch

        path = self.file(phase)
        try:
            blob = torch.load(path, map_location=MAP_LOCATION, weights_only=False)
            if not (isinstance(blob, dict) and {"identity", "at", "state"} <= set(blob)):
                raise ValueError("not a checkpoint of this suite")
        except Exception as e:  # noqa: BLE001 - any unreadable file is set aside, never used
            target = path.with_name(path.name + ".corrupt")
            os.replace(path, target)
            self.warn(f"warning: checkpoint {path} is unreadable ({type(e).__name__}: "
                      f"{str(e)[:80]}); moved to {target.name}, its phase starts afresh")
            return None
        differ = sorted(k for k in {*self.identity, *blob["identity"]}
                        if self.identity.get(k) != blob["identity"].get(k))
        if differ:
            path.unlink(missing_ok=True)
            self.warn(f"checkpoint {path} was written by other {', '.join(differ)}: "
                      f"discarded, its phase starts afresh")
            return None
        self.resumed.append({"phase": phase, "at": blob["at"], "written": blob.get("written")})
        return to_device(blob["state"], self.device)

    # --- writing -----------------------------------------------------------------------
    def due(self) -> bool:
        """Whether a loop at a boundary should save now (`every` seconds since the last)."""
        return self.on and time.monotonic() - self._last >= self.every  # type: ignore

    def save(self, phase: str, at: str, state: Any) -> None:
        """Write `state` as `phase`'s checkpoint, atomically ("at": where the loop stands, for
        people and for the record of a resumed run)."""
        if not self.on:
            return
        import torch

        t0 = time.perf_counter()
        written = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        path = atomic_write(self.file(phase), lambda f: torch.save(
            {"identity": self.identity, "written": written, "at": at, "state": state}, f))
        self.saves += 1
        self.bytes = max(self.bytes, path.stat().st_size)
        self.save_seconds += time.perf_counter() - t0
        self._last = time.monotonic()

    def save_if_due(self, phase: str, at: str, state: Callable[[], Any]) -> None:
        """`save(phase, at, state())` when due (`state` is only built then)."""
        if self.due():
            self.save(phase, at, state())

    def clear(self) -> None:
        """Remove the folder: what it served is stored (the record, the cache entry)."""
        if self.path is not None and self.path.exists():
            for f in self.path.iterdir():
                if f.suffix == ".pt" or f.name.endswith(".tmp"):
                    f.unlink(missing_ok=True)
            try:
                self.path.rmdir()
            except OSError:  # a quarantined file stays for people to look at
                pass

    def summary(self) -> dict:
        """What the record keeps: where the run resumed from, and the saves' cost (count,
        seconds, the largest file's bytes)."""
        return {"resumed": self.resumed, "saves": self.saves,
                "save_seconds": self.save_seconds, "largest_bytes": self.bytes}


def resumable(checkpoint: Checkpoint, phase: str, total: int, save: Callable[[], Any],
              load: Callable[[Any], None], at: Callable[[int], str] | None = None,
              bar=None) -> Iterator[int]:
    """The steps 0 .. total-1 of a loop that resumes: the one way every long loop of the suite
    checkpoints. Its state is declared once, as a pair: `save()` returns everything the loop
    changes besides what each step recomputes (weights, optimiser moments, the selection, a
    generator's state as `RngState`, ...), `load(state)` puts such a value back.

    If `phase` has a checkpoint (of this code and numerics), `load` is called with its state
    and the steps continue after the saved one. After each step the loop's body finishes, the
    state is saved when due (`Checkpoint.every`); a body that leaves the loop early (`break`,
    an exception) saves nothing for that step. With the checkpoint off, it is `range(total)`.
    `at(done)` says where the loop stands in words; a progress `bar` moves past resumed steps.

        for epoch in resumable(ctx.checkpoint, "epochs", epochs, save, load):
            ...  # one epoch
    """
    at = at or (lambda done: f"{done} of {total}")
    start = 0
    saved = checkpoint.resume(phase)
    if saved is not None:
        start = saved["step"]
        load(saved["state"])
    if bar is not None:
        bar.update(start)
    for step in range(start, total):
        yield step
        checkpoint.save_if_due(phase, at(step + 1), lambda: {"step": step + 1, "state": save()})
