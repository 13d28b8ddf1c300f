"""Live logs: what a run is doing while it computes, readable by people and programs.

Every run appends JSON lines to `<run_id>.log.jsonl` beside its future record (bench/store.py),
from the process that computes it (this one, a joblib worker or a Ray node: the results folder
is shared), so a run is visible however it executes and whether or not stderr is a terminal:

- `start`: the run's label, host and pid (one per attempt; a log keeps every attempt);
- `phase`: a phase begins (`ctx.progress(total, desc)` in a method: rounds, client epochs,
  generator steps, synthetic images, classifier epochs), with its length;
- `step`: one evaluated round or epoch: its validation and test metrics, training loss,
  learning rate and bytes sent so far, and the seconds since the phase began;
- `progress`: a heartbeat inside a long phase (at most every `HEARTBEAT` seconds), with the
  estimated time left in that phase;
- `phase_end`, then `end` (seconds, selected accuracy) or `failed` (the error).

The same scalars go to TensorBoard with `--tensorboard DIR` (the optional `tensorboard`
package). `bench status` and the plain progress lines of `bench run` off a terminal read the logs
(`latest`), so they work alike for every executor.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .datasets.files import HOST

HEARTBEAT = 10.0  # seconds between heartbeat lines inside a phase


class RunLog:
    """The live log of one run attempt; `progress` is what `RunContext.progress` calls. Used
    as a context manager, it ends with `end` (with `selected`, the metrics the caller sets) or,
    on an exception, with `failed`."""

    def __init__(self, path: Path, label: str, run_id: str, tensorboard: str | None = None,
                 inner=None, heartbeat: float = HEARTBEAT):
        self.path, self.heartbeat, self.inner = Path(path), heartbeat, inner
        self.t0 = time.monotonic()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.board = _board(tensorboard, f"{label} [{run_id[:8]}]") if tensorboard else None
        self.selected: dict | None = None
        self.event("start", label=label, run_id=run_id, host=HOST, pid=os.getpid())

    def __enter__(self) -> "RunLog":
        return self

    def __exit__(self, kind, error, trace) -> bool:
        self.close(error, self.selected)
        return False

    def event(self, kind: str, **fields) -> None:
        line = {"event": kind, "time": round(time.time(), 3),
                "elapsed": round(time.monotonic() - self.t0, 3),
                # a diverging run's NaN or inf loss is logged as null, never a crash
                **{k: None if isinstance(v, float) and not math.isfinite(v) else v
                   for k, v in fields.items()}}
        # one write of one line in append mode: lines of concurrent writers never interleave
        with open(self.path, "a") as f:
            f.write(json.dumps(line, allow_nan=False, default=float) + "\n")

    @contextlib.contextmanager
    def progress(self, total: int, desc: str):
        inner = self.inner(total, desc) if self.inner else contextlib.nullcontext()
        with inner as bar:
            phase = Phase(self, desc, total, bar)
            self.event("phase", phase=desc, total=total)
            try:
                yield phase
            finally:
                self.event("phase_end", phase=desc, step=phase.n, total=total,
                           seconds=round(time.monotonic() - phase.t0, 3))

    def close(self, error: BaseException | None = None, selected: dict | None = None) -> None:
        """Write the attempt's last line: `end`, or `failed` with `error`."""
        if error is None:
            self.event("end", seconds=round(time.monotonic() - self.t0, 3),
                       accuracy=(selected or {}).get("accuracy"))
        else:
            self.event("failed", error=f"{type(error).__name__}: {error}"[:500])
        if self.board is not None:
            self.board.close()


class Phase:
    """One phase's bar: `update(n)` advances it, `set_postfix_str` annotates the terminal bar,
    `log(entry)` records an evaluated round or epoch (methods/evaluation.py's entries)."""

    def __init__(self, log: RunLog, desc: str, total: int, bar=None):
        self.log_, self.desc, self.total, self.bar = log, desc, total, bar
        self.n, self.t0 = 0, time.monotonic()
        self.last_line = self.t0

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        now = time.monotonic()
        # a heartbeat once a step is done: `resumable` calls update(0) when nothing is resumed,
        # and before a first step there is no rate to estimate the time left from
        if self.n and now - self.last_line >= self.log_.heartbeat and self.n < self.total:
            self.last_line = now
            self.log_.event("progress", phase=self.desc, step=self.n, total=self.total,
                            eta_s=round(self.eta(now), 1))

    def set_postfix_str(self, s: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(s)

    def eta(self, now: float | None = None) -> float | None:
        if not self.n:
            return None
        spent = (now or time.monotonic()) - self.t0
        return spent / self.n * max(self.total - self.n, 0)

    def log(self, step: dict, **context) -> None:
        """One evaluated round or epoch (`Selection.last_step()`, after its `update`): its
        metrics, learning rate and bytes, and the seconds so far; `context` names more
        (local_only's client)."""
        now = time.monotonic()
        self.last_line = now
        scalars = {("bytes" if k == "bytes_cumulative" else k): v for k, v in step.items()
                   if k != "round"}
        self.log_.event("step", phase=self.desc, step=self.n, total=self.total,
                        round=int(step["round"]), **context, seconds=round(now - self.t0, 3),
                        eta_s=_round(self.eta(now)), **scalars)
        if self.log_.board is not None:
            tag = "/".join([self.desc, *(f"{k}{v}" for k, v in context.items())])
            for k, v in scalars.items():
                if v is not None:
                    self.log_.board.add_scalar(f"{tag}/{k}", v, int(step["round"]))


def _round(x):
    return None if x is None else round(x, 1)


def tensorboard_writer():
    """torch's SummaryWriter class; a one-line error when the tensorboard package is absent
    (`bench run` asks before any run starts, so no worker meets it)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch's writer needs the tensorboard package
        from .config import ConfigError
        raise ConfigError("--tensorboard needs the tensorboard package: pip install "
                          "tensorboard (or pip install -e '.[tensorboard]')") from None
    return SummaryWriter


def _board(folder: str, name: str):
    safe = "".join(ch if ch.isalnum() or ch in "-_.[]" else "_" for ch in name)
    return tensorboard_writer()(str(Path(folder) / safe))


@dataclass
class Latest:
    """Where a run stands, from the tail of its log."""

    label: str
    phase: str | None
    step: int | None
    total: int | None
    eta_s: float | None
    val_accuracy: float | None
    state: str  # running | ended | failed
    age_s: float  # seconds since the last line
    started: float  # time.time() of the attempt's start line
    host: str
    pid: int
    error: str | None = None  # a failed attempt's

    def line(self) -> str:
        where = f"{self.phase} {self.step}/{self.total}" if self.phase else "starting"
        acc = "" if self.val_accuracy is None else f", val acc {self.val_accuracy:.3f}"
        eta = "" if self.eta_s is None else f", about {_duration(self.eta_s)} left in this phase"
        return f"{self.label}: {where}{acc}{eta} (last line {_duration(self.age_s)} ago)"


def latest(path: Path) -> Latest | None:
    """The state of the last attempt in a run's log (None if it has no start line)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    events = []
    for text in lines:
        try:
            events.append(json.loads(text))
        except json.JSONDecodeError:  # a line being written
            continue
    starts = [i for i, e in enumerate(events) if e.get("event") == "start"]
    if not starts:
        return None
    attempt = events[starts[-1]:]
    state = {"end": "ended", "failed": "failed"}.get(attempt[-1]["event"], "running")
    where = next((e for e in reversed(attempt) if "phase" in e and "step" in e), None)
    opened = next((e for e in reversed(attempt) if e["event"] == "phase"), None)
    if opened is not None and (where is None or where["time"] < opened["time"]):
        where = {**opened, "step": 0}
    acc = next((e["val_accuracy"] for e in reversed(attempt) if "val_accuracy" in e), None)
    return Latest(attempt[0]["label"], where and where["phase"], where and where["step"],
                  where and where["total"], where and where.get("eta_s"), acc, state,
                  max(time.time() - attempt[-1]["time"], 0.0), attempt[0]["time"],
                  attempt[0]["host"], attempt[0]["pid"], attempt[-1].get("error"))


class Reporter:
    """Off a terminal, one plain line per run in progress every `every` seconds (from the
    live logs of `paths()`, attempts started after `since`), printed by a background thread."""

    def __init__(self, paths, every: float, say, since: float):
        import threading

        self.paths, self.every, self.say, self.since = paths, every, say, since
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        if self.every > 0:
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join()

    def _loop(self) -> None:
        while not self.stop.wait(self.every):
            for state in running(self.paths(), self.since):
                self.say(f"progress: {state.line()}")


def running(paths, since: float = 0.0) -> list[Latest]:
    """The attempts in progress among the logs at `paths` (started after `since`)."""
    out = []
    for path in paths:
        state = latest(path)
        if state is not None and state.state == "running" and state.started >= since:
            out.append(state)
    return out


def _duration(seconds: float) -> str:
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"
