"""Suite processes on one machine take turns on its cores instead of fighting over them.

Why: torch's CPU kernels run on OpenMP threads that spin while they wait for each other. Two
suite commands of 2 threads each on a 2-core machine (a `bench unlearn` beside a running grid)
each lost a core to the other at every parallel region and ran 5.6x slower than alone
(docs/scaling.md, "Two commands at once"). The usual cures each break something here: fewer threads
per process change the float rounding (a record would depend on what else was running, and
the tripwire references on nothing of the run's own); OMP_WAIT_POLICY=PASSIVE costs a process
alone 1.75x; no GOMP_SPINCOUNT keeps two 2-thread processes within 2.2x (the sweep in
benchmarks/contention.py).

How: the machine's cores are `slots`, one lock file each in a folder per user
(`$BENCH_TURNS_DIR`, default `<tmp>/flbench-turns-<uid>`); a process computes only while it
holds as many slots as it has torch threads. `checkpoint()` runs before every forward call of
every torch module (a global forward pre-hook, so that every method's training, sampling and
evaluation loops take turns without a line of their own); once a process has held its slots
for `SLICE` seconds and another suite process is waiting (a shared lock on `queue.lock`), it
hands them over and waits for its next turn. So two commands at once each run at about half
their speed alone, whatever their thread counts, and a process alone pays one clock read per
checkpoint and one non-blocking lock test per slice. The slots are
`flock` locks: the kernel frees them when a process ends, crashed or killed.

Turns change no number: a process computes with its own thread count, only later. They are on
while a CPU run computes (`bench run` and `bench unlearn`, in worker processes too) and while
`bench report` draws, and off otherwise, so a process never holds slots while it waits for
its own workers; `BENCH_TURNS=0` turns them off (other software on the machine never takes
turns, and a 2-thread suite process beside it still loses a core).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # not a POSIX system: no turns
    fcntl = None

SLICE = 0.25  # seconds a process computes before it hands its slots to a waiting process
POLL = 0.005  # seconds between a waiting process's attempts
HANDOFF = 0.05  # how long a process that handed over waits before it asks again


def enabled() -> bool:
    return fcntl is not None and os.environ.get("BENCH_TURNS", "1") != "0"


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


class Turns:
    """This process's share of the machine's cores: `checkpoint()` in compute loops."""

    def __init__(self, threads: int, folder: str | os.PathLike | None = None,
                 slots: int | None = None):
        self.slots = slots or cores()
        self.threads = max(1, min(threads, self.slots))
        self.folder = Path(folder or os.environ.get("BENCH_TURNS_DIR") or
                           Path(tempfile.gettempdir()) / f"flbench-turns-{os.getuid()}")
        self.folder.mkdir(parents=True, exist_ok=True)
        self._queue = open(self.folder / "queue.lock", "a+")
        self._probe = open(self.folder / "queue.lock", "a+")  # its own open file: its own lock
        self._held: list = []
        self._since = 0.0
        # a run's client threads (--client-threads) reach checkpoint() at once: one hands over
        # and waits while the others wait on this lock, so the process stops as a whole
        self._lock = threading.Lock()
        self.waited = 0.0  # seconds spent waiting for a turn (shown by tests and benchmarks)

    def checkpoint(self) -> None:
        """Go on computing, or hand over and wait: call it between units of compute."""
        with self._lock:
            self._turn()

    def _turn(self) -> None:
        if self._held:
            if time.monotonic() - self._since < SLICE:
                return
            if not self._others_waiting():
                self._since = time.monotonic()
                return
            self.release()
            time.sleep(HANDOFF)
        self._acquire()

    def release(self) -> None:
        for f in self._held:
            fcntl.flock(f, fcntl.LOCK_UN)
            f.close()
        self._held = []

    def close(self) -> None:
        self.release()
        self._queue.close()
        self._probe.close()

    def _others_waiting(self) -> bool:
        try:
            fcntl.flock(self._probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(self._probe, fcntl.LOCK_UN)
        return False

    def _acquire(self) -> None:
        t = time.monotonic()
        fcntl.flock(self._queue, fcntl.LOCK_SH)  # "I am waiting", seen by the holders
        try:
            while True:
                for i in range(self.slots):
                    f = open(self.folder / f"slot-{i}.lock", "a+")
                    try:
                        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        f.close()
                        continue
                    self._held.append(f)
                    if len(self._held) == self.threads:
                        self._since = time.monotonic()
                        self.waited += self._since - t
                        return
                self.release()  # never wait holding part: no deadlock between processes
                time.sleep(POLL)
        finally:
            fcntl.flock(self._queue, fcntl.LOCK_UN)


_current: Turns | None = None  # this process's turns while a `turns()` block runs
_hook = None  # the global forward pre-hook that calls checkpoint()


def checkpoint() -> None:
    """Between units of compute: a no-op outside a `turns()` block."""
    if _current is not None:
        _current.checkpoint()


@contextlib.contextmanager
def turns(threads: int, hold: bool = False):
    """Take turns on the cores with `threads` torch threads for the block (yields the Turns,
    or None with BENCH_TURNS=0); the slots are handed back when it ends, so a process holds
    none while it merely waits (for its worker processes, say). `hold`: take a turn at once,
    for a block with no torch modules of its own (`bench report`). A block inside another
    shares the outer one's turns."""
    global _current, _hook
    if not enabled() or _current is not None:
        yield _current
        return
    _current = Turns(threads)
    if _hook is None:
        import torch

        _hook = torch.nn.modules.module.register_module_forward_pre_hook(
            lambda module, args: checkpoint())
    try:
        if hold:
            _current.checkpoint()
        yield _current
    finally:
        _current.close()
        _current = None
