"""Checks of stored results against a reference (`results/reference/<name>.json`).

A reference is one of three layers:

- `tripwire`: per-run expected values for the runs of a named grid (bench/protocol.py), made
  by this code on the CPU with the thread count recorded (`made_with`). A cell names its run
  by id (the hash of its full config), so other runs in the same folder (other settings, an
  unlearned run) never take its place. Tolerances are tight: one test image for accuracy, the
  most that one test image can move the macro AUROC for AUROC (derived from the test set's
  class counts, see `auroc_step`), zero for the validation-selected round. Any change in
  behaviour fails; `--make-reference` accepts an intended change and prints what moved.
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
from ..provenance import is_stale
from .tables import records_frame, summarise

REFERENCE_DIR = Path(__file__).resolve().parents[2] / "results" / "reference"
KEY = ("dataset", "split", "method", "metric")
LAYERS = ("tripwire", "science", "published")
TRIPWIRE_METRICS = ("accuracy", "auroc", "round")
PASS = ("ok", "not run")


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
def run_value(record: dict, variant: str | None, metric: str) -> float | None:
    """A run's validation-selected test metric (in percent; `round` as it is)."""
    metrics = record["metrics"]
    if variant is not None:
        metrics = metrics["variants"][variant]
    selected = metrics["selected"] or {}
    value = selected.get(metric)
    if value is None:
        return None
    return float(value) if metric == "round" else 100.0 * float(value)


def split_method(label: str) -> tuple[str, str | None]:
    """'federatedfactory[server]' -> ('federatedfactory', 'server')."""
    name, _, variant = label.partition("[")
    return name, variant.rstrip("]") or None


# --- the three layers -------------------------------------------------------------------
def check_tripwire(ref: dict, load) -> pd.DataFrame:
    """`load(dataset, method, run_id)` -> record or None."""
    rows = []
    for cell in ref["cells"]:
        method, variant = split_method(cell["method"])
        record = load(cell["dataset"], method, cell["run_id"])
        row = {k: cell[k] for k in KEY} | {"seed": cell["seed"], "expected": cell["expected"],
                                           "tolerance": cell["tolerance"], "measured": None}
        if record is None:
            rows.append(row | {"verdict": "MISSING"})
            continue
        if is_stale(record):
            rows.append(row | {"verdict": "STALE"})
            continue
        value = run_value(record, variant, cell["metric"])
        row["measured"] = value
        if value is None or abs(value - cell["expected"]) > cell["tolerance"] + 1e-9:
            verdict = "CHANGED" if value is None else (
                "REGRESSED" if value < cell["expected"] else "ABOVE")
        else:
            verdict = "ok"
        rows.append(row | {"verdict": verdict})
    return pd.DataFrame(rows)


def check_claims(claims: list[dict], records: list[dict], min_seeds: int,
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


def check_published(ref: dict, records: list[dict]) -> pd.DataFrame:
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
def tripwire_cells(records: list[dict], test_labels: dict[str, np.ndarray]) -> list[dict]:
    """Per-run cells (accuracy, AUROC, selected round of every variant) of `records`;
    `test_labels`: dataset -> its test labels (for the tolerances)."""
    cells = []
    for r in records:
        c = r["config"]
        info = r["dataset_info"]
        labels = test_labels[c["dataset"]]
        tol = {"accuracy": accuracy_step(labels),
               "auroc": auroc_step(labels, info["n_classes"]), "round": 0.0}
        for variant in (r["metrics"].get("variants") or [None]):
            label = c["method"] if variant is None else f"{c['method']}[{variant}]"
            for metric in TRIPWIRE_METRICS:
                value = run_value(r, variant, metric)
                if value is None:
                    continue
                cells.append({"dataset": c["dataset"], "split": c["split"], "method": label,
                              "seed": c["seed"], "metric": metric, "run_id": r["run_id"],
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
                         f"changed): remake the reference, see README, 'Checks'")
    if ref["layer"] == "tripwire" and verdicts & {"REGRESSED", "ABOVE", "CHANGED"}:
        from ..runner import cpu_model

        made = ref.get("made_with", {})
        lines.append(f"the reference was made with torch {made.get('torch')}, "
                     f"{made.get('torch_threads')} threads, on {made.get('device_name')} "
                     f"(CPU {made.get('cpu_model', 'not recorded')}; this one: {cpu_model()}): "
                     f"a tripwire is exact in that environment only; if the change is "
                     f"intended, remake it with --make-reference (README, 'Checks')")
    return lines


def remake_tripwire(ref: dict, store, data_root: str | None = None) -> dict:
    """A new tripwire reference from the stored runs of `ref`'s grid (all present and
    current), keeping its name, description and grid."""
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
    labels = {d: cached_dataset(d, data_root).y_test.numpy()
              for d in dict.fromkeys(c.dataset for c in configs)}
    env = records[0]["environment"]
    made_with = {"torch": env["torch"], "diffusers": records[0]["provenance"]["diffusers"],
                 "torch_threads": sorted({r["environment"]["torch_threads"] for r in records}),
                 "device_name": env["device_name"], "cpu_model": env.get("cpu_model"),
                 "platform": env["platform"],
                 "git_commit": env["git_commit"]}
    return {**{k: v for k, v in ref.items() if k != "cells"}, "made_with": made_with,
            "tolerance_rule": "accuracy: one test image; auroc: the most one test image can "
                              "move it (auroc_step); round: exact",
            "cells": tripwire_cells(records, labels)}
