import json

import pytest

from helpers import make_record

from bench.config import resolve
from bench.store import CorruptRecord, RecordStore


def _record(seed=0):
    c = resolve("digits", "fedavg", "silos", seed)
    return c, make_record(c)


def test_write_read_roundtrip(tmp_path):
    store = RecordStore(tmp_path)
    c, rec = _record()
    path = store.write(rec)
    assert path == store.path(c) and path.stem == c.run_id
    back = store.load(c)
    assert back == rec
    assert "checksum" in json.loads(path.read_text())
    assert not list(path.parent.glob(".*.tmp"))  # no temporary file left behind


@pytest.mark.parametrize("damage", ["truncate", "tamper", "garbage", "rename"])
def test_damaged_record_is_reported_kept_aside_and_redone(tmp_path, damage):
    warnings = []
    store = RecordStore(tmp_path, warn=warnings.append)
    c, rec = _record()
    path = store.write(rec)
    text = path.read_text()
    if damage == "truncate":  # a write cut short
        path.write_text(text[: len(text) // 2])
    elif damage == "tamper":  # valid JSON, changed number
        d = json.loads(text)
        d["metrics"]["variants"]["model"]["selected"]["accuracy"] = 0.99
        path.write_text(json.dumps(d))
    elif damage == "garbage":
        path.write_bytes(b"\x00\xff\x00")
    else:  # a record filed under another config's name
        other, _ = _record(seed=1)
        target = store.path(other)
        path.rename(target)
        path, c = target, other
    assert store.load(c) is None  # never silently used
    assert len(warnings) == 1 and "corrupt" in warnings[0]
    kept = list(path.parent.glob("*.corrupt*"))
    assert len(kept) == 1 and kept[0].read_bytes()  # the bytes are kept for inspection
    assert not path.exists()


def test_read_rejects_incomplete(tmp_path):
    p = tmp_path / "x.json"
    p.write_text(json.dumps({"config": {}}))
    with pytest.raises(CorruptRecord, match="checksum"):
        RecordStore.read(p)


def test_all_records_skips_corrupt(tmp_path):
    warnings = []
    store = RecordStore(tmp_path, warn=warnings.append)
    store.write(_record(0)[1])
    bad = store.write(_record(1)[1])
    bad.write_text("{")
    assert len(store.all_records()) == 1 and len(warnings) == 1


def test_identity_ignores_nothing_that_changes_numbers():
    a = resolve("digits", "fedavg", "silos", 0)
    assert a.run_id == resolve("digits", "fedavg", "silos", 0).run_id
    assert a.run_id != resolve("digits", "fedavg", "silos", 1).run_id
    assert a.run_id != resolve("digits", "fedprox", "silos", 0).run_id
    # pooled methods do not depend on the split: one run for all splits
    assert resolve("digits", "centralized", "iid", 0).run_id == \
        resolve("digits", "centralized", "silos", 0).run_id


def test_records_are_readable_by_the_group_and_others(tmp_path):
    """A shared results folder on a cluster: records get a normal file's mode (not mkstemp's
    0600)."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = RecordStore(tmp_path).write(_record()[1])
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_two_processes_quarantining_one_record_do_not_crash(tmp_path):
    store = RecordStore(tmp_path, warn=lambda m: None)
    c, rec = _record()
    path = store.write(rec)
    path.write_text("{")
    store._quarantine(path, "test")  # the first process moved it aside
    store._quarantine(path, "test")  # the second finds it gone: nothing to do, no error
    assert len(list(path.parent.glob("*.corrupt*"))) == 1


def test_orphans_of_dead_processes_are_removed_live_ones_kept(tmp_path):
    import os
    import subprocess
    import sys

    from bench.datasets.files import HOST

    store = RecordStore(tmp_path)
    c, rec = _record()
    store.write(rec)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    folder = store.path(c).parent
    orphan = folder / f".{c.run_id}.json.{HOST}.{dead}.abc123.tmp"
    live = folder / f".{c.run_id}.json.{HOST}.{os.getpid()}.def456.tmp"
    orphan.write_text("half")
    live.write_text("being written")
    store.claim_path(c).write_text(f"{HOST} {dead}\n")  # a claim whose process was killed
    assert store.remove_orphans() == 2
    assert not orphan.exists() and live.exists() and not store.claim_path(c).exists()


def test_claims_are_exclusive_and_dead_ones_taken_over(tmp_path):
    import subprocess
    import sys

    from bench.datasets.files import HOST

    store = RecordStore(tmp_path)
    c, _ = _record()
    assert store.claim(c) and not store.claim(c)  # held (by this live process)
    store.release(c)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    store.claim_path(c).write_text(f"{HOST} {dead}\n")
    assert store.claim(c)  # its holder died: taken over
    store.claim_path(c).write_text("another-host 1\n")
    assert not store.claim(c)  # another host's claim counts as live
