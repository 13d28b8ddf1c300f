"""Tables, figures and checks on small synthetic records (no training)."""
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.cli import main
from bench.config import parse_overrides, resolve
from bench.provenance import provenance
from bench.report.check import (CROSS, EXACT, auroc_step, check_claims, check_tripwire,
                                cross_environment, load_reference, passed, reference_diff,
                                selected_round_is_validation_best, tripwire_cells)
from bench.methods import numerics
from bench.methods.results import MODEL, Communication, Evaluation, Metrics
from bench.store import RecordStore
from helpers import make_record

ACC = {"centralized": 0.99, "fedavg": {"iid": 0.98, "dirichlet:0.1": 0.9, "dirichlet:1.0": 0.96,
                                       "silos": 0.3},
       "local_only": {"iid": 0.9, "dirichlet:0.1": 0.4, "dirichlet:1.0": 0.7, "silos": 0.1}}


def _evaluation(acc):
    m = {"accuracy": acc, "balanced_accuracy": acc, "auroc": min(1.0, acc + 0.05),
         "f1_macro": acc, "loss": 1 - acc, "per_class_accuracy": [acc] * 10, "round": 3,
         "val": {"accuracy": acc, "loss": 1 - acc, "auroc": acc, "balanced_accuracy": acc,
                 "f1_macro": acc}}
    return Evaluation(m, m)


def _record(method, split, seed, acc, variants=None):
    c = resolve("digits", method, split, seed)
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 50, size=(10, 10)).tolist()
    curves = {"round": [1, 2, 3], "bytes_cumulative": [1e6, 2e6, 3e6]}
    for part in ("val", "test"):
        for k in ("accuracy", "auroc", "balanced_accuracy", "f1_macro", "loss"):
            curves[f"{part}_{k}"] = [acc / 3, acc / 2, acc]
    metrics = Metrics.single(_evaluation(acc))
    comm = {MODEL: Communication(3, 2_000_000, 1_000_000)}
    if variants:
        metrics = Metrics({v: _evaluation(a) for v, a in variants.items()})
        curves = {}
        comm = {v: Communication(1, 400_000, 100_000 if v == "server" else 500_000)
                for v in variants}

    return c, make_record(c, metrics, curves=curves, communication=comm,
                          split={"client_class_counts": counts},
                          provenance=provenance(method, c.dataset, numerics.current("cpu")))


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
            rec = rec.replace(unlearning={"forgotten_clients": [3], "forgotten_classes": [3], "modes": {
                "server": {"accuracy_before": 0.95, "accuracy_after": 0.86,
                           "per_class_before": [0.95] * 10,
                           "per_class_after": [0.95] * 3 + [0.0] + [0.95] * 6}}})
        s.write(rec, {"samples": grid})
    return s


@pytest.mark.slow
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
                     "digits_silos_s0_federatedfactory_samples.png"):
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


TEST_LABELS = {"digits": np.repeat(np.arange(10), 36)}  # 360 test images, 36 per class


def test_tripwire_passes_on_its_own_runs_and_fails_on_a_changed_one(store, tmp_path, capsys):
    records = store.all_records()
    ref = {"name": "t", "layer": "tripwire", "grid": "default",
           "cells": tripwire_cells(records, TEST_LABELS)}
    cell = next(c for c in ref["cells"] if c["method"] == "fedavg" and c["split"] == "silos"
                and c["seed"] == 1 and c["metric"] == "accuracy")
    assert cell["expected"] == pytest.approx(30.0) and cell["tolerance"] == pytest.approx(100 / 360)
    path = tmp_path / "ref.json"
    path.write_text(json.dumps(ref))
    assert main(["check", "--reference", str(path), "--out", str(store.root)]) == 0
    assert "PASSED" in capsys.readouterr().err

    # one seed of fedavg under silos loses two test images: the tripwire notices
    c, rec = _record("fedavg", "silos", 1, 0.30 - 2 / 360)
    store.write(rec)
    assert main(["check", "--reference", str(path), "--out", str(store.root)]) == 1
    cap = capsys.readouterr()
    assert "REGRESSED" in cap.out and "FAILED" in cap.err
    assert "REGRESSED: digits fedavg silos seed 1 accuracy: expected 30.00" in cap.err
    # one test image is within the tolerance
    c, rec = _record("fedavg", "silos", 1, 0.30 - 1 / 360)
    store.write(rec)
    assert main(["check", "--reference", str(path), "--out", str(store.root)]) == 0


def test_tripwire_cells_name_their_runs_missing_and_stale(store):
    records = store.all_records()
    ref = {"layer": "tripwire", "cells": tripwire_cells(records[:1], TEST_LABELS)}
    load = {r.run_id: r for r in records}
    table = check_tripwire(ref, lambda d, m, run_id: load.get(run_id))
    assert passed(table)
    table = check_tripwire(ref, lambda d, m, run_id: None)
    assert set(table["verdict"]) == {"MISSING"}
    old = records[0].replace(provenance=dataclasses.replace(records[0].provenance, code="0" * 16))
    table = check_tripwire(ref, lambda d, m, run_id: old)
    assert set(table["verdict"]) == {"STALE"} and not passed(table)


def test_auroc_step_is_the_most_one_image_can_move_it():
    """Two classes, 3 positives and 1 negative: moving the negative past all positives moves
    the AUROC by 1 (= 1 / n_neg); moving one positive, by 1/3."""
    assert auroc_step(np.array([1, 1, 1, 0]), 2) == pytest.approx(100.0)
    # ten balanced classes of 36: (1/10) (1/36 + 9/324) = 1/180
    assert auroc_step(TEST_LABELS["digits"], 10) == pytest.approx(100 / 180)
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 60)
    p = rng.dirichlet(np.ones(3), 60)
    step = auroc_step(y, 3)
    for i in range(60):  # whatever one image's scores become, the change stays within a step
        q = p.copy()
        q[i] = rng.dirichlet(np.ones(3))
        moved = 100 * abs(roc_auc_score(y, q, multi_class="ovr")
                          - roc_auc_score(y, p, multi_class="ovr"))
        assert moved <= step + 1e-9


def test_claims_need_enough_seeds_and_compare_with_constants(store):
    records = store.all_records()
    silos = {"dataset": "digits", "split": "silos", "metric": "accuracy"}
    claims = [{"claim": "fedavg far below centralized", "op": "<", "margin": 20,
               "left": {**silos, "method": "fedavg"}, "right": {**silos, "method": "centralized"}},
              {"claim": "local-only at chance", "op": "~", "margin": 1,
               "left": {**silos, "method": "local_only"}, "right": {"value": 10.0}},
              {"claim": "local-only far above centralized", "op": ">", "margin": 1,
               "left": {**silos, "method": "local_only"}, "right": {**silos, "method": "centralized"}},
              {"claim": "scaffold exists", "op": ">", "margin": 0,
               "left": {**silos, "method": "scaffold"}, "right": {"value": 0}}]
    table = check_claims(claims, records, 3, True)
    assert list(table["verdict"]) == ["ok", "ok", "CLAIM FAILS", "MISSING"]
    table = check_claims(claims[:1], records, 4, True)
    assert list(table["verdict"]) == ["TOO FEW SEEDS"]


def test_reference_diff_says_what_moved():
    old = {"cells": [{"dataset": "d", "split": "s", "method": "m", "seed": 0, "metric": "accuracy",
                      "run_id": "a", "expected": 50.0}]}
    new = {"cells": [{**old["cells"][0], "expected": 52.5},
                     {**old["cells"][0], "metric": "auroc", "expected": 90.0}]}
    assert reference_diff(old, new) == ["~ d m s seed 0 accuracy: 50.00 -> 52.50 (+2.50)",
                                        "+ d m s seed 0 auroc: 90.00"]


def test_committed_references_are_well_formed():
    for name in ("smoke", "sensitivity", "science", "pneumonia"):
        ref = load_reference(name)
        assert ref["layer"] in ("tripwire", "science")
        if ref["layer"] == "tripwire":
            assert ref["cells"] and ref["made_with"]["numerics"]["torch"]
            assert ref["made_with"]["numerics"]["pins"] == "avx2+mkl-cnr"
            assert {c["metric"] for c in ref["cells"]} == {"accuracy", "auroc", "round"}
            tolerance = ref["cross_environment"]["tolerance"]["digits" if name != "pneumonia"
                                                              else "pneumoniamnist"]
            assert set(tolerance) == {"accuracy", "auroc"}
        else:
            assert ref["claims"] and ref["min_seeds"] >= 3
    smoke = load_reference("smoke")
    assert {c["dataset"] for c in smoke["cells"]} == {"digits"}  # users have no other data


def test_paper_reference_is_well_formed():
    ref = load_reference("paper")
    paper = [c for c in ref["cells"] if "source" not in c]
    niid = [c for c in ref["cells"] if c.get("source", "").startswith("NIID-Bench")]
    assert len(paper) == 49 and len(niid) == 8 and ref["layer"] == "published"
    assert {(c["dataset"], c["method"]): c["expected"] for c in niid}[("mnist", "fednova")] == 52.6
    headline = [c for c in paper if c["dataset"] == "cifar10" and c["split"] == "silos"
                and c["metric"] == "accuracy"]
    assert {c["method"]: c["expected"] for c in headline}["fedavg"] == 11.36


def test_check_bad_reference_is_a_clear_error(tmp_path, capsys):
    assert main(["check", "--reference", "nope", "--out", str(tmp_path)]) == 2
    assert "valid choices" in capsys.readouterr().err


def test_runs_with_other_settings_never_share_a_cell(store, capsys):
    from bench.config import parse_overrides

    c = resolve("digits", "fedavg", "silos", 0, parse_overrides(["lr=0.1"]))
    _, rec = _record("fedavg", "silos", 0, 0.5)
    store.write(rec.replace(config=c, run_id=c.run_id))
    assert main(["table", "--out", str(store.root)]) == 0
    out = capsys.readouterr().out
    assert "| fedavg (lr=0.01) |" in out and "| fedavg (lr=0.1) |" in out
    assert "50.0 (n=1)" in out


def test_generator_sweep_figure_plots_each_swept_setting(tmp_path):
    """`bench report`'s generator figure: one panel per setting with >= 3 values among the
    stored FederatedFactory runs, the other setting held at its common value."""
    from bench.report.figures import sweep as generator_sweep

    records = []
    for seed in (0, 1):
        for key, values in (("gen_images_seen", (1600, 3200, 12800)), ("sampler_steps", (3, 7))):
            for v in values:
                c = resolve("digits", "federatedfactory", "silos", seed,
                            parse_overrides([f"federatedfactory.{key}={v}"]))
                _, r = _record("federatedfactory", "silos", seed, 0.0,
                               variants={"server": 0.9, "local": 0.95})
                records.append(r.replace(config=c, run_id=c.run_id))
    paths = generator_sweep(records, "digits", "silos", tmp_path / "sweep")
    assert [p.suffix for p in paths] == [".png", ".pdf"] and all(p.exists() for p in paths)
    # sampler steps 3, 7 and the default 13 of the length runs: three values, two panels
    assert generator_sweep(records[:3], "digits", "silos", tmp_path / "one") != []
    assert generator_sweep(records[:2], "digits", "silos", tmp_path / "none") == []
    # a run whose classifier diverged before any finite epoch (selected None) is left out
    diverged = {**records[0].metrics.variants, "server": Evaluation(None, None, 1)}
    records[0] = records[0].replace(metrics=Metrics(diverged))
    assert generator_sweep(records, "digits", "silos", tmp_path / "diverged") != []


def _with_numerics(record, **changes):
    prov = record.provenance
    return record.replace(provenance=dataclasses.replace(
        prov, numerics=dataclasses.replace(prov.numerics, **changes)))


def _reference(records: list, cross: dict | None = None) -> dict:
    ref = {"name": "t", "layer": "tripwire", "cells": tripwire_cells(records, TEST_LABELS),
           "made_with": {"numerics": records[0].provenance.numerics.to_dict()}}
    return {**ref, "cross_environment": {"tolerance": {"digits": cross}}} if cross else ref


def test_same_numerics_are_judged_exactly_other_numerics_by_the_measured_spread():
    """Three test images down: the exact rule (one image) fails it; on a machine with other
    numerics the cross-environment tolerance (here 2 points, about 7 images) absorbs it, and
    the environment is named in one line."""
    c, rec = _record("fedavg", "silos", 0, 0.30)
    ref = _reference([rec], cross={"accuracy": 2.0, "auroc": 1.0})
    _, moved = _record("fedavg", "silos", 0, 0.30 - 3 / 360)
    table = check_tripwire(ref, lambda *a: moved)
    assert set(table["rule"]) == {EXACT} and table.attrs["environment"] is None
    assert not passed(table)
    elsewhere = _with_numerics(moved, threads=7, cpu_caches="L1d 48K, L2 2048K")
    table = check_tripwire(ref, lambda *a: elsewhere)
    assert set(table["rule"]) == {CROSS} and passed(table)
    line = table.attrs["environment"]
    assert "threads" in line and "-> 7" in line and "L2 2048K" in line and "\n" not in line
    assert "accuracy ±2.00" in line
    # beyond the spread it still fails
    _, far = _record("fedavg", "silos", 0, 0.30 - 8 / 360)
    table = check_tripwire(ref, lambda *a: _with_numerics(far, threads=7))
    assert not passed(table) and "REGRESSED" in set(table["verdict"])


def test_selected_round_must_be_the_best_validation_round_under_either_rule():
    """The invariant that replaces the exact round on other machines: the selected round has
    the best validation accuracy (ties: lowest validation loss, then the earliest round), and
    its test numbers are that round's."""
    c, rec = _record("fedavg", "silos", 0, 0.30)
    assert selected_round_is_validation_best(rec, MODEL)
    curves = {**rec.curves, "val_accuracy": [0.1, 0.3, 0.3], "val_loss": [2.0, 0.5, 0.5]}
    tied = rec.replace(curves=curves)
    assert not selected_round_is_validation_best(tied, MODEL)  # the tie goes to round 2
    test_chosen = rec.replace(curves={**rec.curves, "val_accuracy": [0.1, 0.31, 0.3]})
    assert not selected_round_is_validation_best(test_chosen, MODEL)
    ref = _reference([rec], cross={"accuracy": 2.0, "auroc": 1.0})
    for record in (test_chosen, _with_numerics(test_chosen, threads=7)):
        table = check_tripwire(ref, lambda *a, r=record: r)
        assert "NOT VALIDATION-BEST" in set(table["verdict"]) and not passed(table)
    # on another machine a different round passes when it is the validation-best one
    e = rec.metrics.headline
    moved = rec.replace(curves={**rec.curves, "round": [1, 2, 4]},
                        metrics=Metrics.single(Evaluation({**e.selected, "round": 4},
                                                          {**e.final, "round": 4})))
    assert passed(check_tripwire(ref, lambda *a: _with_numerics(moved, threads=7)))
    assert not passed(check_tripwire(ref, lambda *a: moved))


def test_cross_environment_tolerance_is_the_measured_spread_times_one_and_a_half(tmp_path):
    """The tolerance comes from the same runs computed under other numerics, and is never
    below the exact one."""
    c, rec = _record("fedavg", "silos", 0, 0.30)
    _, other = _record("fedavg", "silos", 0, 0.30 + 5 / 360)
    store = RecordStore(tmp_path / "other")
    store.write(_with_numerics(other, threads=7))
    cells = tripwire_cells([rec], TEST_LABELS)
    cross = cross_environment(cells, [rec], [store])
    five = 500 / 360
    assert cross["spread"]["digits"]["accuracy"] == pytest.approx(five, abs=1e-4)
    assert cross["tolerance"]["digits"]["accuracy"] == pytest.approx(1.5 * five, abs=1e-4)
    assert any("threads" in s for s in cross["spread_from"])
    with pytest.raises(Exception, match="no run of the grid computed under other numerics"):
        cross_environment(cells, [rec], [RecordStore(tmp_path / "empty")])
    # a remade reference keeps a larger spread measured earlier (another CPU's) as a floor
    earlier = {"spread": {"digits": {"accuracy": 3.0, "auroc": 0.01}},
               "spread_from": ["reference made on another CPU"]}
    kept = cross_environment(cells, [rec], [store], previous=earlier)
    assert kept["spread"]["digits"]["accuracy"] == 3.0
    assert kept["tolerance"]["digits"]["accuracy"] == pytest.approx(4.5)
    assert "earlier: reference made on another CPU" in kept["spread_from"]
    assert cross_environment(cells, [rec], [store], previous={"spread": {"digits": {
        "accuracy": 0.1}}})["spread"]["digits"]["accuracy"] == pytest.approx(five, abs=1e-4)


@pytest.mark.slow
def test_references_are_package_data_not_output(tmp_path):
    """The references ship inside the package (bench/references/): deleting a results folder
    never deletes them, and a non-editable install (the built wheel) can still check."""
    import shutil
    import subprocess
    import sys
    import zipfile
    from importlib.resources import files

    from bench.report.check import REFERENCE_DIR

    assert REFERENCE_DIR == Path(str(files("bench") / "references"))
    names = {"smoke.json", "sensitivity.json", "pneumonia.json", "science.json", "peers.json",
             "paper.json"}
    assert names <= {p.name for p in REFERENCE_DIR.iterdir()}
    # built from a copy: setuptools writes build/ beside the source it builds
    root, source = REFERENCE_DIR.parents[1], tmp_path / "source"
    for part in ("bench", "methods", "datasets"):
        shutil.copytree(root / part, source / part, ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(root / part, source / part)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path), str(source)], check=True, capture_output=True,
                   timeout=300)
    (wheel,) = tmp_path.glob("flbench-*.whl")
    packed = {Path(n).name for n in zipfile.ZipFile(wheel).namelist()
              if n.startswith("bench/references/")}
    assert names <= packed


def test_a_membership_cell_whose_audit_failed_its_null_control_is_marked():
    """An audit whose null control fails (its interval excludes 50) measures more than
    membership: the table marks its membership cells and says what to read instead; an audit
    whose null holds, and every other metric, are not marked."""
    from bench.methods.privacy import RECEIVED, SHARED, Audit
    from bench.report.tables import NULL_MARK, latex, markdown, records_frame, summarise

    def audit(null_ci):
        return Audit("a", auc=0.57, auc_ci=(0.53, 0.61), null_auc=sum(null_ci) / 2,
                     null_auc_ci=null_ci, excess_auc=0.01, excess_auc_ci=(-0.02, 0.04))

    def audited(split, shared_null, received_null):
        c, rec = _record("fedavg", split, 0, 0.9)
        return rec.replace(audit={SHARED: audit(shared_null), RECEIVED: audit(received_null)})

    holds, fails = (0.49, 0.59), (0.53, 0.60)
    records = [audited("silos", holds, fails), audited("dirichlet:0.1", fails, holds)]
    summary = summarise(records_frame(records))
    table = markdown(summary, ["accuracy", "membership_auc", "membership_auc_received",
                               "membership_excess"])
    rows = [line for line in table.splitlines() if line.startswith("| fedavg")]
    accuracy, shared, received, excess = rows
    assert NULL_MARK not in accuracy and NULL_MARK not in excess
    for row, failed in ((shared, "dirichlet"), (received, "silos")):
        dirichlet, silos = row.split("|")[2:4]  # columns: dirichlet:alpha=0.1, silos
        assert (NULL_MARK in dirichlet, NULL_MARK in silos) == (failed == "dirichlet",
                                                                failed == "silos"), row
    assert r"$^\ddagger$" in latex(summary, ["membership_auc"])
    assert "1.0 (n=1)" in excess  # the excess, in points
    assert "null control failed" in table and "membership_excess" in table
    assert "null control failed" not in markdown(summary, ["accuracy"])


def _split_store(tmp_path, seeds_here=(0, 1), seeds_there=(2,)):
    """The fixture's FedAvg and FederatedFactory runs under silos, seeds split between two
    results folders (as when seeds ran on two machines)."""
    folders = []
    for name, seeds in (("here", seeds_here), ("there", seeds_there)):
        s = RecordStore(tmp_path / name)
        for seed in seeds:
            s.write(_record("fedavg", "silos", seed, _acc("fedavg", "silos", seed))[1])
            grid = (np.random.default_rng(seed).random((100, 134)) * 255).astype(np.uint8)
            s.write(_record("federatedfactory", "silos", seed, 0.0,
                            variants={"server": 0.95 + 0.01 * seed, "local": 0.97})[1],
                    {"samples": grid})
        folders.append(s.root)
    return folders


def test_runs_of_several_folders_make_one_table(tmp_path, capsys):
    """`--also` joins another folder's runs to --out's: seeds 0-1 in one folder and seed 2 in
    another give the cell the one folder of all three gives (30.0 ± 1.0, n=3), and the
    tables are written under --out only."""
    here, there = _split_store(tmp_path)
    assert main(["table", "--out", str(here)]) == 0
    assert "29.5 ± 0.7 (n=2)" in capsys.readouterr().out  # seeds 0 and 1 alone
    assert main(["table", "--out", str(here), "--also", str(there)]) == 0
    out, err = capsys.readouterr()
    assert "30.0 ± 1.0 (n=3)" in out
    assert f"4 from {here}, 2 from {there}" in err
    assert (here / "tables" / "summary_selected.md").read_text().startswith(
        f"Runs of {here}, {there} (`--also`).")  # a joined table says so where it is written
    assert not (there / "tables").exists()
    # the count says what the table holds: runs left out by --methods are not counted
    assert main(["table", "--out", str(here), "--also", str(there), "--methods", "fedavg"]) == 0
    assert f"2 from {here}, 1 from {there}" in capsys.readouterr().err
    # the runs one by one say which folder holds each
    assert main(["table", "--out", str(here), "--also", str(there), "--runs",
                 "--methods", "fedavg"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert [(row[-1], row[3]) for row in rows] == [(str(here), "0"), (str(here), "1"),
                                                   (str(there), "2")], rows


def test_a_run_stored_in_two_folders_is_refused(tmp_path, capsys, monkeypatch):
    """The same run (config, so run id) in two folders would count twice, raising n and
    shrinking the std: refused with one line and exit 2, and nothing is written. A folder
    named twice however written (trailing slash, relative path), or a folder with no runs, is
    refused the same way."""
    here, there = _split_store(tmp_path, seeds_there=(1, 2))
    assert main(["table", "--out", str(here), "--also", str(there)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "seed 1" in err[0] and "stored under both" in err[0], err
    assert not (here / "tables").exists()
    (tmp_path / "empty").mkdir()
    monkeypatch.chdir(tmp_path)
    for also, says in (([f"{here}/"], "names the --out folder again"),
                       (["here"], "names the --out folder again"),
                       ([str(there), "there/"], f"names {there} again"),
                       (["empty"], "no results folder there")):
        assert main(["report", "--out", str(here), *[a for d in also for a in ("--also", d)]]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0], (also, err)
    assert not (here / "report").exists()


def test_a_cell_mixing_runs_of_different_code_is_marked(tmp_path, capsys):
    """A seed computed by older code (another fingerprint) in the other folder: the table
    still means over it, and marks the cell as computed by other code (†), as it would in
    one folder."""
    here, there = _split_store(tmp_path, seeds_there=())
    c, rec = _record("fedavg", "silos", 2, _acc("fedavg", "silos", 2))
    RecordStore(there).write(rec.replace(
        provenance=dataclasses.replace(rec.provenance, code="0ld" * 8)))
    assert main(["table", "--out", str(here), "--also", str(there)]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines()
               if line.startswith("| fedavg |"))
    assert "30.0 ± 1.0 (n=3) †" in row


@pytest.mark.slow
def test_report_finds_a_runs_images_in_the_folder_that_holds_it(tmp_path):
    """The sample grids of seed 2's FederatedFactory run lie in the --also folder, beside its
    record: the report draws them from there."""
    here, there = _split_store(tmp_path)
    assert main(["report", "--out", str(here), "--also", str(there),
                 "--metrics", "accuracy"]) == 0
    names = {p.name for p in (here / "report" / "figures").glob("*.png")}
    assert {f"digits_silos_s{seed}_federatedfactory_samples.png" for seed in range(3)} <= names


def test_error_bars_stay_inside_the_metrics_range(tmp_path, monkeypatch):
    """Mean ± std over three seeds of 0, 0 and 30 % reads 10 ± 17: the bar stops at 0 % (no
    run can score below it) and keeps its upper arm; a bar inside the range is the plain std,
    and one seed (no std) draws none. Drawn: the silos bars of such a cell reach no lower
    than 0 %."""
    from matplotlib.collections import LineCollection

    from bench.report import figures
    from bench.report.tables import records_frame

    below, above = figures.spread([10.0, 50.0, 95.0, 40.0], [17.32, 5.0, 10.0, float("nan")])
    assert below.tolist() == [10.0, 5.0, 10.0, 0.0]
    assert above.round(2).tolist() == [17.32, 5.0, 5.0, 0.0]
    assert figures.spread([-2.0], [5.0], lo=-100).tolist() == [[5.0], [5.0]]  # points: no clip

    drawn = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.append(fig) or [])
    frame = records_frame([_record("fedavg", "silos", seed, acc)[1]
                           for seed, acc in enumerate((0.0, 0.0, 0.3))])
    figures.silos_bars(frame, "digits", "accuracy", tmp_path / "bars")
    (ax,) = drawn[0].axes
    ys = [y for c in ax.collections if isinstance(c, LineCollection)
          for segment in c.get_segments() for _, y in segment]
    assert ys and min(ys) == pytest.approx(0.0) and max(ys) == pytest.approx(10 + 17.32, abs=0.01)
