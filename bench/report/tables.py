"""Tables from stored records only: mean +- sample std over seeds, in percent.

Each cell shows how many seeds stand behind it; a cell of one seed has no std. Methods that do
not depend on the split (centralized) appear with the same value in every split column. A cell
with a run computed by other code than this version's is marked (bench/provenance.py).
"""
from __future__ import annotations

import dataclasses

import pandas as pd

from ..config import NO_SPLIT, RunConfig
from ..methods.dp import NOT_PRIVATE
from ..methods.privacy import RECEIVED, SHARED, Audit, not_audited
from ..methods.registry import registered
from ..provenance import STALE_MARK, STALE_NOTE, is_stale
from ..records import Record, parse_label

# worst_client_accuracy: the accuracy of the client the model serves worst, each client on its
# own label distribution (methods/evaluation.py, per_client); pooled runs have no clients
# membership_auc: the membership-inference attack's AUC on what the method shares
# (methods/privacy.py: each artefact's own, their members-weighted mean); 50 is the attack
# failing, and any value is a lower bound on leakage; FederatedFactory's local-mode rows attack
# the local classifiers that mode sends (the server row: the generative modules);
# membership_auc_received: the same on what every client receives (weight averaging: the
# final global model, where membership_auc attacks each client's returned model);
# membership_excess: membership_auc minus its null control's AUC on the same images
# (methods/privacy.py, excess_over_null): where the null control fails, the one to read
TABLE_METRICS = ("accuracy", "auroc", "worst_client_accuracy", "membership_auc")
# how a table title names a metric (others: by their key)
METRIC_TITLES = {"worst_client_accuracy": "worst-client accuracy (each client on its own "
                                          "label distribution)"}
# metrics of a run rather than of a round: their own title, whatever round or set is shown
RUN_TITLES = {"membership_auc": "membership-inference AUC (%) of what the method shares, as the "
                                "server holds it (50: "
                                "the attack fails; a lower bound on leakage)",
              "membership_tpr": "membership-inference true positives (%) at 1 % false "
                                "positives, of what the method shares (1: the attack fails)",
              "membership_auc_received": "membership-inference AUC (%) of what every client "
                                         "receives (weight averaging: the final global "
                                         "model)",
              "membership_excess": "membership-inference AUC of what the method shares, "
                                   "minus its null control's on the same images (points; 0: "
                                   "no leak beyond what a network that saw neither set reads)"}
MODEL_METRICS = ("accuracy", "balanced_accuracy", "auroc", "f1_macro")
SCALAR_METRICS = (*MODEL_METRICS, "worst_client_accuracy", "p10_client_accuracy",
                  "membership_auc", "membership_tpr", "membership_auc_received",
                  "membership_excess")


def _scalars(m: dict) -> dict:
    """The table's scalar metrics of one entry (test or validation metrics), and the mean
    over clients of their accuracy on their own label distributions (what a personalised
    method is tuned on)."""
    clients = (m.get("per_client") or {}).get("accuracy") or {}
    return {**{k: m.get(k) for k in MODEL_METRICS},
            "worst_client_accuracy": clients.get("worst"),
            "p10_client_accuracy": clients.get("p10"),
            "client_accuracy": clients.get("mean"), "loss": m.get("loss")}


def _settings(config: RunConfig) -> dict:
    """The settings of a run other than its dataset, method, split and seed, flattened."""
    flat = {"resolution": config.resolution, "n_clients": config.n_clients,
            **dataclasses.asdict(config.train),
            **{f"{config.method}.{k}": v for k, v in config.method_params.items()},
            "dp": config.dp.label if config.dp else NOT_PRIVATE}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in flat.items()}


def variant_settings(records: list[Record]) -> list[dict]:
    """The settings of each record that differ between runs of the same dataset and method
    (so that runs of different settings never share a cell); the client count only where it
    differs within a split (silos sets it to the class count, so it differs between splits
    of a dataset whose class count is not 10); and a DP run's DP label (target, level, any DP
    setting not the default) always, so that no table or figure shows a DP run under its
    method's bare name (its runs without DP say "no DP" where DP runs of the method on the
    same dataset, any split, sit beside them)."""
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        c = r.config
        for key in ((c.dataset, c.method), (c.dataset, c.method, c.split)):
            groups.setdefault(key, []).append(_settings(c))
    out = []
    for r in records:
        c = r.config
        mine = _settings(c)
        differing = set()
        for key, keys in (((c.dataset, c.method), set(mine) - {"n_clients"}),
                          ((c.dataset, c.method, c.split), {"n_clients"})):
            settings = groups[key]
            differing |= {k for k in keys if len({s.get(k) for s in settings}) > 1}
        if c.dp:
            differing.add("dp")
        out.append({k: mine.get(k) for k in sorted(differing)})
    return out


def _setting_text(settings: dict) -> str:
    """'lr=0.1, mu=0.01': settings by their short names (a method's without its prefix)."""
    return ", ".join(f"{k.split('.', 1)[-1]}={v}" for k, v in settings.items())


def _suffix(settings: dict) -> str:
    text = _setting_text(settings)
    return f" ({text})" if text else ""


def variant_labels(records: list[Record]) -> list[str]:
    """variant_settings as a suffix of each record's method label."""
    return [_suffix(s) for s in variant_settings(records)]


def selection_metric(record: Record) -> str:
    """What tuning compares on validation for this run: what its method says in the record
    (`extra["tuned_on"]`: a personalised method's `client_accuracy`, each client on its own
    labels, since a global score favours its least personal settings), else the dataset's
    metric (accuracy; ISIC2019's balanced accuracy)."""
    return record.extra.get("tuned_on") or record.dataset_info.get("metric", "accuracy")


# columns of records_frame that tables do not show: what tuning reads
FRAME_ONLY = ["client_accuracy", "loss", "base", "qualifier", "setting", "selection_metric"]
# whether the audit behind a membership metric failed its null control (methods/privacy.py,
# `Audit.null_holds`): a table marks those cells NULL_MARK
NULL_FAILED = {"membership_auc": "shared_null_failed", "membership_tpr": "shared_null_failed",
               "membership_auc_received": "received_null_failed"}
NULL_MARK = "‡"
NULL_NOTE = (f"{NULL_MARK} the audit's null control failed (a network that saw neither set "
             f"separates the same members and non-members): they differ in more than "
             f"membership; read `membership_excess` beside it (docs/protocol.md, \"Membership "
             f"inference\", says how far it goes)")


def records_frame(records: list[Record], which: str = "selected",
                  on: str = "test") -> pd.DataFrame:
    """One row per model of a run (records.label: federatedfactory gives one per downstream
    variant): its identity and its `which` (selected | final) metrics on `on` (test | val).
    Runs of one method with different settings get different method labels; `base` is the
    label without the settings a sweep tunes (all but DP's) and without what the method
    says of the run (`qualifier`), `setting` those settings, `selection_metric` what tunes
    them (`selection_metric` above)."""
    rows = []
    for r, differing in zip(records, variant_settings(records)):
        c = r.config
        stale = is_stale(r)
        # what a method says holds of a run, e.g. DENSE without its L_BN term
        qualifier = f" ({r.extra['qualifier']})" if r.extra.get("qualifier") else ""
        tuned = {k: v for k, v in differing.items() if k != "dp"}
        private = {k: v for k, v in differing.items() if k == "dp"}
        for name, variant, evaluation in r.variants():
            m = getattr(evaluation, which) or {}  # None: diverged before any finite round
            m = m.get("val", {}) if on == "val" else m
            shared = _audit(r, f"{SHARED}/{variant}", fallback=SHARED)
            rows.append({"dataset": c.dataset, "method": name + qualifier + _suffix(differing),
                         "split": c.split, "seed": c.seed, "n_clients": c.n_clients,
                         "run_id": r.run_id, "stale": stale, **_scalars(m),
                         # the epsilon the run spent and its target (methods/dp.py);
                         # None: no DP
                         "epsilon": r.dp.epsilon if r.dp else None,
                         "epsilon_target": r.dp.target_epsilon if r.dp else None,
                         # what the clients share for this model: the run's artefacts, or
                         # what its variant adds (FederatedFactory's local classifiers)
                         "membership_auc": shared.auc,
                         "membership_tpr": shared.tpr_at_1pct_fpr,
                         "membership_auc_received": _audit(r, RECEIVED).auc,
                         "membership_excess": shared.excess_auc,
                         "shared_null_failed": shared.null_holds is False,
                         "received_null_failed": _audit(r, RECEIVED).null_holds is False,
                         "base": name + _suffix(private), "qualifier": qualifier,
                         "setting": _setting_text(tuned), "selection_metric": selection_metric(r)})
    return pd.DataFrame(rows, columns=["dataset", "method", "split", "seed", "n_clients",
                                       "run_id", "stale", "epsilon", "epsilon_target",
                                       *SCALAR_METRICS, *FRAME_ONLY,
                                       *sorted(set(NULL_FAILED.values()))])


TUNED = " (tuned)"  # the method label of a tuned row (bench table --tune)


def _natural(setting: str) -> tuple:
    """'lam=2.0, mu=0.1' as a key that orders numbers by value (lam=2 before lam=10)."""
    parts = [x.partition("=")[2] for x in setting.split(", ")]
    return tuple((0, float(v), "") if _number(v) else (1, 0.0, v) for v in parts)


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def tune_on_validation(records: list[Record], which: str = "selected",
                       on: str = "test") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Where runs of several settings of one method share a dataset and split (a sweep: a
    comma list in --set), keep the setting whose mean validation score over seeds is best
    (`selection_metric`, at each run's `which` round; ties: the lower mean validation loss,
    then the first setting in order of value) and drop the others. Test numbers take no
    part. A setting competes only with every seed of the cell run, finite and computed by
    this code (a seed missing, diverged before any finite round or stale rules it out: a
    partial sweep must not win on its luckiest seed); a cell without such a setting keeps
    every setting as a row of its own. Returns the rows of `on` for the kept runs (a tuned
    method labelled `METHOD (tuned)` in its tuned and single-setting splits, runs at
    different DP targets kept apart) and the choices: dataset, method, split, setting,
    val (%), candidates."""
    shown = records_frame(records, which, on)
    val = records_frame(records, which, "val")
    score = [row[row["selection_metric"]] for row in val.to_dict("records")]
    shown["val_score"] = pd.to_numeric(pd.Series(score, index=shown.index), errors="coerce")
    shown["val_loss"] = pd.to_numeric(val["loss"], errors="coerce").to_numpy()
    keep = pd.Series(True, index=shown.index)
    relabel = pd.Series(False, index=shown.index)
    choices, undecided = [], {}
    groups = shown.groupby(["dataset", "base", "split"], sort=True)
    for (dataset, base, split), group in groups:
        settings = sorted(set(group["setting"]), key=_natural)
        if len(settings) < 2:
            continue
        seeds = set(group["seed"])
        means, losses, notes = {}, {}, {}
        for s in settings:
            rows = group[group["setting"] == s]
            by_seed = rows.groupby("seed")["val_score"].mean()
            if rows["stale"].any():
                notes[s] = "stale, not a candidate"
            elif set(by_seed.index) != seeds or by_seed.isna().any():
                notes[s] = f"{int(by_seed.notna().sum())} of {len(seeds)} seeds, not a candidate"
            else:
                means[s] = float(by_seed.mean())
                loss = rows.groupby("seed")["val_loss"].mean().mean()
                losses[s] = float("inf") if pd.isna(loss) else float(loss)
                notes[s] = f"{100 * means[s]:.1f} (n={len(by_seed)})"
        candidates = "; ".join(f"{s}: {notes[s]}" for s in settings)
        if not means:  # nothing complete to choose from: every setting stays a row of its own
            undecided[(dataset, base, split)] = candidates
            continue
        best = min(means, key=lambda s: (-means[s], losses[s], settings.index(s)))
        keep[group.index] = group["setting"] == best
        relabel[group.index] = True
        tie = [s for s in means if means[s] == means[best] and s != best]
        choices.append({"dataset": dataset, "method": base, "split": split, "setting": best,
                        "val": 100 * means[best],
                        "candidates": candidates + (f" (tied with {', '.join(tie)}: the lower "
                                                    f"validation loss chose)" if tie else "")})
    tuned = {(c["dataset"], c["method"]) for c in choices}
    chosen = {(c["dataset"], c["method"], c["split"]) for c in choices}
    for (dataset, base, split), group in groups:  # a tuned method's other splits
        if (dataset, base) not in tuned or (dataset, base, split) in chosen:
            continue
        if (dataset, base, split) in undecided:
            note = f"no setting complete, every one a row of its own: " \
                   f"{undecided[(dataset, base, split)]}"
            setting = ""
        else:
            note, setting = "the only setting run", group["setting"].iloc[0]
            relabel[group.index] = True
        choices.append({"dataset": dataset, "method": base, "split": split,
                        "setting": setting, "val": float("nan"), "candidates": note})
    out = shown[keep].copy()
    flags = relabel[keep]
    out["method"] = [b + q + TUNED if f else m for b, q, m, f in
                     zip(out["base"], out["qualifier"], out["method"], flags)]
    choices = pd.DataFrame(choices, columns=["dataset", "method", "split", "setting", "val",
                                             "candidates"])
    return out.drop(columns=["val_score", "val_loss"]), choices.sort_values(
        ["dataset", "method", "split"], key=lambda col: col.map(
            lambda v: split_order(v) if col.name == "split" else v), ignore_index=True)


def choices_markdown(choices: pd.DataFrame) -> str:
    """The settings that tuning chose, one line per dataset, method and split."""
    if choices.empty:
        return ""
    lines = ["**Settings chosen on validation** (mean validation score over seeds, %: the "
             "dataset's metric, or each client's accuracy on its own labels for a personalised "
             "method; test numbers take no part)", "",
             "| dataset | method | split | chosen | validation of each setting |",
             "|---|---|---|---|---|"]
    for c in choices.to_dict("records"):
        val = "" if pd.isna(c["val"]) else f" ({c['val']:.1f})"
        lines.append(f"| {c['dataset']} | {c['method']} | {c['split']} | {c['setting']}{val} "
                     f"| {c['candidates']} |")
    return "\n".join(lines) + "\n"


def split_order(split: str) -> tuple:
    """From homogeneous to pathological: iid, dirichlet (alpha descending), classes, silos."""
    name, _, rest = split.partition(":")
    value = float(rest.split("=")[-1]) if "=" in rest else 0.0
    rank = {"iid": 0, "dirichlet": 1, "classes": 2, "silos": 3}.get(name, 4)
    return (rank, -value if name == "dirichlet" else value, split)


def summarise(frame: pd.DataFrame) -> pd.DataFrame:
    """Long summary: dataset, method, split, metric, mean, std, n, stale (any of its runs
    computed by other code; pooled rows broadcast), null_failed (a membership metric: any of
    its runs' audits failed its null control)."""
    flags = sorted(set(NULL_FAILED.values()))
    long = frame.melt(id_vars=["dataset", "method", "split", "seed", "stale", *flags],
                      value_vars=SCALAR_METRICS, var_name="metric").dropna(subset=["value"])
    long["value"] = long["value"].astype(float) * 100
    long["null_failed"] = False
    for metric, flag in NULL_FAILED.items():
        at = long["metric"] == metric
        long.loc[at, "null_failed"] = long.loc[at, flag].astype(bool)
    g = long.groupby(["dataset", "method", "split", "metric"])
    out = g.agg(mean=("value", "mean"), std=("value", "std"), n=("value", "count"),
                stale=("stale", "any"), null_failed=("null_failed", "any")).reset_index()
    pooled = out[out["split"] == NO_SPLIT]
    expanded = [out[out["split"] != NO_SPLIT]]
    for dataset, rows in pooled.groupby("dataset"):
        splits = sorted(set(frame.loc[(frame["dataset"] == dataset)
                                      & (frame["split"] != NO_SPLIT), "split"]))
        for s in splits or [NO_SPLIT]:
            expanded.append(rows.assign(split=s))
    return pd.concat(expanded, ignore_index=True)


def _audit(record: Record, party: str, fallback: str | None = None) -> Audit:
    return record.audit.get(party) or record.audit.get(fallback) or \
        not_audited("not in the record")


def _grids(summary: pd.DataFrame, metrics):
    """(dataset, metric, its rows, methods in registry order, splits from IID to silos)."""
    method_rank = {m: i for i, m in enumerate(registered())}
    for dataset in sorted(summary["dataset"].unique()):
        for metric in metrics:
            part = summary[(summary["dataset"] == dataset) & (summary["metric"] == metric)]
            if part.empty:
                continue
            splits = sorted(part["split"].unique(), key=split_order)
            methods = sorted(part["method"].unique(),
                             key=lambda m: (method_rank.get(parse_label(m)[0], 99), m))
            yield dataset, metric, part, methods, splits


def _cell(mean: float, std: float, n, stale: bool = False, null_failed: bool = False) -> str:
    n = int(n)
    mark = (f" {STALE_MARK}" if stale else "") + (f" {NULL_MARK}" if null_failed else "")
    if n > 1:
        return f"{mean:.1f} ± {std:.1f} (n={n}){mark}"
    return f"{mean:.1f} (n=1){mark}"


def markdown(summary: pd.DataFrame, metrics=TABLE_METRICS, title: str = "test {metric} (%), "
             "validation-selected round") -> str:
    """One Markdown table per dataset and metric: methods x splits."""
    blocks = []
    for dataset, metric, part, methods, splits in _grids(summary, metrics):
        heading = RUN_TITLES.get(metric) or title.format(metric=METRIC_TITLES.get(metric, metric))
        lines = [f"**{dataset}: {heading}, mean ± std over seeds**", "",
                 "| method | " + " | ".join(splits) + " |",
                 "|---|" + "---|" * len(splits)]
        for method in methods:
            cells = []
            for s in splits:
                row = part[(part["method"] == method) & (part["split"] == s)]
                cells.append(_cell(*row[["mean", "std", "n", "stale", "null_failed"]].iloc[0])
                             if len(row) else "")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    note = f"\n{STALE_NOTE}\n" if summary["stale"].any() else ""
    if summary.loc[summary["metric"].isin(metrics), "null_failed"].any():
        note += f"\n{NULL_NOTE}\n"
    return "\n\n".join(blocks) + "\n" + note


def latex(summary: pd.DataFrame, metrics=TABLE_METRICS) -> str:
    """booktabs tables, best mean per column in bold, seeds per cell as a superscript."""
    blocks = []
    for dataset, metric, part, methods, splits in _grids(summary, metrics):
        # the best in bold: the highest, but for leakage the lowest
        best = part.groupby("split")["mean"].agg("min" if metric in RUN_TITLES else "max")
        heading = RUN_TITLES.get(metric) or f"test {METRIC_TITLES.get(metric, metric)} (%)"
        lines = [r"\begin{table}[t]", r"\centering",
                 rf"\caption{{{_tex(dataset)}: {_tex(heading)}, mean $\pm$ std over "
                 r"seeds (superscript: number of seeds).}",
                 r"\begin{tabular}{l" + "c" * len(splits) + "}", r"\toprule",
                 "method & " + " & ".join(_tex(s) for s in splits) + r" \\", r"\midrule"]
        for method in methods:
            cells = []
            for s in splits:
                row = part[(part["method"] == method) & (part["split"] == s)]
                if not len(row):
                    cells.append("--")
                    continue
                mean, std, n = row[["mean", "std", "n"]].iloc[0]
                text = f"{mean:.1f}" + (rf" $\pm$ {std:.1f}" if n > 1 else "")
                if row["stale"].iloc[0]:
                    text += r"$^\dagger$"
                if row["null_failed"].iloc[0]:
                    text += r"$^\ddagger$"
                if abs(mean - best[s]) < 1e-9:
                    text = rf"\textbf{{{text}}}"
                cells.append(f"{text}$^{{{int(n)}}}$")
            lines.append(f"{_tex(method)} & " + " & ".join(cells) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _tex(text: str) -> str:
    return text.replace("_", r"\_").replace("%", r"\%").replace("&", r"\&")


QUALITY_COLUMNS = ("recognised", "real_recognised", "relative", "frechet_ratio", "diversity")


def _percent(v: float | None) -> float | None:
    return None if v is None else 100 * v


def quality_frame(records: list[Record]) -> pd.DataFrame:
    """One row per run of a generative method that stores a sample-quality diagnostic
    (methods/sample_quality.py): how recognisable its synthetic images are, in percent."""
    rows = []
    for r, suffix in zip(records, variant_labels(records)):
        q = r.extra.get("sample_quality")
        if not q or "skipped" in q:
            continue
        c = r.config
        rows.append({"dataset": c.dataset, "method": c.method + suffix, "split": c.split,
                     "seed": c.seed, "recognised": _percent(q["recognisability"]),
                     "real_recognised": _percent(q["reference"]["test_balanced_accuracy"]),
                     "relative": _percent(q["relative"]), "frechet_ratio": q["frechet_ratio"],
                     # records before 2026-11-30 have no diversity
                     "diversity": q.get("diversity"), "useless": bool(q["useless"])})
    return pd.DataFrame(rows, columns=["dataset", "method", "split", "seed", *QUALITY_COLUMNS,
                                       "useless"])


def quality_markdown(frame: pd.DataFrame) -> str:
    """The sample-quality table: mean over seeds of each diagnostic, and how many seeds'
    synthetic sets were useless ('' without such runs)."""
    if frame.empty:
        return ""
    g = frame.groupby(["dataset", "method", "split"], sort=False)
    lines = ["**Sample quality of the synthetic images (reference CNN trained on the real "
             "images; mean over seeds)**", "",
             "| dataset | method | split | recognised (%) | real test recognised (%) | "
             "relative to chance (%) | Frechet ratio synthetic / real | diversity "
             "synthetic / real | useless (runs) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (dataset, method, split), rows in g:
        mean = rows[list(QUALITY_COLUMNS)].astype(float).mean()
        cells = [f"{mean[k]:.1f}" if pd.notna(mean[k]) else "n/a" for k in QUALITY_COLUMNS[:3]]
        cells += [f"{mean[k]:.2f}" if pd.notna(mean[k]) else "n/a" for k in QUALITY_COLUMNS[3:]]
        lines.append(f"| {dataset} | {method} | {split} | {' | '.join(cells)} | "
                     f"{int(rows['useless'].sum())} of {len(rows)} |")
    return "\n".join(lines) + "\n"
