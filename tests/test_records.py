"""Typed records (bench/records.py): one layout for every method, and the migration of the
records written before it, which moves values and changes no number."""
import json

import pytest

from bench.config import resolve
from bench.methods.results import MODEL, Communication, Evaluation, Metrics
from bench.records import RECORD_SCHEMA, Record, label, migrate, parse_label
from bench.report.check import tripwire_cells
from bench.report.tables import records_frame
from bench.runner import cached_dataset
from bench.store import CorruptRecord, RecordStore
from helpers import ROOT, make_record

SCHEMA_1 = ROOT / "tests" / "data" / "schema1"  # records as the code of 2026-11-29 wrote them
SCHEMA_2 = ROOT / "tests" / "data" / "schema2"  # records as the code of 2026-12-04 wrote them


def _old_records() -> list[tuple[dict, Record]]:
    paths = sorted(SCHEMA_1.glob("runs/*/*/*.json"))
    return [(json.loads(p.read_text()), RecordStore.read(p)) for p in paths]


def test_schema_1_records_of_every_method_give_their_reference_cells_unchanged():
    """Twelve records of schema 1, one per method (FederatedFactory with its three variants),
    read through the store (checksum verified, then migrated): every tripwire cell (accuracy,
    AUROC, selected round of every variant) equals the cell the references hold for that
    run, made from the same records by the schema-1 code."""
    pairs = _old_records()
    assert {r.method for _, r in pairs} == {
        "centralized", "local_only", "fedavg", "fedprox", "scaffold", "feddyn", "fednova",
        "moon", "fedaws", "dense", "fedcvae", "federatedfactory"}
    assert {raw["schema"] for raw, _ in pairs} == {1}
    records = [r for _, r in pairs]
    labels = {"digits": cached_dataset("digits", None).y_test.numpy()}
    expected = json.loads((SCHEMA_1 / "cells.json").read_text())["cells"]

    def key(c):
        return (c["run_id"], c["method"], c["metric"])
    assert sorted(map(key, tripwire_cells(records, labels))) == sorted(map(key, expected))
    mine = {key(c): c["expected"] for c in tripwire_cells(records, labels)}
    assert all(mine[key(c)] == c["expected"] for c in expected)


def test_schema_1_metrics_and_bytes_move_unchanged():
    for raw, record in _old_records():
        old, comm = raw["metrics"], raw["communication"]
        if "variants" in old:  # FederatedFactory: its modes, the first one the headline
            assert set(record.metrics.variants) == set(old["variants"])
            for name, e in record.metrics.variants.items():
                assert (e.selected, e.final) == (old["variants"][name]["selected"],
                                                 old["variants"][name]["final"])
            assert record.metrics.selected == old["selected"]
            assert record.communication["server"].total_bytes == comm["total_bytes"]
            assert record.communication["local"].total_bytes == \
                comm["local_mode"]["total_bytes"]
            assert record.communication["local"].up_bytes_per_client == \
                comm["module_bytes_per_client"]
        else:
            assert list(record.metrics.variants) == [MODEL]
            e = record.metrics.headline
            assert (e.selected, e.final, e.diverged_at) == (
                old["selected"], old["final"], old["diverged_at"])
            c = record.communication[MODEL]
            assert c.total_bytes == comm["total_bytes"] and c.rounds == comm["rounds"]
            if "total_up_bytes" in comm:
                assert (c.up_bytes, c.down_bytes) == (comm["total_up_bytes"],
                                                      comm["total_down_bytes"])
        # nothing else is touched (provenance, environment and audit: schema 3's)
        for k in ("curves", "timings", "split"):
            assert getattr(record, k) == raw[k]
        _provenance_moved(raw, record)
        _audit_moved(raw, record)


def _provenance_moved(raw: dict, record: Record) -> None:
    """Schema 3 keeps each value of schema 2's provenance and environment once."""
    old, env = raw["provenance"], raw["environment"]
    prov = record.provenance
    assert prov.code == old["code"] and prov.libraries == {"diffusers": old["diffusers"]}
    assert prov.numerics.to_dict() == old["numerics"]
    assert prov.numerics.torch == old["torch"] == env["torch"]
    assert prov.device_type == old["device_type"]
    assert prov.numerics.threads == env["torch_threads"]
    assert record.environment == {k: v for k, v in env.items()
                                  if k not in ("torch", "torch_threads")}


def _audit_moved(raw: dict, record: Record) -> None:
    """Schema 3 moves extra.privacy / privacy_received to audit.shared / received, typed."""
    moved = {"privacy": "shared", "privacy_received": "received"}
    assert record.extra == {k: v for k, v in raw["extra"].items() if k not in moved}
    assert set(record.audit) == {moved[k] for k in moved if k in raw["extra"]}
    for key, party in moved.items():
        if key not in raw["extra"]:
            continue
        audit = record.audit[party]
        for name, value in raw["extra"][key].items():
            got = getattr(audit, name) if name in audit.__dataclass_fields__ \
                else audit.settings[name]
            assert (list(got) if isinstance(got, tuple) else got) == value, name


def test_schema_2_records_give_the_smoke_references_cells_unchanged():
    """Records of the default grid as the schema-2 code wrote them (2026-12-04), one per
    method, read through the store and migrated: every tripwire cell equals the smoke
    reference's, and provenance's values move, none computed."""
    paths = sorted(SCHEMA_2.glob("runs/*/*/*.json"))
    pairs = [(json.loads(p.read_text()), RecordStore.read(p)) for p in paths]
    assert {raw["schema"] for raw, _ in pairs} == {2} and len(pairs) == 7
    for raw, record in pairs:
        _provenance_moved(raw, record)
        _audit_moved(raw, record)
        for k in ("metrics", "curves", "timings", "split", "communication"):
            assert record.to_dict()[k] == raw[k], k
    records = [r for _, r in pairs]
    labels = {"digits": cached_dataset("digits", None).y_test.numpy()}
    smoke = json.loads((ROOT / "bench" / "references" / "smoke.json").read_text())["cells"]
    # two of the fixture's runs are Dirichlet 1.0 ones, which left the default grid (and smoke)
    # with their split
    ids = {r.run_id for r in records} & {c["run_id"] for c in smoke}

    def key(c):
        return (c["run_id"], c["method"], c["metric"])
    expected = {key(c): c["expected"] for c in smoke if c["run_id"] in ids}
    mine = {key(c): c["expected"] for c in tripwire_cells(records, labels) if c["run_id"] in ids}
    assert mine == expected and len(ids) == 5 and len(mine) >= 5 * 3


def test_schema_1_tables_equal_the_current_layouts(tmp_path):
    """A schema-1 record written back in the current schema and read again: the same value, the same
    table rows."""
    store = RecordStore(tmp_path)
    records = [r for _, r in _old_records()]
    for r in records:
        store.write(r)
    again = store.all_records()
    assert sorted(again, key=lambda r: r.run_id) == sorted(records, key=lambda r: r.run_id)
    assert {json.loads(p.read_text())["schema"] for p in tmp_path.rglob("runs/*/*/*.json")} \
        == {RECORD_SCHEMA}
    a, b = records_frame(records), records_frame(again)
    assert a.sort_values(["run_id", "method"]).reset_index(drop=True).equals(
        b.sort_values(["run_id", "method"]).reset_index(drop=True))


def test_a_schema_this_version_does_not_know_is_set_aside_with_the_reason(tmp_path):
    warnings = []
    store = RecordStore(tmp_path, warn=warnings.append)
    c = resolve("digits", "fedavg", "silos", 0)
    path = store.write(make_record(c))
    raw = json.loads(path.read_text())
    body = {**{k: v for k, v in raw.items() if k != "checksum"}, "schema": 99}
    from bench.store import _checksum

    path.write_text(json.dumps({**body, "checksum": _checksum(body)}))
    with pytest.raises(CorruptRecord, match="schema 99"):
        RecordStore.read(path)
    assert store.load(c) is None and "schema 99" in warnings[0]
    with pytest.raises(ValueError, match="schema 99"):
        migrate(body)


def test_labels_are_spelled_and_read_in_one_place():
    assert label("fedavg") == "fedavg" and label("federatedfactory", "local") == \
        "federatedfactory[local]"
    for text, parsed in (("fedavg", ("fedavg", MODEL)),
                         ("federatedfactory[server]", ("federatedfactory", "server")),
                         ("dense (no L_BN)", ("dense", MODEL)),
                         ("federatedfactory[local] (lr=0.1)", ("federatedfactory", "local"))):
        assert parse_label(text) == parsed
        assert parse_label(label(*parsed)) == parsed


def test_every_variant_has_its_communication_and_a_run_has_one_model_at_least():
    c = resolve("digits", "fedavg", "silos", 0)
    e = Evaluation({"accuracy": 0.5}, None)
    with pytest.raises(ValueError, match="name other variants"):
        make_record(c, Metrics({"server": e, "local": e}),
                    communication={"server": Communication(1, 1, 1)})
    with pytest.raises(ValueError, match="at least one variant"):
        Metrics({})
    assert Communication(1, 3, 4).to_dict()["total_bytes"] == 7
