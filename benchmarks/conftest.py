"""Benchmark report: with --benchmark-json PATH, also write PATH with .md, a readable summary
(machine, rates, the harness overhead and the generator-training gap), from the same numbers."""
from __future__ import annotations

import os
from pathlib import Path

import bench  # noqa: F401  (first: it pins the CPU numerics before torch loads, as runs do)
import torch  # noqa: E402

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
    lines += _contention(rows) + _flower(rows)
    return "\n".join(lines) + "\n"


def _contention(rows: dict) -> list[str]:
    """Two processes at once against one alone, per kind of worker, before turns and with."""
    out = []
    for kind, key in (("step", "ms_per_step"), ("command", "s_per_command")):
        def value(setting, n):
            row = rows.get(f"test_two_processes[{kind}-{setting}-{n}]")
            return row["extra_info"][key] if row else None

        before, alone = value("before", 1), value("turns", 1)
        if before and alone:
            ratio = alone / before - 1
            out.append(f"| {kind}, one process alone: turns vs before ({alone:.2f} / "
                       f"{before:.2f} {key}) | {ratio:+.1%} | < 10% "
                       f"({'met' if ratio < 0.1 else 'NOT met'}) |")
        for setting in ("before", "turns"):
            one, two = value(setting, 1), value(setting, 2)
            if one and two:
                ratio = two / one
                goal = "" if setting == "before" else \
                    f"<= 2.2x ({'met' if ratio <= 2.2 else 'NOT met'})"
                out.append(f"| {kind}, {setting}: two processes at once vs one alone "
                           f"({two:.2f} / {one:.2f} {key}) | {ratio:.2f}x | {goal} |")
    return out


def _flower(rows: dict) -> list[str]:
    """Flower's simulation engine against the suite on the same FedAvg job (flower.py)."""
    suite = rows.get("test_fedavg_job[suite]")
    out = []
    for side in ("flower-1cpu", "flower-2cpu"):
        other = rows.get(f"test_fedavg_job[{side}]")
        if not (suite and other):
            continue
        a, b = suite["extra_info"], other["extra_info"]
        for what, key, unit in (("job wall time", "job_s", "s"),
                                ("whole command", "process_s", "s"),
                                ("peak RSS summed over processes", "peak_rss_bytes", "GB"),
                                ("peak PSS summed over processes", "peak_pss_bytes", "GB")):
            scale = 1e9 if unit == "GB" else 1
            out.append(f"| {side} vs suite, {what} ({b[key] / scale:.2f} / "
                       f"{a[key] / scale:.2f} {unit}) | {b[key] / a[key]:.2f}x | |")
    return out
