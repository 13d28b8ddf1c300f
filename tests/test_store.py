import json

import pytest

from bench.config import resolve
from bench.store import CorruptRecord, RecordStore


def _record(seed=0):
    c = resolve("digits", "fedavg", "silos", seed)
    return c, {"run_id": c.run_id, "config": c.to_dict(), "metrics": {"selected": {"accuracy": 0.5}}}


def test_write_read_roundtrip(tmp_path):
    store = RecordStore(tmp_path)
    c, rec = _record()
    path = store.write(rec)
    assert path == store.path(c) and path.stem == c.run_id
    back = store.load(c)
    assert back["metrics"] == rec["metrics"] and "checksum" in back
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
        d["metrics"]["selected"]["accuracy"] = 0.99
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
