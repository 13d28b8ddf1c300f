"""Checks of stored results against a reference file, cell by cell, and of claims as orderings.

A reference (JSON, `results/reference/<name>.json`) holds
- cells: {dataset, split, method, metric, expected, tolerance} in percent; a cell passes when
  the mean over the stored seeds lies within expected +- tolerance (a change in either
  direction means the benchmark no longer reproduces);
- claims: {claim, left, op, right, margin}: the scientific statements as orderings of two
  cells, e.g. "FedAvg under silos is at least 5 points below centralized";
- require_all: whether a cell without stored runs fails the check (true for the CI smoke grid,
  false for the paper's numbers, which a CPU machine cannot produce).

`make_reference` derives expected values and tolerances from measured runs: expected = the
mean over seeds, tolerance = max(3 x the sample std over seeds, 2 test images), so a cell
tolerates what the seeds themselves showed plus the resolution of the test set.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from ..config import ConfigError
from .tables import records_frame, summarise

REFERENCE_DIR = Path(__file__).resolve().parents[2] / "results" / "reference"
KEY = ("dataset", "split", "method", "metric")


def reference_path(name: str) -> Path:
    path = Path(name)
    if path.suffix == ".json":
        return path
    return REFERENCE_DIR / f"{name}.json"


def load_reference(name: str) -> dict:
    path = reference_path(name)
    if not path.exists():
        known = sorted(p.stem for p in REFERENCE_DIR.glob("*.json"))
        raise ConfigError(f"no reference {name!r} ({path}); valid choices: "
                                f"{', '.join(known)} or a path to a .json file")
    try:
        ref = json.loads(path.read_text())
        for cell in ref["cells"]:
            for k in (*KEY, "expected", "tolerance"):
                cell[k]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ConfigError(f"reference {path} is malformed ({e}); see bench/report/check.py") from None
    return ref


def measured(records: list[dict]) -> pd.DataFrame:
    """Mean, std and seed count per (dataset, split, method, metric), in percent."""
    if not records:
        return pd.DataFrame(columns=[*KEY, "mean", "std", "n"])
    return summarise(records_frame(records))


def _lookup(summary: pd.DataFrame, cell: dict):
    row = summary[(summary["dataset"] == cell["dataset"]) & (summary["split"] == cell["split"])
                  & (summary["method"] == cell["method"]) & (summary["metric"] == cell["metric"])]
    return None if row.empty else row.iloc[0]


def check(records: list[dict], reference: dict) -> tuple[pd.DataFrame, bool]:
    """The verdict per cell and claim, and whether the whole check passed."""
    summary = measured(records)
    rows = []
    require_all = reference.get("require_all", False)
    for cell in reference["cells"]:
        row = _lookup(summary, cell)
        base = {k: cell[k] for k in KEY}
        if row is None:
            rows.append({**base, "expected": cell["expected"], "measured": None, "n": 0,
                         "tolerance": cell["tolerance"],
                         "verdict": "MISSING" if require_all else "not run"})
            continue
        diff = row["mean"] - cell["expected"]
        verdict = "ok" if abs(diff) <= cell["tolerance"] + 1e-9 else (
            "REGRESSED" if diff < 0 else "ABOVE")
        rows.append({**base, "expected": cell["expected"], "measured": round(row["mean"], 2),
                     "n": int(row["n"]), "tolerance": cell["tolerance"], "verdict": verdict})
    for claim in reference.get("claims", []):
        left, right = _lookup(summary, claim["left"]), _lookup(summary, claim["right"])
        name = claim["claim"]
        if left is None or right is None:
            rows.append({"dataset": "claim", "split": "", "method": name, "metric": "",
                         "expected": None, "measured": None, "n": 0, "tolerance": None,
                         "verdict": "MISSING" if require_all else "not run"})
            continue
        gap = left["mean"] - right["mean"]
        ok = {"<": gap <= -claim["margin"], ">": gap >= claim["margin"],
              "~": abs(gap) <= claim["margin"]}[claim["op"]]
        rows.append({"dataset": "claim", "split": "", "method": name, "metric": "",
                     "expected": f"{claim['op']} {claim['margin']}", "measured": round(gap, 2),
                     "n": int(min(left["n"], right["n"])), "tolerance": None,
                     "verdict": "ok" if ok else "CLAIM FAILS"})
    table = pd.DataFrame(rows)
    passed = bool(len(table)) and table["verdict"].isin(["ok", "not run"]).all()
    return table, passed


def make_reference(records: list[dict], name: str, description: str, n_test: dict[str, int],
                   claims: list | None = None, metrics=("accuracy", "auroc")) -> dict:
    """A reference whose cells are the stored means and whose tolerances come from the seeds."""
    summary = measured(records)
    cells = []
    for _, row in summary[summary["metric"].isin(metrics)].iterrows():
        floor = 2 * 100.0 / n_test[row["dataset"]]  # two test images, in percent
        std = 0.0 if math.isnan(row["std"]) else float(row["std"])
        cells.append({**{k: row[k] for k in KEY}, "expected": round(float(row["mean"]), 2),
                      "tolerance": round(max(3 * std, floor), 2), "seeds": int(row["n"]),
                      "std_over_seeds": round(std, 2)})
    return {"name": name, "description": description,
            "tolerance_rule": "max(3 x sample std over seeds, 2 test images); see check.py",
            "require_all": True, "cells": cells, "claims": claims or []}
