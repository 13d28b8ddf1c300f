"""Live logs, progress lines off a terminal, `bench status`, and the time guard of `bench run`,
as a user meets them (issue 26: a run piped to a file shows progress; no accidental 40-hour
run)."""
import json
import subprocess
import sys
import time

import numpy as np
import pytest

from bench.cli import main
from bench.monitor import RunLog, latest
from bench.store import RecordStore
from helpers import TINY_FF_CLI, run_cli, tiny_overrides

bench = run_cli  # its stderr is a pipe: not a terminal, as under nohup or Slurm


def events(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_piped_run_prints_progress_lines_and_leaves_a_round_log(tmp_path):
    r = bench("run", "--methods", "fedavg", "--splits", "silos", "--seeds", "0",
              *tiny_overrides(rounds=4), "--executor", "sequential", "--progress-every", "0.2",
              "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    progress = [line for line in r.stderr.splitlines() if line.startswith("progress: ")]
    assert progress, r.stderr
    assert any("fedavg rounds" in line and "/4" in line for line in progress), progress
    log = next((tmp_path / "runs" / "digits" / "fedavg").glob("*.log.jsonl"))
    ev = events(log)
    assert [e["event"] for e in ev][:2] == ["start", "phase"]
    assert ev[-1]["event"] == "end"
    steps = [e for e in ev if e["event"] == "step"]
    assert [e["round"] for e in steps] == [1, 2, 3, 4]
    for e in steps:  # metrics, learning rate, bytes and seconds per round
        assert {"val_accuracy", "test_accuracy", "train_loss", "lr", "bytes", "seconds"} <= set(e)
    record = RecordStore.read(log.with_name(log.name.replace(".log.jsonl", ".json")))
    assert record.curves["val_accuracy"] == [e["val_accuracy"] for e in steps]
    assert ev[-1]["accuracy"] == record.metrics.selected["accuracy"]


@pytest.mark.slow
def test_one_shot_phases_and_generator_parts_are_logged(tmp_path):
    r = bench("run", "--methods", "federatedfactory", "--splits", "silos", "--seeds", "0",
              *TINY_FF_CLI, "--set", "federatedfactory.modes=server", "--workers", "2",
              "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    folder = tmp_path / "runs" / "digits" / "federatedfactory"
    run_log = next(p for p in folder.glob("*.log.jsonl") if ".part-" not in p.name)
    phases = [e["phase"] for e in events(run_log) if e["event"] == "phase"]
    assert phases[:2] == ["generator steps", "synthetic images"], phases
    assert any("classifier epochs" in p for p in phases), phases
    parts = list(folder.glob("*.part-*.log.jsonl"))
    assert len(parts) == 10  # one generator per (client, class) under 10-class silos
    assert all(events(p)[-1]["event"] == "end" for p in parts)


def test_status_reads_the_logs(tmp_path, capsys):
    folder = tmp_path / "runs" / "digits" / "fedavg"
    live = RunLog(folder / "a.log.jsonl", "digits fedavg silos seed 0", "a" * 16)
    with live.progress(10, "fedavg rounds") as bar:
        bar.update(3)
        bar.log({"round": 3, "val_accuracy": 0.5, "lr": 0.1})
        assert main(["status", "--out", str(tmp_path)]) == 0
        out = capsys.readouterr().out
        assert "running  digits fedavg silos seed 0: fedavg rounds 3/10, val acc 0.500" in out
        assert "1 running, 0 stopped, 0 failed, 0 finished" in out
    dead = RunLog(folder / "b.log.jsonl", "digits fedavg iid seed 0", "b" * 16)
    dead.event("start", label="digits fedavg iid seed 0", run_id="b" * 16, host=dead_host(),
               pid=dead_pid())
    failed = RunLog(folder / "c.log.jsonl", "digits fedavg iid seed 1", "c" * 16)
    failed.close(ValueError("out of memory"))
    live.close()
    assert main(["status", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "stopped  digits fedavg iid seed 0" in out and "process is gone" in out
    assert "failed   digits fedavg iid seed 1: ValueError: out of memory" in out
    assert "0 running, 1 stopped, 1 failed, 1 finished" in out


def dead_host():
    from bench.datasets.files import HOST
    return HOST


def dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_diverging_step_is_logged_not_raised(tmp_path):
    log = RunLog(tmp_path / "d.log.jsonl", "run", "d" * 16)
    with log.progress(2, "rounds") as bar:
        bar.update(1)
        bar.log({"round": 1, "train_loss": float("nan"), "val_accuracy": 0.1})
    step = [e for e in events(tmp_path / "d.log.jsonl") if e["event"] == "step"][0]
    assert step["train_loss"] is None and step["val_accuracy"] == 0.1


def test_a_loop_that_starts_after_the_heartbeat_with_nothing_resumed_logs_no_eta(tmp_path):
    """`resumable` moves the bar past resumed steps with update(start), update(0) when nothing
    is resumed. A phase whose set-up outlasted the heartbeat (a generator part under load, in
    CI's Ray test) then wrote a progress line with no rate to estimate from and crashed on
    round(None)."""
    log = RunLog(tmp_path / "e.log.jsonl", "run", "e" * 16, heartbeat=0.0)
    with log.progress(4, "generator steps") as bar:
        time.sleep(0.01)
        bar.update(0)
        bar.update(1)
    progress = [e for e in events(tmp_path / "e.log.jsonl") if e["event"] == "progress"]
    assert [(e["step"], e["eta_s"] is not None) for e in progress] == [(1, True)]


def test_latest_reads_the_last_attempt_and_skips_a_torn_line(tmp_path):
    path = tmp_path / "x.log.jsonl"
    first = RunLog(path, "run", "x" * 16)
    first.close(RuntimeError("killed"))
    second = RunLog(path, "run", "x" * 16)
    with second.progress(5, "rounds") as bar:
        bar.update(2)
    with open(path, "a") as f:
        f.write('{"event": "step", "ti')  # a line being written
    state = latest(path)
    assert state.state == "running" and state.phase == "rounds" and state.step == 2
    assert state.error is None


def test_tensorboard_gets_the_same_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = RunLog(tmp_path / "r.log.jsonl", "digits fedavg", "d" * 16,
                 tensorboard=str(tmp_path / "tb"))
    with log.progress(2, "fedavg rounds") as bar:
        for r, acc in ((1, 0.25), (2, 0.5)):
            bar.update(1)
            bar.log({"round": r, "val_accuracy": acc, "lr": 0.1})
    log.close()
    folder = next((tmp_path / "tb").iterdir())
    acc = EventAccumulator(str(folder))
    acc.Reload()
    values = [(e.step, e.value) for e in acc.Scalars("fedavg rounds/val_accuracy")]
    assert values == [(1, 0.25), (2, 0.5)]


# --- the guard: a selection estimated over --max-hours on this machine stops before it runs --
def write_npz(path, n=240, classes=2, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, size in (("train", n), ("val", n // 4), ("test", n // 4)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (size, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = np.arange(size) % classes
    np.savez(path, **arrays)


def test_paper_scale_on_the_cpu_stops_with_one_line(tmp_path, capsys):
    """The issue's case: a user's npz at the default (paper) scale on a laptop CPU."""
    data = tmp_path / "mydata.npz"
    write_npz(data)
    out = tmp_path / "results"
    rc = main(["run", "--datasets", f"npz:{data}", "--methods", "fedavg,federatedfactory",
               "--splits", "silos", "--device", "cpu", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("bench: error: this selection of 2 runs"), err
    assert "on this CPU (measured" in err[0] and "over the 2 h limit" in err[0]
    assert "--scale cpu" in err[0] and "--yes" in err[0] and "longest run:" in err[0]
    assert not list(out.rglob("*.json"))  # nothing ran, nothing was written


def test_the_limit_and_yes(tmp_path, capsys):
    args = ["run", "--methods", "fedavg", "--splits", "silos", "--seeds", "0",
            *tiny_overrides(rounds=1), "--executor", "sequential", "--out", str(tmp_path)]
    assert main([*args, "--max-hours", "1e-7"]) == 2
    assert "over the 1e-07 h limit" in capsys.readouterr().err
    t = time.time()
    assert main([*args, "--max-hours", "1e-7", "--yes"]) == 0
    assert list((tmp_path / "runs").rglob("*.json"))
    assert time.time() - t < 120
    # under the default limit the tiny run needs no measurement and starts at once
    assert main([*args, "--force"]) == 0


def test_tensorboard_missing_is_one_line_before_any_run(tmp_path, capsys, monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    rc = main(["run", "--methods", "fedavg", "--splits", "silos", "--seeds", "0",
               "--tensorboard", str(tmp_path / "tb"), "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "pip install tensorboard" in err[0]
    assert not (tmp_path / "runs").exists()
