"""Checkpoints inside a run (methods/checkpoints.py): real `bench run` processes killed with
SIGKILL at several points of a run, started again, end with records equal to an uninterrupted
run's (timings aside), for the round loop (FedAvg; SCAFFOLD's per-client states), a
FederatedFactory generator module and a one-shot classifier phase; checkpoints of other code
are discarded with one line, unreadable ones set aside.

A pitfall of resumable loops this guards: resuming the weights but not what the loop
accumulates besides them (the validation selection, the communication log, per-client
states, an optimiser's moments, a generator's RNG) gives a run that finishes but not the
same one. The comparisons below are bitwise (weight fingerprints, every metric and curve)."""
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench.methods.checkpoints import Checkpoint
from helpers import ROOT, TINY_FF_CLI, stored_records

pytestmark = pytest.mark.slow

FAST = ["--set", "local_epochs=1", "--set", "rounds=6"]
KINDS = {
    # kind: (bench run arguments, checkpoint phase file, kill points)
    "fedavg": (["--methods", "fedavg", *FAST], "rounds.pt", (2, 3, 5)),
    "scaffold": (["--methods", "scaffold", *FAST], "rounds.pt", (2, 4, 5)),
    "generator": (["--methods", "federatedfactory", *TINY_FF_CLI,
                   "--set", "federatedfactory.gen_images_seen=640"], "module.pt", (2, 5, 8)),
    "oneshot_classifier": (["--methods", "fedcvae", "--set", "fedcvae.vae_epochs=3",
                            "--set", "fedcvae.samples_per_class=32",
                            "--set", "fedcvae.classifier_epochs=8"],
                           "fedcvae__server.pt", (2, 4, 7)),
}


def bench_run(out: Path, args: list[str], executor: str = "sequential") -> subprocess.Popen:
    cmd = [sys.executable, "-m", "bench", "run", "--splits", "silos", "--out", str(out),
           "--executor", executor, "--workers", "1", "--threads", "1",
           "--checkpoint-every", "0", *args]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def progress(out: Path, phase_file: str) -> int:
    """How far the saved checkpoints of `phase_file` are: the largest step any of them is at
    (0: none saved yet)."""
    best = 0
    for f in out.rglob(f"*.ckpt/{phase_file}"):
        try:
            at = torch.load(f, weights_only=False)["at"]
        except Exception:  # replaced while read: the next poll sees the new one
            continue
        best = max(best, int(re.match(r"\D*(\d+)", at).group(1)))
    return best


def kill_at(out: Path, args: list[str], phase_file: str, point: int) -> None:
    """Start the run and SIGKILL it once a checkpoint of `phase_file` at `point` or later is
    saved (a few milliseconds later: wherever it then is)."""
    proc = bench_run(out, args)
    deadline = time.monotonic() + 300
    while progress(out, phase_file) < point:
        assert proc.poll() is None, f"the run ended before step {point}: {proc.stderr.read()}"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def comparable(record) -> dict:
    """Everything a record says that must not depend on a kill: all but timings, the
    environment, the time it was written, the checkpoints' own account and whether a
    generator module was trained by this process or found cached."""
    d = record.to_dict()
    for key in ("timings", "environment", "created", "checkpoints"):
        d.pop(key, None)
    for m in d["extra"].get("modules", []):
        m.pop("cache", None)
    return d


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """Each kind's record (and generator modules) from runs that were never stopped."""
    out = tmp_path_factory.mktemp("uninterrupted")
    for kind, (args, _, _) in KINDS.items():
        proc = bench_run(out / kind, args)
        assert proc.wait() == 0, proc.stderr.read()
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_a_run_killed_three_times_ends_with_the_uninterrupted_record(kind, uninterrupted,
                                                                      tmp_path):
    args, phase_file, points = KINDS[kind]
    out = tmp_path / kind
    for point in points:
        kill_at(out, args, phase_file, point)
    assert progress(out, phase_file) >= points[-1]
    start = time.monotonic()
    proc = bench_run(out, args)
    assert proc.wait() == 0, proc.stderr.read()
    resumed_in = time.monotonic() - start
    (record,) = stored_records(out)
    (reference,) = stored_records(uninterrupted / kind)
    assert comparable(record) == comparable(reference)
    if kind == "generator":  # the module resumed to the same bits: the cache entries agree
        ref = {p.name: torch.load(p) for p in (uninterrupted / kind).rglob("modules/*.pt")}
        got = {p.name: torch.load(p) for p in out.rglob("modules/*.pt")}
        assert ref.keys() == got.keys()
        for name in ref:
            assert all(torch.equal(ref[name][k], got[name][k]) for k in ref[name])
    else:  # the run's own checkpoints say where it went on from
        resumed = record.checkpoints["resumed"]
        assert resumed and int(re.match(r"\D*(\d+)", resumed[-1]["at"]).group(1)) \
            >= points[-1]
    assert not list(out.rglob("*.ckpt/*.pt")), "checkpoints outlive the record"
    assert resumed_in < 120


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


def test_a_joblib_worker_killed_like_by_the_oom_killer_is_retried_once_and_resumes(
        uninterrupted, tmp_path):
    args, phase_file, _ = KINDS["fedavg"]
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
    (reference,) = stored_records(uninterrupted / "fedavg")
    assert comparable(record) == comparable(reference)
    assert int(re.match(r"\D*(\d+)", record.checkpoints["resumed"][0]["at"]).group(1)) >= 3


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


def test_a_stale_checkpoint_is_not_resumed_by_bench_run(tmp_path):
    """A checkpoint left by other code (here: its identity edited) is discarded with one
    line, and the run computes from its beginning."""
    args, phase_file, _ = KINDS["fedavg"]
    out = tmp_path / "out"
    kill_at(out, args, phase_file, 2)
    (f,) = out.rglob(f"*.ckpt/{phase_file}")
    blob = torch.load(f, weights_only=False)
    blob["identity"]["code"] = "0" * 16
    torch.save(blob, f)
    proc = bench_run(out, args)
    assert proc.wait() == 0
    err = proc.stderr.read()
    assert re.search(r"checkpoint .*rounds\.pt was written by other code: discarded", err), err
    (record,) = stored_records(out)
    assert record.checkpoints["resumed"] == []
    shutil.rmtree(out)
