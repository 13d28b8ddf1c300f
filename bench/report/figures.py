"""Paper-style figures from stored records only (PNG and PDF).

Every figure uses one colour per method (seaborn's colour-blind palette, the same in every
figure), labelled axes with units, and bands of one standard deviation over seeds.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from ..config import NO_SPLIT  # noqa: E402
from ..datasets.files import atomic_write  # noqa: E402
from ..records import Record, label  # noqa: E402
from .tables import split_order, variant_labels  # noqa: E402

PALETTE = sns.color_palette("colorblind", 10)
PEERS = sns.color_palette("dark", 10)  # the peers (issue 13), darker tones of the same hues
STYLE = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 9,
         "figure.dpi": 100, "savefig.dpi": 200, "savefig.bbox": "tight"}


def _known_labels() -> list[str]:
    """Every registered method's models in registry order (`Capabilities.variants`): the
    order of bars and of colours, the same in every figure."""
    from ..methods.registry import registered

    return [label(name, v) for name, cls in registered().items()
            for v in cls.capabilities.variants]


def spread(mean, std, lo: float = 0.0, hi: float = 100.0) -> np.ndarray:
    """Mean ± std over seeds as error-bar lengths (row 0 below, row 1 above the mean), clipped
    to the metric's range [lo, hi] (%): with few seeds a bounded metric's std reaches past it
    (0, 0 and 30 % read 10 ± 17), and a bar down to -7 % would draw a value no run can have.
    A missing std (one seed) draws no bar."""
    mean = np.asarray(mean, dtype=float)
    std = np.nan_to_num(np.asarray(std, dtype=float))
    # never negative, even for a mean a rounding error outside the range (matplotlib refuses)
    return np.maximum(np.vstack([mean - np.clip(mean - std, lo, hi),
                                 np.clip(mean + std, lo, hi) - mean]), 0.0)


def _reference() -> str | None:
    """The method drawn as the reference line: the first whose result does not depend on the
    split (`Capabilities.uses_split` False: the pooled data)."""
    from ..methods.registry import registered

    return next((n for n, c in registered().items() if not c.capabilities.uses_split), None)


def method_color(method: str):
    """A model's colour, fixed by its place among the registered methods' models (the
    colour-blind palette, then its darker tones); variants of other settings ("fedavg
    (lr=0.1)") share it."""
    base, known = method.split(" (")[0], _known_labels()
    if base not in known:
        return (0.5, 0.5, 0.5)  # a method not registered here: grey
    i = known.index(base) % (len(PALETTE) + len(PEERS))
    return PALETTE[i] if i < len(PALETTE) else PEERS[i - len(PALETTE)]


def _save(fig, path: Path) -> list[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    out = [path.with_suffix(".png"), path.with_suffix(".pdf")]
    for p in out:
        atomic_write(p, lambda f, p=p: fig.savefig(f, format=p.suffix[1:]))
    plt.close(fig)
    return out


def _alpha(split: str) -> float | None:
    name, _, rest = split.partition(":")
    return float(rest.split("=")[-1]) if name == "dirichlet" else None


def heterogeneity(frame: pd.DataFrame, dataset: str, metric: str, path: Path) -> list[Path]:
    """Test metric against Dirichlet alpha (log axis), silos at the left end (alpha -> 0,
    mutually exclusive labels), IID at the right end (alpha -> infinity)."""
    part = frame[frame["dataset"] == dataset].dropna(subset=[metric])
    alphas = sorted({a for a in map(_alpha, part["split"]) if a is not None})
    if not alphas:
        return []
    lo, hi = alphas[0] / 10, alphas[-1] * 10
    position = {"silos": lo, "iid": hi}
    part = part.assign(x=[position.get(s, _alpha(s)) for s in part["split"]])
    reference = _reference()
    ref = part[part["method"] == reference]
    part = part[(part["method"] != reference) & part["x"].notna() & (part["split"] != NO_SPLIT)]
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for method, rows in part.groupby("method", sort=False):
            g = rows.groupby("x")[metric].agg(["mean", "std"]).reset_index().sort_values("x")
            below, above = spread(g["mean"] * 100, g["std"] * 100)
            c = method_color(method)
            ax.plot(g["x"], g["mean"] * 100, marker="o", color=c, label=method)
            ax.fill_between(g["x"], g["mean"] * 100 - below, g["mean"] * 100 + above,
                            color=c, alpha=0.2, linewidth=0)
        if len(ref):
            m, s = ref[metric].mean() * 100, (ref[metric].std() if len(ref) > 1 else 0) * 100
            ax.axhline(m, color="black", linestyle="--", linewidth=1.2,
                       label=f"{reference} (pooled data)")
            (below,), (above,) = spread([m], [s])
            ax.axhspan(m - below, m + above, color="black", alpha=0.08, linewidth=0)
        ax.set_xscale("log")
        ticks = [lo, *alphas, hi]
        ax.set_xticks(ticks)
        ax.set_xticklabels(["silos", *[f"{a:g}" for a in alphas], "IID"])
        ax.minorticks_off()
        ax.set_xlabel("Dirichlet concentration α (label heterogeneity decreases to the right)")
        ax.set_ylabel(f"test {metric.replace('_', ' ')} (%)")
        ax.set_title(f"{dataset}: {metric.replace('_', ' ')} against label heterogeneity")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", frameon=True)
        return _save(fig, path)


def silos_bars(frame: pd.DataFrame, dataset: str, metric: str, path: Path) -> list[Path]:
    part = frame[(frame["dataset"] == dataset) & (frame["split"] == "silos")].dropna(
        subset=[metric])
    reference = _reference()
    ref = frame[(frame["dataset"] == dataset) & (frame["method"] == reference)]
    if part.empty:
        return []
    g = part.groupby("method")[metric].agg(["mean", "std", "count"]).reset_index()
    rank = _known_labels()
    g = g.assign(_rank=[(rank.index(m.split(" (")[0]) if m.split(" (")[0] in rank else 99, m)
                        for m in g["method"]]).sort_values("_rank").drop(columns="_rank")
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(6.4, 3.8))
        ax.bar(range(len(g)), g["mean"] * 100, yerr=spread(g["mean"] * 100, g["std"] * 100),
               capsize=3,
               color=[method_color(m) for m in g["method"]])
        for i, (mean, n) in enumerate(zip(g["mean"], g["count"])):
            ax.text(i, mean * 100 + 1, f"{mean * 100:.1f}\n(n={n})", ha="center", va="bottom",
                    fontsize=8)
        if len(ref):
            ax.axhline(ref[metric].mean() * 100, color="black", linestyle="--", linewidth=1.2,
                       label=f"{reference} (pooled data)")
            ax.legend(loc="upper left")
        ax.set_xticks(range(len(g)))
        ax.set_xticklabels(g["method"], rotation=25, ha="right")
        ax.set_ylim(0, 112)
        ax.set_ylabel(f"test {metric.replace('_', ' ')} (%)")
        ax.set_title(f"{dataset}, silos (one class per client)")
        ax.grid(axis="y", alpha=0.3)
        return _save(fig, path)


def convergence(records: list[Record], dataset: str, split: str, metric: str,
                path: Path) -> list[Path]:
    """Left: validation and test metric per round. Right: test metric against the bytes
    communicated so far (log axis); one-shot methods appear as one point."""
    rows, oneshot = [], []
    # runs of one method with other settings get their own curve, labelled as in the tables
    suffix = dict(zip((r.run_id for r in records), variant_labels(records)))
    for r in records:
        c = r.config
        if c.dataset != dataset or c.split != split:
            continue
        curves = r.curves
        if "bytes_cumulative" in curves:
            for i, rnd in enumerate(curves["round"]):
                for part in ("val", "test"):
                    rows.append({"method": c.method + suffix[r.run_id], "seed": c.seed,
                                 "round": rnd,
                                 "part": part, "value": curves[f"{part}_{metric}"][i],
                                 "bytes": curves["bytes_cumulative"][i]})
        else:  # one-shot methods: one point per model they serve
            for name, v, m in r.variants():
                if r.communication[v].rounds == 1 and m.selected is not None:
                    oneshot.append({"method": name + suffix[r.run_id],
                                    "bytes": r.communication[v].total_bytes,
                                    "value": m.selected[metric]})
    if not rows:
        return []
    df = pd.DataFrame(rows).dropna(subset=["value"])
    df["value"] *= 100
    with plt.rc_context(STYLE):
        fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
        for method, g in df.groupby("method", sort=False):
            c = method_color(method)
            for part, style in (("test", "-"), ("val", ":")):
                s = g[g["part"] == part].groupby("round")["value"].agg(["mean", "std"])
                a.plot(s.index, s["mean"], style, color=c,
                       label=f"{method} ({part})" if part == "test" else None)
                if part == "test":
                    below, above = spread(s["mean"], s["std"])
                    a.fill_between(s.index, s["mean"] - below, s["mean"] + above, color=c,
                                   alpha=0.15, linewidth=0)
            t = g[g["part"] == "test"].groupby("bytes")["value"].mean()
            b.plot(t.index / 1e6, t.values, "-", color=c, label=method)
        if oneshot:  # one star per variant: mean over seeds
            for method, g in pd.DataFrame(oneshot).groupby("method"):
                b.scatter(g["bytes"].mean() / 1e6, g["value"].mean() * 100, marker="*", s=140,
                          color=method_color(method), label=f"{method} (one round)", zorder=3)
        a.set_xlabel("communication round")
        a.set_ylabel(f"{metric.replace('_', ' ')} (%)")
        a.set_title(f"{dataset}, {split}: per round (solid test, dotted validation)")
        b.set_xscale("log")
        b.set_xlabel("bytes communicated, up + down (MB, log scale)")
        b.set_ylabel(f"test {metric.replace('_', ' ')} (%)")
        b.set_title("against communication")
        for ax in (a, b):
            ax.grid(alpha=0.3)
        a.legend(fontsize=8)
        b.legend(fontsize=8)
        return _save(fig, path)


def client_accuracy(records: list[Record], dataset: str, path: Path) -> list[Path]:
    """Who is served: the test accuracy of every client, each on its own label distribution
    (methods/evaluation.py, per_client), at the validation-selected round; one panel per
    split, a box per method over its clients of every seed, each client a dot."""
    suffix = dict(zip((r.run_id for r in records), variant_labels(records)))
    rows = []
    for r in records:
        if r.config.dataset != dataset or r.config.split == NO_SPLIT:
            continue
        for name, _, e in r.variants():
            pc = ((e.selected or {}).get("per_client") or {}).get("accuracy")
            for k, a in enumerate((pc or {}).get("clients", [])):
                if a is not None:
                    rows.append({"method": name + suffix[r.run_id], "split": r.config.split,
                                 "client": k, "accuracy": a * 100})
    if not rows:
        return []
    df = pd.DataFrame(rows)
    splits = sorted(df["split"].unique(), key=split_order)
    methods = list(dict.fromkeys(df["method"]))
    colours = {m: method_color(m) for m in methods}
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(splits), figsize=(3.6 * len(splits) + 1.5,
                                                          0.45 * len(methods) + 1.8),
                                 sharey=True, squeeze=False)
        for ax, split in zip(axes[0], splits):
            g = df[df["split"] == split]
            sns.boxplot(data=g, x="accuracy", y="method", order=methods, hue="method",
                        palette=colours, ax=ax, fliersize=0, linewidth=0.8, legend=False)
            sns.stripplot(data=g, x="accuracy", y="method", order=methods, color="black",
                          size=2, alpha=0.5, ax=ax)
            ax.set_xlim(-2, 102)
            ax.set_xlabel("client's test accuracy (%)")
            ax.set_ylabel("")
            ax.set_title(split)
            ax.grid(axis="x", alpha=0.3)
        fig.suptitle(f"{dataset}: accuracy of each client on its own label distribution "
                     f"(test set reweighted by its training label proportions)")
        return _save(fig, path)


def accuracy_against_leakage(frame: pd.DataFrame, dataset: str, path: Path) -> list[Path]:
    """Test accuracy against the membership-inference AUC of what each method shares
    (methods/privacy.py), mean ± std over seeds, one panel per split: up and to the left is
    better. Methods whose artefacts were not audited are left out."""
    part = frame[(frame["dataset"] == dataset) & (frame["split"] != NO_SPLIT)].dropna(
        subset=["membership_auc", "accuracy"])
    if part.empty:
        return []
    splits = sorted(part["split"].unique(), key=split_order)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(splits), figsize=(4.4 * len(splits) + 3.5, 4.2),
                                 sharey=True, squeeze=False)
        for ax, split in zip(axes[0], splits):
            g = part[part["split"] == split].groupby("method", sort=False)[
                ["membership_auc", "accuracy"]].agg(["mean", "std"])
            for method, row in g.iterrows():
                ax.errorbar(row[("membership_auc", "mean")] * 100,
                            row[("accuracy", "mean")] * 100,
                            xerr=spread([row[("membership_auc", "mean")] * 100],
                                        [row[("membership_auc", "std")] * 100]),
                            yerr=spread([row[("accuracy", "mean")] * 100],
                                        [row[("accuracy", "std")] * 100]),
                            marker="o", capsize=3, color=method_color(method), label=method)
            ax.axvline(50, color="black", linestyle=":", linewidth=1)
            ax.set_xlabel("membership-inference AUC (%), 50: the attack fails")
            ax.set_title(split)
            ax.grid(alpha=0.3)
        axes[0][0].set_ylabel("test accuracy (%)")
        # outside the panels: a legend inside would hide the points under it
        axes[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        fig.subplots_adjust(right=1 - 2.2 / fig.get_figwidth(), top=0.85)
        fig.suptitle(f"{dataset}: accuracy against what the shared artefacts leak "
                     f"(an attack's AUC is a lower bound)")
        return _save(fig, path)


def privacy_panels(part: pd.DataFrame) -> tuple[tuple[str, str], ...]:
    """The privacy figure's panels (metric, axis label): accuracy, worst-client accuracy, the
    membership audit's AUC, and where the records hold it the excess over the audit's null
    control (methods/privacy.py), the one to read where the null fails (PneumoniaMNIST)."""
    panels = (("accuracy", "test accuracy (%)"),
              ("worst_client_accuracy", "worst-client accuracy (%)"),
              ("membership_auc", "membership-inference AUC (%)"))
    if part["membership_excess"].notna().any():
        panels += (("membership_excess", "membership AUC minus its null's (points)"),)
    return panels


def privacy_utility(frame: pd.DataFrame, dataset: str, path: Path) -> list[Path]:
    """Privacy against utility: test accuracy, worst-client accuracy and the membership
    audit's AUC (and its excess over the null control: `privacy_panels`) against each DP
    run's target epsilon (methods/dp.py; the epsilon spent is at most the target: within
    0.01 below it for one mechanism, further below where mechanisms compose, as in
    FederatedFactory's local mode; it differs between seeds), the runs without DP at the
    right ("no DP"), mean ± std over seeds (the bars clipped to the metric's range:
    `spread`); one row of panels per split. Drawn when the dataset has DP runs."""
    part = frame[(frame["dataset"] == dataset) & (frame["split"] != NO_SPLIT)].copy()
    if part.empty or part["epsilon"].isna().all():
        return []
    part["base"] = part["method"].str.split(" (", regex=False).str[0]
    part = part[part["base"].isin(part.loc[part["epsilon"].notna(), "base"])]
    top = float(part["epsilon_target"].max())
    no_dp = top * 3  # where the runs without DP are drawn
    part["x"] = part["epsilon_target"].fillna(no_dp)
    panels = privacy_panels(part)
    splits = sorted(part["split"].unique(), key=split_order)
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(len(splits), len(panels),
                                 figsize=(4.5 * len(panels), 3.6 * len(splits)), squeeze=False)
        for row, split in zip(axes, splits):
            here = part[part["split"] == split]
            for ax, (metric, ylabel) in zip(row, panels):
                for base, runs in here.groupby("base", sort=False):
                    g = runs.groupby("x")[metric].agg(["mean", "std"]).sort_index()
                    if g["mean"].isna().all():
                        continue
                    lo = -100.0 if metric == "membership_excess" else 0.0  # points, or %
                    ax.errorbar(g.index, g["mean"] * 100,
                                yerr=spread(g["mean"] * 100, g["std"] * 100, lo=lo),
                                marker="o", capsize=3, color=method_color(base), label=base)
                if metric in ("membership_auc", "membership_excess"):
                    ax.axhline(50 if metric == "membership_auc" else 0, color="black",
                               linestyle=":", linewidth=1)
                ax.set_xscale("log")
                ticks = sorted(set(part["x"]))
                ax.set_xticks(ticks)
                ax.set_xticklabels(["no DP" if t == no_dp else f"{t:.2g}" for t in ticks])
                ax.minorticks_off()
                ax.set_xlabel("target epsilon (delta as recorded)")
                ax.set_ylabel(ylabel)
                ax.set_title(split)
                ax.grid(alpha=0.3)
        # every method once, whichever split it ran under (not only the first row's)
        handles = {}
        for ax in axes.flat:
            for handle, label in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(label, handle)
        axes[0][-1].legend(handles.values(), handles.keys(), fontsize=8, loc="upper left",
                           bbox_to_anchor=(1.02, 1.0))
        fig.subplots_adjust(right=1 - 1.8 / fig.get_figwidth(), hspace=0.45, wspace=0.38,
                            top=1 - 0.75 / fig.get_figheight())
        fig.suptitle(f"{dataset}: privacy against utility (DP at the level each run records)")
        return _save(fig, path)


def label_distribution(record: Record, path: Path) -> list[Path]:
    counts = np.array(record.split["client_class_counts"])
    names = record.dataset_info["class_names"]
    c = record.config
    with plt.rc_context(STYLE):
        fig, ax = plt.subplots(figsize=(max(5, 0.5 * len(names) + 2),
                                        max(3, 0.35 * len(counts) + 1.5)))
        sns.heatmap(counts, annot=counts.size <= 200, fmt="d", cmap="viridis", ax=ax,
                    xticklabels=names, yticklabels=[str(k) for k in range(len(counts))],
                    cbar_kws={"label": "training images"})
        ax.set_xlabel("class")
        ax.set_ylabel("client")
        ax.set_title(f"{c.dataset}, {c.split}, seed {c.seed}: labels per client")
        return _save(fig, path)


def sample_grid(record: Record, image_path: Path, path: Path) -> list[Path]:
    from PIL import Image

    img = np.asarray(Image.open(image_path))
    names = record.dataset_info["class_names"]
    with plt.rc_context(STYLE):
        h = 0.45 * len(names) + 1
        fig, ax = plt.subplots(figsize=(h * img.shape[1] / img.shape[0] + 1, h))
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
        rows = np.linspace(0, img.shape[0], len(names) + 1)
        ax.set_yticks((rows[:-1] + rows[1:]) / 2)
        ax.set_yticklabels(names)
        ax.set_xticks([img.shape[1] * 0.25, img.shape[1] * 0.75])
        ax.set_xticklabels([f"synthetic ({record.method})", "real (training set)"])
        ax.tick_params(length=0)
        c = record.config
        ax.set_title(f"{c.dataset}, {c.split}, seed {c.seed}: samples per class")
        return _save(fig, path)


def unlearning(record: Record, path: Path) -> list[Path]:
    u = record.unlearning
    names = record.dataset_info["class_names"]
    modes = list(u["modes"])
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(modes), figsize=(5.5 * len(modes), 3.8), squeeze=False)
        x = np.arange(len(names))
        for ax, mode in zip(axes[0], modes):
            m = u["modes"][mode]
            before = [np.nan if v is None else v * 100 for v in m["per_class_before"]]
            after = [np.nan if v is None else v * 100 for v in m["per_class_after"]]
            ax.bar(x - 0.2, before, 0.4, color=PALETTE[0], label="before")
            ax.bar(x + 0.2, after, 0.4, color=PALETTE[1], label="after forgetting")
            for c in u["forgotten_classes"]:
                ax.axvspan(c - 0.5, c + 0.5, color="red", alpha=0.1, linewidth=0)
                if not np.isnan(after[c]):
                    ax.text(c + 0.2, after[c] + 1, f"{after[c]:.0f}", ha="center", fontsize=8)
            ax.set_xticks(x)
            ax.set_xticklabels(names, rotation=45 if max(map(len, names)) > 3 else 0)
            ax.set_xlabel("class (shaded: held by the forgotten clients)")
            ax.set_ylabel("test accuracy of the class (%)")
            ax.set_ylim(0, 105)
            ax.set_title(f"{label(record.method, mode)}: {m['accuracy_before'] * 100:.1f} -> "
                         f"{m['accuracy_after'] * 100:.1f} % overall")
            ax.grid(axis="y", alpha=0.3)
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper center", ncol=2, bbox_to_anchor=(0.5, 0.0))
        c = record.config
        fig.suptitle(f"{c.dataset}, {c.split}: forgetting clients {u['forgotten_clients']}")
        return _save(fig, path)


def sweep(records: list[Record], dataset: str, split: str, path: Path) -> list[Path]:
    """Each method's test accuracy (each of its models, mean +- std over seeds) against each
    numeric setting of its own that the stored runs sweep, the others held at their most
    common values; a panel per (method, setting) with at least three values (the `generator`
    grid's sweep of generator settings, say)."""
    runs = [r for r in records if r.config.dataset == dataset and r.config.split == split
            and not r.config.method_params.get("exclude_clients")]
    panels = []
    for method in sorted({r.method for r in runs}):
        mine = [r for r in runs if r.method == method]
        params = sorted({k for r in mine for k, v in r.config.method_params.items()
                         if isinstance(v, (int, float)) and not isinstance(v, bool)})
        for param in params:
            groups: dict[str, list[Record]] = {}
            for r in mine:
                if param not in r.config.method_params:
                    continue
                rest = {k: v for k, v in r.config.method_params.items() if k != param}
                groups.setdefault(repr(sorted(rest.items())), []).append(r)
            best = max(groups.values(), key=lambda g: len({r.config.method_params[param]
                                                           for r in g}), default=[])
            if len({r.config.method_params[param] for r in best}) >= 3:
                panels.append((method, param, best))
    if not panels:
        return []
    with plt.rc_context(STYLE):
        fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
        for ax, (method, param, group) in zip(axes[0], panels):
            variants = sorted({v for r in group for v in r.metrics.variants})
            for variant in variants:
                # a classifier that diverged before any finite epoch has no selected entry
                rows = [(r.config.method_params[param],
                         r.metrics.variants[variant].selected["accuracy"] * 100)
                        for r in group if variant in r.metrics.variants
                        and r.metrics.variants[variant].selected is not None]
                if not rows:
                    continue
                g = pd.DataFrame(rows, columns=["x", "acc"]).groupby("x")["acc"].agg(
                    ["mean", "std", "count"]).reset_index()
                lo, hi = int(g["count"].min()), int(g["count"].max())
                seeds = lo if lo == hi else f"{lo}-{hi}"
                name = label(method, variant)
                ax.errorbar(g["x"], g["mean"], yerr=spread(g["mean"], g["std"]), marker="o",
                            capsize=3,
                            color=method_color(name), label=f"{name} (seeds: {seeds})")
            xs = sorted({r.config.method_params[param] for r in group})
            if min(xs) > 0:
                ax.set_xscale("log", base=2)
            ax.set_xticks(xs, [f"{x:,}" for x in xs], rotation=30 if len(xs) > 4 else 0)
            ax.minorticks_off()
            ax.set_xlabel(f"{method}.{param}")
            ax.set_ylabel("test accuracy (%)")
            ax.grid(alpha=0.3)
            ax.legend(loc="lower right")
        fig.suptitle(f"{dataset}, {split}: accuracy against the swept settings")
        return _save(fig, path)


def _tag(split: str) -> str:
    """'dirichlet:alpha=0.1' -> 'dirichlet_alpha0p1' (no dots: they would read as a suffix)."""
    return split.replace(":", "_").replace("=", "").replace(".", "p")


def all_figures(records: list[Record], stores, out: Path,
                metrics=("accuracy", "auroc")) -> list[Path]:
    """Every figure the stored records allow, under `out`; `stores`: the RecordStores that
    hold them (a run's images lie beside its record, in the store that holds it)."""
    from ..datasets.registry import folder_name

    from .tables import records_frame

    frame = records_frame(records)
    written: list[Path] = []
    for dataset in sorted(frame["dataset"].unique()):
        name = folder_name(dataset)  # a file name even for `npz:/abs/path.npz`
        for metric in metrics:
            written += heterogeneity(frame, dataset, metric,
                                     out / f"{name}_heterogeneity_{metric}")
            written += silos_bars(frame, dataset, metric, out / f"{name}_silos_{metric}")
        written += client_accuracy(records, dataset, out / f"{name}_clients_accuracy")
        written += accuracy_against_leakage(frame, dataset, out / f"{name}_accuracy_leakage")
        written += privacy_utility(frame, dataset, out / f"{name}_privacy")
        splits = sorted({r.config.split for r in records
                         if r.config.dataset == dataset} - {NO_SPLIT}, key=split_order)
        for split in splits:
            tag = _tag(split)
            written += convergence(records, dataset, split, "accuracy",
                                   out / f"{name}_{tag}_convergence")
            first = next((r for r in sorted(records, key=lambda r: r.config.seed)
                          if r.config.dataset == dataset and r.config.split == split),
                         None)
            if first is not None:
                written += label_distribution(first, out / f"{name}_{tag}_labels")
            written += sweep(records, dataset, split, out / f"{name}_{tag}_sweep")
    for r in records:
        c = r.config
        tag = f"{folder_name(c.dataset)}_{_tag(c.split)}_s{c.seed}"
        samples = r.artifacts.get("samples")
        excluded = c.method_params.get("exclude_clients")
        if samples and not excluded:
            image = next((s.path(c).with_name(samples) for s in stores
                          if s.path(c).exists()), None)
            if image is not None and image.exists():
                written += sample_grid(r, image, out / f"{tag}_{r.method}_samples")
        if r.unlearning is not None:
            written += unlearning(r, out / f"{tag}_unlearning_{r.run_id[:8]}")
    return written
