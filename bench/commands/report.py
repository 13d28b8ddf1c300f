"""`python -m bench report`: tables as Markdown, CSV and LaTeX, and every figure."""
from __future__ import annotations

from pathlib import Path

from . import HELP
from .common import (UsageError, also_option, csv, joined, out_option, say, stored,
                     warn_useless_samples)


def add_parser(sub) -> None:
    report = sub.add_parser("report", help=HELP["report"])
    report.add_argument("--metrics", type=csv,
                        default=["accuracy", "auroc", "worst_client_accuracy", "membership_auc"],
                        help="metrics of the tables (accuracy, balanced_accuracy, auroc, "
                             "f1_macro, worst_client_accuracy, p10_client_accuracy, "
                             "membership_auc, membership_tpr, membership_auc_received, "
                             "membership_excess)")
    report.add_argument("--tune", action="store_true",
                        help="tables of the setting best on validation where a sweep ran "
                             "several (as `bench table --tune`); figures keep every run")
    out_option(report)
    also_option(report)


def main(args) -> int:
    from ..turns import turns

    with turns(1, hold=True):  # one core, in turn with the machine's other suite processes
        return _report(args)


def _report(args) -> int:
    from ..store import RecordStore
    from ..datasets.files import write_text
    from ..report.figures import all_figures
    from ..report.tables import (
        SCALAR_METRICS,
        choices_markdown,
        latex,
        markdown,
        quality_frame,
        quality_markdown,
        records_frame,
        summarise,
        tune_on_validation,
    )

    bad = [m for m in args.metrics if m not in SCALAR_METRICS]
    if bad:
        raise UsageError(f"--metrics {','.join(bad)}: valid choices: {', '.join(SCALAR_METRICS)}")
    records, _ = stored(args.out, args.also)
    folder = Path(args.out) / "report"
    folder.mkdir(parents=True, exist_ok=True)
    if args.tune:
        frame, choices = tune_on_validation(records)
        chosen = choices_markdown(choices)
        write_text(folder / "tuning.md", chosen or "No cell holds runs of more than one "
                                                   "setting: nothing to tune.\n")
    else:
        frame, chosen = records_frame(records), ""
    summary = summarise(frame)
    write_text(folder / "summary.csv", summary.to_csv(index=False))
    write_text(folder / "tables.md", joined(args.out, args.also) + markdown(
        summary, args.metrics) + (f"\n{chosen}" if chosen else ""))
    write_text(folder / "tables.tex", latex(summary, args.metrics))
    quality = quality_markdown(quality_frame(records))
    if quality:
        write_text(folder / "sample_quality.md", quality)
    stores = [RecordStore(f, warn=say) for f in (args.out, *args.also)]
    figures = all_figures(records, stores, folder / "figures")
    print(markdown(summary, args.metrics) + (f"\n{chosen}" if chosen else "")
          + (f"\n{quality}" if quality else ""))
    warn_useless_samples(records)
    say(f"{len(records)} runs -> {folder}/tables.md, tables.tex, summary.csv"
        f"{', sample_quality.md' if quality else ''}{', tuning.md' if args.tune else ''} and "
        f"{len(figures) // 2} figures (PNG + PDF) in {folder}/figures")
    return 0
