"""`python -m bench estimate`: GPU-hours of a grid per dataset, method and phase, before running it."""
from __future__ import annotations

from . import HELP
from .common import UsageError, grid_options, selected_configs


def add_parser(sub) -> None:
    est = sub.add_parser("estimate", help=HELP["estimate"])
    grid_options(est)
    est.add_argument("--tflops", type=float, default=100.0,
                     help="assumed sustained TFLOP/s of one GPU on these networks (default "
                          "100; see docs/scaling.md)")
    est.add_argument("--gpus", type=int, default=8, help="cluster size for the wall time")


def main(args) -> int:
    import pandas as pd

    from ..estimate import run_costs, summarise

    if args.tflops <= 0 or args.gpus < 1:
        raise UsageError("--tflops must be > 0 and --gpus >= 1")
    configs = selected_configs(args)
    costs = [c for config in configs for c in run_costs(config, args.data_root)]
    table, t = summarise(costs, args.tflops, args.gpus)
    with pd.option_context("display.max_rows", None, "display.width", 200,
                           "display.float_format", "{:,.1f}".format):
        print(table.to_string(index=False))
    print(f"\n{t['runs']} runs, {t['eflop']:,.1f} EFLOP: {t['gpu_hours']:,.0f} GPU-hours at "
          f"{args.tflops:g} TFLOP/s sustained; longest run {t['longest_run_hours']:,.1f} h "
          f"({t['longest_run']}), {t['longest_chain_hours']:,.1f} h with its generators as "
          f"parallel tasks; on {args.gpus} GPUs about {t['wall_hours']:,.0f} h wall")
    print("by phase: " + ", ".join(f"{p} {h:,.0f} h" for p, h in t["by_phase"].items()))
    _print_unit_costs(configs, args)
    return 0


def _print_unit_costs(configs, args) -> None:
    """The unit costs a method states (`Cost.units`) per dataset, beside its authors' logged
    times where known."""
    from ..estimate import unit_costs

    seen = set()
    for config in configs:
        if (config.method, config.dataset) in seen:
            continue
        seen.add((config.method, config.dataset))
        units = unit_costs(config, args.data_root)
        if units:
            print(f"\nunit costs, {config.dataset} ({config.method}, {args.tflops:g} TFLOP/s):")
        for u in units:
            minutes = u.flops / (args.tflops * 1e12) / 60
            line = f"  {u.unit}: {u.what}: {minutes:,.1f} min"
            if u.logged_seconds is not None:
                log = u.logged_seconds
                line += (f"; logged by the authors on {u.logged_on}: {log / 60:,.1f} min "
                         f"(estimate / logged = {minutes * 60 / log:.2f}; the log implies "
                         f"{u.flops / log / 1e12:,.1f} TFLOP/s sustained)")
            print(line)
