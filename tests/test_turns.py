"""Suite processes take turns on the cores (bench/turns.py): a process alone never waits,
a waiting one gets the slots within a slice, a killed holder frees them, and turns change no
number. The speed they buy is a benchmark (benchmarks/test_contention.py)."""
from __future__ import annotations

import subprocess
import sys
import threading
import time

import torch

from bench import turns
from bench.turns import Turns


def test_alone_a_process_never_waits(tmp_path):
    t = Turns(2, tmp_path, slots=2)
    for _ in range(1000):
        t.checkpoint()
    assert len(t._held) == 2 and t.waited < 0.1
    other = Turns(1, tmp_path, slots=2)
    assert not other._others_waiting()
    t.close()
    other.close()


def test_a_waiting_process_gets_its_turn_within_a_slice(tmp_path, monkeypatch):
    monkeypatch.setattr(turns, "SLICE", 0.05)
    holder, waiter = Turns(2, tmp_path, slots=2), Turns(2, tmp_path, slots=2)
    holder.checkpoint()
    got = threading.Event()
    held_by_waiter = []

    def compute():  # the holder computes: hands over once its slice is up and someone waits
        while not got.is_set():
            holder.checkpoint()
            time.sleep(0.001)

    def wait_for_turn():
        waiter.checkpoint()
        held_by_waiter.append(len(waiter._held))
        got.set()
        time.sleep(0.05)
        waiter.release()  # its turn done: the holder, now waiting, gets the slots back

    threads = [threading.Thread(target=compute), threading.Thread(target=wait_for_turn)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert got.is_set(), "the waiting process never got the slots"
    assert held_by_waiter == [2] and len(holder._held) == 2
    assert 0.01 < waiter.waited < 1.0
    holder.close()
    waiter.close()


def test_processes_of_one_thread_share_two_slots_without_waiting(tmp_path):
    a, b = Turns(1, tmp_path, slots=2), Turns(1, tmp_path, slots=2)
    a.checkpoint()
    b.checkpoint()
    assert len(a._held) == len(b._held) == 1 and a.waited < 0.1 and b.waited < 0.1
    a.close()
    b.close()


def test_a_killed_holder_frees_its_slots(tmp_path):
    code = ("import sys, time; from bench.turns import Turns; "
            f"t = Turns(2, {str(tmp_path)!r}, slots=2); t.checkpoint(); print('held', flush=True); "
            "time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    t = Turns(2, tmp_path, slots=2)
    assert t._others_waiting() is False  # the holder is not waiting: it holds
    proc.kill()
    proc.wait()
    t.checkpoint()
    assert len(t._held) == 2
    t.close()


def test_turns_change_no_number(tmp_path, monkeypatch):
    """The same training with and without turns (the forward pre-hook, a handover every
    checkpoint): equal weights, bit for bit."""
    monkeypatch.setenv("BENCH_TURNS_DIR", str(tmp_path))
    monkeypatch.setattr(turns, "SLICE", 0.0)

    def train() -> torch.Tensor:
        g = torch.Generator().manual_seed(0)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(),
                                        torch.nn.Linear(16, 3))
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for _ in range(20):
            x, y = torch.randn(32, 8, generator=g), torch.randint(0, 3, (32,), generator=g)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    before = train()
    calls = []
    with turns.turns(1) as t:
        real = t.checkpoint
        monkeypatch.setattr(t, "checkpoint", lambda: (calls.append(1), real()))
        during = train()
    assert turns._current is None and not t._held  # handed back when the block ends
    assert calls, "the forward pre-hook never called checkpoint()"
    assert torch.equal(before, during)


def test_turns_are_off_with_bench_turns_0(monkeypatch):
    monkeypatch.setenv("BENCH_TURNS", "0")
    with turns.turns(2) as t:
        assert t is None
        turns.checkpoint()  # a no-op
