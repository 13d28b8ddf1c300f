"""Checks of stored results against a reference (`bench/references/<name>.json`).

A reference is one of three layers:

- `tripwire`: per-run expected values for the runs of a named grid (bench/protocol.py), made
  by this code on the CPU with the pinned portable numerics (methods/numerics.py), recorded in
  `made_with.numerics`. A cell names its run by id (the hash of its full config), so other
  runs in the same folder (other settings, an unlearned run) never take its place. Two rules:
  - *exact*, where a record's numerics equal the reference's (the same bits are computed on
    any AVX2 x86-64 CPU with the same torch, threads and per-core caches): one test image for
    accuracy, the most that one test image can move the macro AUROC for AUROC (`auroc_step`),
    the validation-selected round exactly;
  - *cross-environment*, where they differ (another torch, thread count, architecture, cache
    size, a GPU, unpinned numerics): accuracy and AUROC within the reference's
    `cross_environment` tolerance, 1.5 times the largest difference that the same runs showed
    under other numerics (measured with `--spread-from` and committed), and the selected
    round not compared with the reference's but checked as an invariant that holds on any
    machine: it carries the best validation score of its curve under the selection's tie
    rule (`selected_round_is_validation_best`). Rounding within the measured spread does
    not fail it.
  Both rules check the invariant. Any change in behaviour in the pinned environment fails;
  `--make-reference` accepts an intended change and prints what moved.
- `science`: the paper's claims as orderings of two cells with a margin, each side the mean
  over at least `min_seeds` seeds of the grid's runs, e.g. "FedAvg under silos at least 5
  points below centralized".
- `published`: reported numbers (the paper's), compared with the mean over whatever seeds are
  stored, within the reported spread; cells not run are listed as such.

In every layer a record computed by other code (bench/provenance.py) is never compared: its
cells read STALE and the check fails.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import ConfigError
from ..methods.numerics import Numerics
from ..provenance import is_stale
from ..records import Record, parse_label
from .tables import records_frame, summarise

REFERENCE_DIR = Path(__file__).resolve().parents[1] / "references"  # package data
KEY = ("dataset", "split", "method", "metric")
LAYERS = ("tripwire", "science", "published")
TRIPWIRE_METRICS = ("accuracy", "auroc", "round")
PASS = ("ok", "not run")
EXACT, CROSS = "exact", "cross-environment"
SPREAD_FACTOR = 1.5  # cross-environment tolerance = this x the largest measured difference
NOT_VALIDATION_BEST = "NOT VALIDATION-BEST"


def reference_path(name: str) -> Path:
    path = Path(name)
    return path if path.suffix == ".json" else REFERENCE_DIR / f"{name}.json"


def load_reference(name: str) -> dict:
    path = reference_path(name)
    if not path.exists():
        known = sorted(p.stem for p in REFERENCE_DIR.glob("*.json"))
        raise ConfigError(f"no reference {name!r} ({path}); valid choices: "
                          f"{', '.join(known)} or a path to a .json file")
    try:
        ref = json.loads(path.read_text())
        if ref["layer"] not in LAYERS:
            raise KeyError(f"layer must be one of {', '.join(LAYERS)}")
        for cell in ref.get("cells", []):
            for k in (*KEY, "expected", "tolerance"):
                cell[k]
            if ref["layer"] == "tripwire":
                cell["run_id"], cell["seed"]
        for claim in ref.get("claims", []):
            claim["left"], claim["right"], claim["op"], claim["margin"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ConfigError(f"reference {path} is malformed ({e}); see bench/report/check.py") \
            from None
    return ref


# --- tolerances -------------------------------------------------------------------------
def accuracy_step(test_labels: np.ndarray) -> float:
    """One test image, in accuracy points."""
    return 100.0 / len(test_labels)


def auroc_step(test_labels: np.ndarray, n_classes: int) -> float:
    """The most that one test image can move the AUROC, in points: moving image i's scores
    reorders at most all its pairs. Two classes (the AUROC of class 1): max(1/n_pos,
    1/n_neg). More classes (macro one-vs-rest over the C classes present): for an image of
    class y, (1/C) (1/n_pos(y) + sum_{c != y} 1/n_neg(c)), maximised over y."""
    counts = np.bincount(test_labels, minlength=n_classes).astype(float)
    present = counts > 0
    n = counts.sum()
    if n_classes == 2:
        return 100.0 * max(1 / counts[1], 1 / counts[0])
    pos, neg = counts[present], n - counts[present]
    per_image = (1 / pos + (1 / neg).sum() - 1 / neg) / present.sum()
    return 100.0 * float(per_image.max())


# --- reading records --------------------------------------------------------------------
def run_value(record: Record, variant: str, metric: str) -> float | None:
    """A run's validation-selected test metric (in percent; `round` as it is)."""
    selected = record.metrics.variants[variant].selected or {}
    value = selected.get(metric)
    if value is None:
        return None
    return float(value) if metric == "round" else 100.0 * float(value)


# --- the three layers -------------------------------------------------------------------
def record_numerics(record: Record) -> Numerics | None:
    return record.provenance.numerics


def reference_numerics(ref: dict) -> Numerics | None:
    stored = ref.get("made_with", {}).get("numerics")
    return None if stored is None else Numerics.from_dict(stored)


def selected_round_is_validation_best(record: Record, variant: str) -> bool | None:
    """Whether the selected round carries the best validation score of its curve under the
    selection's rule (methods/evaluation.py, `Selection.record`: highest validation accuracy,
    then lowest validation loss, the earliest round on a full tie), and the test values
    reported are that round's. What the exact round guards (the test set never chooses it)
    holds on any machine in this form. None when the record has no validation curve or no
    single selected round (local-only: each client selects its own; its curves are means)."""
    prefix = record.curve_prefix(variant)
    curves = record.curves
    rounds, acc, loss = (curves.get(prefix + k) for k in ("round", "val_accuracy", "val_loss"))
    selected = record.metrics.variants[variant].selected
    if not rounds or acc is None or loss is None or not selected or "round" not in selected:
        return None
    best = max(range(len(rounds)), key=lambda i: (acc[i], -loss[i], -i))
    test_acc = curves.get(prefix + "test_accuracy")
    return rounds[best] == selected["round"] and (
        test_acc is None or test_acc[best] == selected["accuracy"])


def check_tripwire(ref: dict, load) -> pd.DataFrame:
    """`load(dataset, method, run_id)` -> record or None. Each cell is judged by the exact
    rule where its record's numerics equal the reference's, else by the cross-environment
    rule; `table.attrs["environment"]` says how the environment differs (None: it does not)."""
    made = reference_numerics(ref)
    cross = ref.get("cross_environment", {}).get("tolerance", {})
    rows, differences = [], {}
    for cell in ref["cells"]:
        method, variant = parse_label(cell["method"])
        record = load(cell["dataset"], method, cell["run_id"])
        row = {k: cell[k] for k in KEY} | {"seed": cell["seed"], "expected": cell["expected"],
                                           "tolerance": cell["tolerance"], "measured": None,
                                           "rule": EXACT}
        if record is None:
            rows.append(row | {"verdict": "MISSING"})
            continue
        if is_stale(record):
            rows.append(row | {"verdict": "STALE"})
            continue
        numerics = record_numerics(record)
        if made is None or numerics is None or numerics != made:
            differences.setdefault(
                "numerics not recorded" if made is None or numerics is None
                else "; ".join(made.differences(numerics)), 0)
            row["rule"] = CROSS
        value = run_value(record, variant, cell["metric"])
        row["measured"] = value
        invariant = selected_round_is_validation_best(record, variant)
        if cell["metric"] == "round":
            if invariant is False:
                verdict = NOT_VALIDATION_BEST
            elif row["rule"] == CROSS:  # the invariant (where a curve has it), not the number
                verdict, row["tolerance"] = "ok", None
            else:
                verdict = _verdict(value, cell["expected"], cell["tolerance"])
        else:
            if row["rule"] == CROSS:
                row["tolerance"] = max(cell["tolerance"], cross.get(cell["dataset"], {})
                                       .get(cell["metric"], cell["tolerance"]))
            verdict = _verdict(value, cell["expected"], row["tolerance"])
        rows.append(row | {"verdict": verdict})
    table = pd.DataFrame(rows)
    table.attrs["environment"] = environment_line(ref, table, list(differences))
    return table


def _verdict(value: float | None, expected: float, tolerance: float) -> str:
    if value is None:
        return "CHANGED"
    if abs(value - expected) <= tolerance + 1e-9:
        return "ok"
    return "REGRESSED" if value < expected else "ABOVE"


def environment_line(ref: dict, table: pd.DataFrame, differences: list[str]) -> str | None:
    """One line naming how the records' environment differs from the reference's and the
    rule that applies (None when every record matches it)."""
    if not differences:
        return None
    n = int((table["rule"] == CROSS).sum())
    tol = ref.get("cross_environment", {}).get("tolerance")
    widths = "; ".join(f"{d}: accuracy ±{t['accuracy']:.2f}, AUROC ±{t['auroc']:.2f} points"
                       for d, t in tol.items()) if tol else "no measured spread: one test image"
    return (f"environment differs from the reference's ({' | '.join(differences)}): {n} cells "
            f"judged by the cross-environment rule ({widths}; the selected round by its "
            f"validation invariant; docs/checks.md)")


def check_claims(claims: list[dict], records: list[Record], min_seeds: int,
                 missing_is_failure: bool) -> pd.DataFrame:
    """A side of a claim is a cell (the mean over its seeds) or a constant `{"value": x}`
    (chance level, say)."""
    summary = summarise(records_frame(records)) if records else None
    rows = []
    for claim in claims:
        sides = [{"mean": claim[s]["value"], "n": math.inf} if "value" in claim[s]
                 else _lookup(summary, claim[s]) for s in ("left", "right")]
        row = {"dataset": "claim", "split": "", "method": claim["claim"], "metric": "",
               "expected": f"{claim['op']} {claim['margin']}", "tolerance": None}
        if any(s is None for s in sides):
            rows.append(row | {"measured": None, "n": 0,
                               "verdict": "MISSING" if missing_is_failure else "not run"})
            continue
        left, right = sides
        gap = left["mean"] - right["mean"]
        n = min(left["n"], right["n"])
        ok = {"<": gap <= -claim["margin"], ">": gap >= claim["margin"],
              "~": abs(gap) <= claim["margin"]}[claim["op"]]
        verdict = "TOO FEW SEEDS" if n < min_seeds else ("ok" if ok else "CLAIM FAILS")
        rows.append(row | {"measured": round(gap, 2), "n": int(n), "verdict": verdict})
    return pd.DataFrame(rows)


def check_published(ref: dict, records: list[Record]) -> pd.DataFrame:
    """Mean over the stored seeds against each reported number, within its tolerance."""
    current = [r for r in records if not is_stale(r)]
    summary = summarise(records_frame(current)) if current else None
    rows = []
    for cell in ref["cells"]:
        row = _lookup(summary, cell)
        base = {k: cell[k] for k in KEY} | {"expected": cell["expected"],
                                            "tolerance": cell["tolerance"],
                                            "source": cell.get("source", "").split(" (")[0]}
        if row is None:
            rows.append(base | {"measured": None, "n": 0, "verdict": "not run"})
            continue
        diff = row["mean"] - cell["expected"]
        verdict = "ok" if abs(diff) <= cell["tolerance"] + 1e-9 else (
            "REGRESSED" if diff < 0 else "ABOVE")
        rows.append(base | {"measured": round(row["mean"], 2), "n": int(row["n"]),
                            "verdict": verdict})
    return pd.concat([pd.DataFrame(rows), check_claims(ref.get("claims", []), current, 1,
                                                       False)], ignore_index=True)


def _lookup(summary: pd.DataFrame | None, cell: dict):
    if summary is None:
        return None
    row = summary[(summary["dataset"] == cell["dataset"]) & (summary["split"] == cell["split"])
                  & (summary["method"] == cell["method"]) & (summary["metric"] == cell["metric"])]
    return None if row.empty else row.iloc[0]


def passed(table: pd.DataFrame) -> bool:
    return bool(len(table)) and bool(table["verdict"].isin(PASS).all())


# --- making a tripwire reference --------------------------------------------------------
def tripwire_cells(records: list[Record], test_labels: dict[str, np.ndarray]) -> list[dict]:
    """Per-run cells (accuracy, AUROC, selected round of every variant) of `records`;
    `test_labels`: dataset -> its test labels (for the tolerances)."""
    cells = []
    for r in records:
        c = r.config
        labels = test_labels[c.dataset]
        tol = {"accuracy": accuracy_step(labels),
               "auroc": auroc_step(labels, r.dataset_info["n_classes"]), "round": 0.0}
        for label, variant, _ in r.variants():
            for metric in TRIPWIRE_METRICS:
                value = run_value(r, variant, metric)
                if value is None:
                    continue
                cells.append({"dataset": c.dataset, "split": c.split, "method": label,
                              "seed": c.seed, "metric": metric, "run_id": r.run_id,
                              "expected": value, "tolerance": tol[metric]})
    return cells


def reference_diff(old: dict, new: dict) -> list[str]:
    """What an accepted change moves: one line per cell changed, added or removed."""
    def key(c):
        return (c["dataset"], c["split"], c["method"], c["seed"], c["metric"])

    before = {key(c): c for c in old.get("cells", [])}
    after = {key(c): c for c in new["cells"]}
    lines = []
    for k in sorted(set(before) | set(after), key=str):
        a, b = before.get(k), after.get(k)
        name = f"{k[0]} {k[2]} {k[1]} seed {k[3]} {k[4]}"
        if a is None:
            lines.append(f"+ {name}: {b['expected']:.2f}")
        elif b is None:
            lines.append(f"- {name}: {a['expected']:.2f}")
        elif a["run_id"] != b["run_id"] or not math.isclose(a["expected"], b["expected"],
                                                             abs_tol=1e-9):
            moved = b["expected"] - a["expected"]
            note = "" if a["run_id"] == b["run_id"] else " (config changed)"
            lines.append(f"~ {name}: {a['expected']:.2f} -> {b['expected']:.2f} "
                         f"({moved:+.2f}){note}")
    return lines


# --- a reference against a results folder (what `python -m bench check` does) ------------
def check_reference(ref: dict, store, datasets=None) -> pd.DataFrame:
    """The verdict table of `ref` against the records of `store` (a RecordStore), optionally
    only for some datasets' cells and claims."""
    if datasets:
        keep = set(datasets)
        ref = {**ref, "cells": [c for c in ref.get("cells", []) if c["dataset"] in keep],
               "claims": [c for c in ref.get("claims", [])
                          if {c[s].get("dataset") for s in ("left", "right")} - {None}
                          <= keep]}
    if ref["layer"] == "tripwire":
        return check_tripwire(ref, store.load_id)
    if ref["layer"] == "published":
        return check_published(ref, store.all_records())
    from ..grid import grid_configs

    configs = [c for c in grid_configs(ref["grid"])
               if not datasets or c.dataset in set(datasets)]
    records = [r for r in map(store.load, configs) if r is not None]
    stale = [r for r in records if is_stale(r)]
    table = check_claims(ref["claims"], [r for r in records if not is_stale(r)],
                         ref.get("min_seeds", 3), True)
    if stale:
        table = pd.concat([table, pd.DataFrame([{
            "dataset": "runs", "split": "", "method": f"{len(stale)} runs of grid "
            f"{ref['grid']} computed by other code", "metric": "", "verdict": "STALE"}])],
            ignore_index=True)
    return table


def failure_lines(ref: dict, table: pd.DataFrame, store) -> list[str]:
    """One line per failing cell or claim, then what to do about it."""
    bad = table[~table["verdict"].isin(PASS)]
    lines = []
    for _, row in bad.iterrows():
        if row["dataset"] in ("claim", "runs"):
            lines.append(f"{row['verdict']}: {row['method']} (measured {row.get('measured')}, "
                         f"expected {row.get('expected')}, n={row.get('n')})")
            continue
        seed = f" seed {row['seed']}" if "seed" in row and pd.notna(row.get("seed")) else ""
        measured = "none" if row["measured"] is None or pd.isna(row["measured"]) \
            else f"{row['measured']:.2f}"
        lines.append(f"{row['verdict']}: {row['dataset']} {row['method']} {row['split']}{seed} "
                     f"{row['metric']}: expected {row['expected']:.2f} ± {row['tolerance']:g}, "
                     f"measured {measured}")
    verdicts = set(bad["verdict"])
    grid = ref.get("grid")
    if grid and verdicts & {"MISSING", "STALE", "TOO FEW SEEDS"}:
        lines.append(f"to compute the missing or stale runs: python -m bench run --grid {grid} "
                     f"--out {store.root}")
    if ref["layer"] == "tripwire" and "MISSING" in verdicts:
        from ..grid import grid_configs

        ids = {c.run_id for c in grid_configs(grid)}
        if any(c["run_id"] not in ids for c in ref["cells"]):
            lines.append(f"some cells name runs that grid {grid} no longer has (its configs "
                         f"changed): remake the reference, see docs/checks.md")
    if ref["layer"] == "tripwire" and verdicts & {"REGRESSED", "ABOVE", "CHANGED"}:
        rule = "exact: same numerics as the reference" if (table["rule"] == EXACT).all() \
            else "cross-environment tolerance"
        lines.append(f"judged by the {rule}, so a number moved beyond rounding; if the change "
                     f"is intended, remake the reference with --make-reference "
                     f"(docs/checks.md)")
    if NOT_VALIDATION_BEST in verdicts:
        lines.append("a selected round is not the best validation round of its curve: the "
                     "model was chosen by something other than validation data")
    return lines


def remake_tripwire(ref: dict, store, data_root: str | None = None,
                    spread_from: list | None = None) -> dict:
    """A new tripwire reference from the stored runs of `ref`'s grid (all present, current and
    computed with one numerics), keeping its name, description and grid. `spread_from`: other
    RecordStores holding the same runs computed under other numerics (threads, unpinned ISA),
    from which the cross-environment tolerance is measured, never below the spread the
    previous reference measured (the environments measured then, another CPU's among them,
    still exist when the code changes); without them the previous `cross_environment` is
    kept."""
    from ..grid import grid_configs
    from ..runner import cached_dataset

    if ref["layer"] != "tripwire":
        raise ConfigError(f"reference {ref['name']!r} is a {ref['layer']} reference: its "
                          f"claims or reported numbers are written by hand, not made from runs")
    configs = grid_configs(ref["grid"])
    records = [store.load(c) for c in configs]
    absent = [c.label for c, r in zip(configs, records) if r is None or is_stale(r)]
    if absent:
        raise ConfigError(f"{len(absent)} runs of grid {ref['grid']} are missing or stale "
                          f"(e.g. {absent[0]}); run `python -m bench run --grid {ref['grid']}` "
                          f"first")
    numerics = {r.provenance.numerics for r in records}
    if len(numerics) != 1 or records[0].provenance.numerics is None:
        raise ConfigError(f"the runs of grid {ref['grid']} were computed with {len(numerics)} "
                          f"different numerics (threads, pins): rerun them with one setting, "
                          f"e.g. `python -m bench run --grid {ref['grid']} --force`")
    labels = {d: cached_dataset(d, data_root).y_test.numpy()
              for d in dict.fromkeys(c.dataset for c in configs)}
    env = records[0].environment
    made_with = {"numerics": records[0].provenance.numerics.to_dict(),
                 "diffusers": records[0].provenance.libraries.get("diffusers"),
                 "device_name": env["device_name"], "cpu_model": env.get("cpu_model"),
                 "platform": env["platform"], "git_commit": env["git_commit"]}
    cells = tripwire_cells(records, labels)
    cross = ref.get("cross_environment")
    if spread_from:
        cross = cross_environment(cells, records, spread_from, previous=cross)
    return {**{k: v for k, v in ref.items() if k not in ("cells", "cross_environment")},
            "made_with": made_with,
            "tolerance_rule": "same numerics: accuracy one test image, auroc the most one test "
                              "image can move it (auroc_step), round exact; other numerics: "
                              "cross_environment tolerance, round by its validation invariant",
            **({"cross_environment": cross} if cross else {}), "cells": cells}


def cross_environment(cells: list[dict], records: list[Record], others: list,
                      previous: dict | None = None) -> dict:
    """The cross-environment tolerance per dataset and metric: SPREAD_FACTOR x the largest
    difference between a cell and the same run (same id) computed under other numerics, and
    never below the cell's exact tolerance. `others`: RecordStores holding the grid run under
    other numerics here, or earlier tripwire references (dicts) made by the same code in
    another environment, such as on another CPU, whose cells are measurements of the same runs.
    `previous`: an earlier reference's `cross_environment`, whose measured spread (and its
    sources) is a floor."""
    by_id = {r.run_id: r for r in records}
    spread: dict = {}
    sources = set()
    for other in others:
        for cell in cells:
            if cell["metric"] == "round":
                continue
            ours = record_numerics(by_id[cell["run_id"]])
            value, where = _measured_elsewhere(other, cell, ours)
            if value is None:
                continue
            sources.add(where)
            s = spread.setdefault(cell["dataset"], {}).setdefault(cell["metric"], 0.0)
            spread[cell["dataset"]][cell["metric"]] = max(s, abs(value - cell["expected"]))
    if not spread:
        raise ConfigError("--spread-from: no run of the grid computed under other numerics "
                          "was found there (run the grid with --threads N or "
                          "FLBENCH_NUMERICS=native into that folder first)")
    floor_used = False
    for d, ms in (previous or {}).get("spread", {}).items():
        for m, v in ms.items():
            if d in spread and v > spread[d].get(m, 0.0):
                spread[d][m], floor_used = v, True
    if floor_used:
        sources |= {s if s.startswith("earlier: ") else f"earlier: {s}"
                    for s in previous.get("spread_from", [])}
    steps = {}
    for c in cells:
        steps.setdefault(c["dataset"], {})[c["metric"]] = c["tolerance"]
    return {"rule": f"{SPREAD_FACTOR} x the largest measured difference, at least the exact "
                    f"tolerance",
            "spread_from": sorted(sources),
            "spread": {d: {m: round(v, 4) for m, v in ms.items()} for d, ms in spread.items()},
            "tolerance": {d: {m: round(max(steps[d][m], SPREAD_FACTOR * v), 4)
                              for m, v in ms.items()} for d, ms in spread.items()}}


def _measured_elsewhere(other, cell: dict, ours: Numerics) -> tuple[float | None, str]:
    """`cell`'s value as `other` (a RecordStore or an earlier reference) measured it under
    other numerics, and a description of those numerics; (None, "") when it has none."""
    if isinstance(other, dict):
        key = (cell["run_id"], cell["method"], cell["metric"])
        theirs = next((c for c in other.get("cells", [])
                       if (c["run_id"], c["method"], c["metric"]) == key), None)
        made = other.get("made_with", {})
        numerics = reference_numerics(other)
        if theirs is None or numerics == ours:
            return None, ""
        env = "; ".join(ours.differences(numerics)) if numerics else "numerics not recorded"
        torch = numerics.torch if numerics else made.get("torch")  # older references: top level
        return theirs["expected"], (f"reference made on {made.get('cpu_model')} with torch "
                                    f"{torch} ({env})")
    method, variant = parse_label(cell["method"])
    record = other.load_id(cell["dataset"], method, cell["run_id"])
    if record is None or is_stale(record):
        return None, ""
    numerics = record_numerics(record)
    if numerics is None or numerics == ours:
        return None, ""
    return run_value(record, variant, cell["metric"]), "; ".join(ours.differences(numerics))
