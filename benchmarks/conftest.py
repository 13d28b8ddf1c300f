"""Benchmark report: with --benchmark-json PATH, also write PATH with .md, a readable summary
(machine, rates, the harness overhead and the generator-training gap), from the same numbers."""
from __future__ import annotations

import os
from pathlib import Path

import torch

# (group, measured benchmark, its bare baseline, goal): overhead = median / baseline - 1
PAIRS = [
    ("harness overhead", "test_harness_fedavg_rounds", "test_bare_fedavg_rounds", 0.10),
    ("generator training", "test_generator_training_harness[8]",
     "test_generator_training_bare[8]", 0.10),
    ("generator training", "test_generator_training_harness[32]",
     "test_generator_training_bare[32]", 0.10),
    ("default grid", "test_default_grid[joblib-2]", "test_default_grid[sequential]", None),
]


def pytest_benchmark_update_json(config, benchmarks, output_json):
    info = output_json["machine_info"]
    info["torch"] = torch.__version__
    info["torch_threads"] = torch.get_num_threads()
    info["cores_available"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else os.cpu_count()
    info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    path = config.getoption("benchmark_json")
    if path is not None:
        Path(path).with_suffix(".md").write_text(markdown(output_json))


def markdown(report: dict) -> str:
    m, c = report["machine_info"], report.get("commit_info", {})
    rows = {b["name"]: b for b in report["benchmarks"]}
    lines = [
        f"# Benchmarks: {m.get('gpu') or m.get('cpu', {}).get('brand_raw', m['processor'])}",
        "",
        f"- machine: {m.get('cores_available')} cores available, GPU: {m.get('gpu') or 'none'}, "
        f"{m['system']} {m['release']}, Python {m['python_version']}, torch {m['torch']} "
        f"({m['torch_threads']} threads)",
        f"- commit: {c.get('id', '?')}{' (dirty)' if c.get('dirty') else ''}, "
        f"{report['datetime'][:19]} UTC",
        "- medians over the measured calls (one warm-up call first); rate = items / median",
        "",
        "| group | benchmark | median (s) | IQR (s) | calls | items | rate |",
        "|---|---|---|---|---|---|---|",
    ]
    for b in report["benchmarks"]:
        s, x = b["stats"], b["extra_info"]
        rate = f"{x['items'] / s['median']:.3g} {x['unit']}/s" if "items" in x else ""
        lines.append(f"| {b['group']} | {b['name'].removeprefix('test_')} | {s['median']:.3f} "
                     f"| {s['iqr']:.3f} | {s['rounds']} | {x.get('items', '')} | {rate} |")
    lines += ["", "| comparison | measured / baseline - 1 | goal |", "|---|---|---|"]
    for group, name, base, goal in PAIRS:
        if name in rows and base in rows:
            ratio = rows[name]["stats"]["median"] / rows[base]["stats"]["median"] - 1
            verdict = "" if goal is None else (" (met)" if ratio < goal else " (NOT met)")
            lines.append(f"| {name.removeprefix('test_')} vs {base.removeprefix('test_')} "
                         f"| {ratio:+.1%} | {'' if goal is None else f'< {goal:.0%}'}{verdict} |")
    harness = rows.get("test_harness_fedavg_rounds")
    if harness and "test_bare_fedavg_rounds" in rows:
        bare = rows["test_bare_fedavg_rounds"]["stats"]["median"]
        overhead = (harness["stats"]["median"] - harness["extra_info"]["eval_seconds"]) / bare - 1
        verdict = "met" if overhead < 0.1 else "NOT met"
        lines.append(f"| harness without its per-round evaluation vs bare "
                     f"| {overhead:+.1%} | < 10% ({verdict}) |")
    alone = rows.get("test_training_step_processes[1]")
    pair = rows.get("test_training_step_processes[2]")
    if alone and pair:
        ratio = pair["extra_info"]["ms_per_step"] / alone["extra_info"]["ms_per_step"]
        verdict = "met" if ratio <= 2.2 else "NOT met"
        lines.append(f"| training step, two processes at once vs one alone (ms per step: "
                     f"{pair['extra_info']['ms_per_step']:.2f} / "
                     f"{alone['extra_info']['ms_per_step']:.2f}) | {ratio:.2f}x | <= 2.2x "
                     f"({verdict}) |")
    return "\n".join(lines) + "\n"
