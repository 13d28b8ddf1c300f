"""Tables, figures and checks on small synthetic records (no training)."""
import json

import numpy as np
import pytest
from PIL import Image

from bench.cli import main
from bench.config import resolve
from bench.report.check import check, load_reference, make_reference
from bench.store import RecordStore

ACC = {"centralized": 0.99, "fedavg": {"iid": 0.98, "dirichlet:0.1": 0.9, "dirichlet:1.0": 0.96,
                                       "silos": 0.3},
       "local_only": {"iid": 0.9, "dirichlet:0.1": 0.4, "dirichlet:1.0": 0.7, "silos": 0.1}}


def _metrics(acc):
    m = {"accuracy": acc, "balanced_accuracy": acc, "auroc": min(1.0, acc + 0.05),
         "f1_macro": acc, "loss": 1 - acc, "per_class_accuracy": [acc] * 10, "round": 3,
         "val": {"accuracy": acc, "loss": 1 - acc, "auroc": acc, "balanced_accuracy": acc,
                 "f1_macro": acc}}
    return {"selected": m, "final": m}


def _record(method, split, seed, acc, variants=None):
    c = resolve("digits", method, split, seed)
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 50, size=(10, 10)).tolist()
    curves = {"round": [1, 2, 3], "bytes_cumulative": [1e6, 2e6, 3e6]}
    for part in ("val", "test"):
        for k in ("accuracy", "auroc", "balanced_accuracy", "f1_macro", "loss"):
            curves[f"{part}_{k}"] = [acc / 3, acc / 2, acc]
    metrics = _metrics(acc)
    comm = {"rounds": 3, "total_bytes": 3e6}
    if variants:
        metrics = {**_metrics(variants["server"]),
                   "variants": {v: _metrics(a) for v, a in variants.items()}}
        curves = {}
        comm = {"rounds": 1, "total_bytes": 5e5, "local_mode": {"total_bytes": 9e5}}
    return c, {"run_id": c.run_id, "config": c.to_dict(), "metrics": metrics, "curves": curves,
               "communication": comm, "split": {"client_class_counts": counts},
               "dataset_info": {"class_names": [str(i) for i in range(10)], "n_classes": 10}}


def _acc(method, split, seed):
    a = ACC[method] if isinstance(ACC[method], float) else ACC[method][split]
    return a + 0.01 * (seed - 1)


@pytest.fixture
def store(tmp_path):
    s = RecordStore(tmp_path / "results")
    for seed in range(3):
        for method in ACC:
            for split in ("iid", "dirichlet:0.1", "dirichlet:1.0", "silos"):
                c, rec = _record(method, split, seed, _acc(method, split, seed))
                if s.path(c).exists():
                    continue
                s.write(rec)
        c, rec = _record("federatedfactory", "silos", seed, 0.0,
                         variants={"server": 0.95 + 0.01 * seed, "local": 0.97})
        grid = (np.random.default_rng(0).random((100, 134)) * 255).astype(np.uint8)
        if seed == 0:
            rec["unlearning"] = {"forgotten_clients": [3], "forgotten_classes": [3], "modes": {
                "server": {"accuracy_before": 0.95, "accuracy_after": 0.86,
                           "per_class_before": [0.95] * 10,
                           "per_class_after": [0.95] * 3 + [0.0] + [0.95] * 6}}}
        s.write(rec, {"samples": grid})
    return s


def test_report_writes_tables_and_figures(store, capsys):
    assert main(["report", "--out", str(store.root)]) == 0
    out = capsys.readouterr().out
    assert "federatedfactory[server]" in out and "(n=3)" in out
    folder = store.root / "report"
    tex = (folder / "tables.tex").read_text()
    assert r"\toprule" in tex and r"\textbf{" in tex and r"\bottomrule" in tex
    figures = folder / "figures"
    names = {p.name for p in figures.glob("*.png")}
    for expected in ("digits_heterogeneity_accuracy.png", "digits_silos_accuracy.png",
                     "digits_silos_convergence.png", "digits_silos_labels.png",
                     "digits_silos_s0_samples.png"):
        assert expected in names, names
    assert any("unlearning" in n for n in names)
    for png in figures.glob("*.png"):
        w, h = Image.open(png).size
        assert w >= 400 and h >= 300, (png.name, w, h)
        assert np.asarray(Image.open(png).convert("L")).std() > 5  # not a blank image
        assert png.with_suffix(".pdf").stat().st_size > 1000


def test_table_cells_are_means_over_seeds(store, capsys):
    assert main(["table", "--out", str(store.root)]) == 0
    out = capsys.readouterr().out
    # fedavg silos: 0.29, 0.30, 0.31 -> 30.0 +- 1.0
    assert "30.0 ± 1.0 (n=3)" in out


def test_check_passes_on_its_own_reference_and_fails_on_a_regression(store, tmp_path, capsys):
    ref = make_reference(store.all_records(), "t", "", {"digits": 359}, claims=[
        {"claim": "fedavg far below centralized under silos", "op": "<", "margin": 20,
         "left": {"dataset": "digits", "split": "silos", "method": "fedavg", "metric": "accuracy"},
         "right": {"dataset": "digits", "split": "silos", "method": "centralized",
                   "metric": "accuracy"}}])
    path = tmp_path / "ref.json"
    path.write_text(json.dumps(ref))
    cell = next(c for c in ref["cells"] if c["method"] == "fedavg" and c["split"] == "silos"
                and c["metric"] == "accuracy")
    assert cell["expected"] == pytest.approx(30.0) and cell["tolerance"] == pytest.approx(3.0)
    assert main(["check", "--reference", str(path), "--out", str(store.root)]) == 0
    assert "PASSED" in capsys.readouterr().err

    # plant a regression: one seed of fedavg under silos drops to 10 %
    c, rec = _record("fedavg", "silos", 2, 0.10)
    store.write(rec)
    assert main(["check", "--reference", str(path), "--out", str(store.root)]) == 1
    cap = capsys.readouterr()
    assert "REGRESSED" in cap.out and "FAILED" in cap.err


def test_claims_and_missing_cells(store):
    records = store.all_records()
    ref = {"require_all": True, "cells": [
        {"dataset": "digits", "split": "silos", "method": "scaffold", "metric": "accuracy",
         "expected": 50, "tolerance": 1}], "claims": [
        {"claim": "local-only far above centralized", "op": ">", "margin": 1,
         "left": {"dataset": "digits", "split": "silos", "method": "local_only",
                  "metric": "accuracy"},
         "right": {"dataset": "digits", "split": "silos", "method": "centralized",
                   "metric": "accuracy"}}]}
    table, passed = check(records, ref)
    assert not passed
    assert list(table["verdict"]) == ["MISSING", "CLAIM FAILS"]
    ref["require_all"] = False
    ref["claims"] = []
    table, passed = check(records, ref)
    assert passed and list(table["verdict"]) == ["not run"]


def test_paper_reference_is_well_formed():
    ref = load_reference("paper")
    assert len(ref["cells"]) == 49 and not ref["require_all"]
    headline = [c for c in ref["cells"] if c["dataset"] == "cifar10" and c["split"] == "silos"
                and c["metric"] == "accuracy"]
    assert {c["method"]: c["expected"] for c in headline}["fedavg"] == 11.36


def test_check_bad_reference_is_a_clear_error(tmp_path, capsys):
    assert main(["check", "--reference", "nope", "--out", str(tmp_path)]) == 2
    assert "valid choices" in capsys.readouterr().err


def test_runs_with_other_settings_never_share_a_cell(store, capsys):
    from bench.config import parse_overrides

    c = resolve("digits", "fedavg", "silos", 0, parse_overrides(["lr=0.1"]))
    _, rec = _record("fedavg", "silos", 0, 0.5)
    rec["config"], rec["run_id"] = c.to_dict(), c.run_id
    store.write(rec)
    assert main(["table", "--out", str(store.root)]) == 0
    out = capsys.readouterr().out
    assert "| fedavg (lr=0.01) |" in out and "| fedavg (lr=0.1) |" in out
    assert "50.0 (n=1)" in out
