"""Checkpoints inside a run (methods/checkpoints.py) with real processes: a `bench run` process
killed with SIGKILL in the middle of a run, started again, ends with the record of an
uninterrupted run (timings aside), for the two kinds of loop a kill meets most: the round loop
(FedAvg) and a FederatedFactory generator module (then its server classifier and local
mode). Every other checkpointing loop is interrupted and resumed in-process, bit for bit, in
tests/test_resume.py (seconds each, no process to start). Also here: a joblib worker killed
like by the OOM killer is retried once and resumes; checkpoints of other code are discarded
with one line, unreadable ones set aside.

A pitfall of resumable loops this guards: resuming the weights but not what the loop
accumulates besides them (the validation selection, the communication log, per-client
states, an optimiser's moments, a generator's RNG) gives a run that finishes but not the
same one. The comparisons below are bitwise (weight fingerprints, every metric and curve)."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench.methods.checkpoints import Checkpoint
from bench.store import LOG_SUFFIX
from helpers import ROOT, TINY_FF_CLI, comparable, stored_records

pytestmark = pytest.mark.slow

FAST = ["--set", "local_epochs=1", "--set", "rounds=6"]
# kind: (bench run arguments, the kills: (checkpoint file of a phase, how far it must be))
KINDS = {
    "fedavg": (["--methods", "fedavg", *FAST], [("rounds.pt", 3)]),
    # a generator module (6 steps each), then the server classifier and the local mode
    "federatedfactory": (["--methods", "federatedfactory", *TINY_FF_CLI,
                          "--set", "federatedfactory.gen_images_seen=384",
                          "--set", "federatedfactory.classifier_epochs=4",
                          "--set", "federatedfactory.modes=server,local"],
                         [("module.pt", 2)]),
}


def bench_run(out: Path, args: list[str], executor: str = "sequential") -> subprocess.Popen:
    cmd = [sys.executable, "-m", "bench", "run", "--splits", "silos", "--out", str(out),
           "--executor", executor, "--workers", "1", "--threads", "1",
           "--checkpoint-every", "0", *args]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def progress(out: Path, phase_file: str) -> int:
    """How far the saved checkpoints of `phase_file` are: the largest first number of any of
    their "at" (0: none saved yet)."""
    best = 0
    for f in out.rglob(f"*.ckpt/{phase_file}"):
        try:
            at = torch.load(f, weights_only=False)["at"]
        except Exception:  # replaced while read: the next poll sees the new one
            continue
        best = max(best, first_number(at))
    return best


def first_number(at: str) -> int:
    return int(re.match(r"\D*(\d+)", at).group(1))


def kill_at(out: Path, args: list[str], phase_file: str, point: int) -> None:
    """Start the run and SIGKILL it once a checkpoint of `phase_file` at `point` or later is
    saved (a few milliseconds later: wherever it then is)."""
    proc = bench_run(out, args)
    deadline = time.monotonic() + 300
    while progress(out, phase_file) < point:
        assert proc.poll() is None, f"the run ended before {phase_file} {point}: " \
                                    f"{proc.stderr.read()}"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def complete(out: Path, args: list[str]) -> tuple[object, float]:
    """Run to the end; the record and the seconds it took."""
    start = time.monotonic()
    proc = bench_run(out, args)
    assert proc.wait() == 0, proc.stderr.read()
    (record,) = stored_records(out)
    return record, time.monotonic() - start


@pytest.mark.parametrize("kind", KINDS)
def test_a_run_killed_at_several_points_ends_with_the_uninterrupted_record(kind, tmp_path):
    args, kills = KINDS[kind]
    reference, _ = complete(tmp_path / "uninterrupted", args)
    out = tmp_path / "killed"
    for phase_file, point in kills:
        kill_at(out, args, phase_file, point)
    record, _ = complete(out, args)
    assert comparable(record) == comparable(reference)
    # the last kill came after the last checkpoint of its phase; the run went on from there
    last_file, last_point = kills[-1]
    phase = last_file[:-3].replace("__", "/")
    resumed = [r for r in record.checkpoints["resumed"] if r["phase"] == phase]
    assert resumed and first_number(resumed[-1]["at"]) >= last_point, record.checkpoints
    if kind == "federatedfactory":  # the generators resumed to the same bits: equal cache
        ref = {p.name: torch.load(p) for p in (tmp_path / "uninterrupted").rglob("modules/*.pt")}
        got = {p.name: torch.load(p) for p in out.rglob("modules/*.pt")}
        assert ref.keys() == got.keys()
        for name in ref:
            assert all(torch.equal(ref[name][k], got[name][k]) for k in ref[name])
    assert not list(out.rglob("*.ckpt/*.pt")), "checkpoints outlive the record"
    if phase != "module":  # (a generator's steps are not evaluated: its resume is above)
        # resumed work is not recomputed: the last attempt evaluated fewer rounds / epochs
        assert evaluated_steps(out)[-1] < evaluated_steps(tmp_path / "uninterrupted")[-1]


def evaluated_steps(out: Path) -> list[int]:
    """Per attempt of the run (its live log, bench/monitor.py), the rounds or epochs it
    evaluated."""
    (log,) = out.rglob(f"runs/*/*/*{LOG_SUFFIX}")
    counts = []
    for line in log.read_text().splitlines():
        try:
            event = json.loads(line)["event"]
        except json.JSONDecodeError:  # the line a killed attempt was writing
            continue
        if event == "start":
            counts.append(0)
        elif event == "step":
            counts[-1] += 1
    return counts


def loky_workers(pid: int) -> list[int]:
    """The joblib (loky) worker processes among the descendants of `pid`."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])

    def descends(p):
        while p in parents and p != pid:
            p = parents[p]
        return p == pid

    workers = []
    for p in parents:
        try:
            cmdline = Path(f"/proc/{p}/cmdline").read_bytes()
        except OSError:
            continue
        if p != pid and descends(p) and b"popen_loky" in cmdline:
            workers.append(p)
    return workers


def test_a_joblib_worker_killed_like_by_the_oom_killer_is_retried_once_and_resumes(tmp_path):
    args, ((phase_file, _), *_) = KINDS["fedavg"]
    reference, _ = complete(tmp_path / "uninterrupted", args)
    out = tmp_path / "out"
    proc = bench_run(out, args, executor="joblib")
    deadline = time.monotonic() + 300
    while progress(out, phase_file) < 3:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    (worker,) = loky_workers(proc.pid)
    os.kill(worker, signal.SIGKILL)
    assert proc.wait() == 0
    assert "killed while running digits fedavg silos" in proc.stderr.read()
    (record,) = stored_records(out)
    assert comparable(record) == comparable(reference)
    assert first_number(record.checkpoints["resumed"][0]["at"]) >= 3


def test_checkpoints_of_other_code_are_discarded_and_unreadable_ones_set_aside(tmp_path):
    said = []
    mine = Checkpoint(tmp_path / "run.ckpt", {"run": "a", "code": "new"}, every=0,
                      warn=said.append)
    other = Checkpoint(tmp_path / "run.ckpt", {"run": "a", "code": "old"}, every=0)
    other.save("rounds", "round 3 of 6", {"round": 3})
    assert mine.resume("rounds") is None
    assert len(said) == 1 and "other code" in said[0] and "discarded" in said[0]
    assert not (tmp_path / "run.ckpt" / "rounds.pt").exists()
    mine.save("rounds", "round 4 of 6", {"round": 4})
    assert Checkpoint(tmp_path / "run.ckpt", mine.identity, every=0).resume("rounds") == \
        {"round": 4}
    (tmp_path / "run.ckpt" / "rounds.pt").write_bytes(b"half a file")
    assert mine.resume("rounds") is None
    assert "unreadable" in said[1] and (tmp_path / "run.ckpt" / "rounds.pt.corrupt").exists()
    off = Checkpoint.off()
    off.save("rounds", "round 1 of 6", {"round": 1})
    assert off.resume("rounds") is None and not off.due()


def test_a_stale_checkpoint_is_not_resumed_by_bench_run(tmp_path, monkeypatch, capsys):
    """A checkpoint left by other code (here: its identity edited) is discarded with one
    line, and the run computes from its beginning (in-process: the first attempt is stopped by
    an exception right after its second save)."""
    from bench.cli import main

    args, ((phase_file, _), *_) = KINDS["fedavg"]
    command = ["run", "--splits", "silos", "--out", str(tmp_path), "--executor", "sequential",
               "--threads", "1", "--checkpoint-every", "0", *args]
    save, saves = Checkpoint.save, []

    def stopping(self, phase, at, state):
        save(self, phase, at, state)
        saves.append(at)
        if len(saves) == 2:
            raise KeyboardInterrupt  # what a kill leaves: the checkpoint, no record
    with monkeypatch.context() as m:
        m.setattr(Checkpoint, "save", stopping)
        assert main(command) == 130
    (f,) = tmp_path.rglob(f"*.ckpt/{phase_file}")
    blob = torch.load(f, weights_only=False)
    blob["identity"]["code"] = "0" * 16
    torch.save(blob, f)
    capsys.readouterr()
    assert main(command) == 0
    err = capsys.readouterr().err
    assert re.search(r"checkpoint .*rounds\.pt was written by other code: discarded", err), err
    (record,) = stored_records(tmp_path)
    assert record.checkpoints["resumed"] == []


def test_the_one_loop_helper_resumes_after_the_last_saved_step_twice(tmp_path):
    """`resumable`: the state saved after each step (every=0) is loaded before the next
    attempt, which continues after the saved step; a body that breaks saves nothing for its
    step. Two interruptions, then the end: every step done once."""
    from bench.methods.checkpoints import resumable

    done, state = [], {"sum": 0}

    def attempt(stop_at):
        checkpoint = Checkpoint(tmp_path / "ckpt", {"run": "x"}, every=0)

        def load(saved):
            state["sum"] = saved["sum"]
        for step in resumable(checkpoint, "loop", 6, lambda: dict(state), load):
            if step == stop_at:
                break  # as a kill inside the step: its work is lost, not saved
            done.append(step)
            state["sum"] += step
        return checkpoint

    attempt(2)
    state["sum"] = -100  # what a fresh process would hold: the checkpoint restores it
    attempt(4)
    state["sum"] = -100
    last = attempt(None)
    assert done == [0, 1, 2, 3, 4, 5] and state["sum"] == 15
    assert [r["at"] for r in last.resumed] == ["4 of 6"]
    off = [s for s in resumable(Checkpoint.off(), "loop", 3, dict, lambda s: None)]
    assert off == [0, 1, 2]
