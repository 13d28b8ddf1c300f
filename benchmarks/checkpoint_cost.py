"""What checkpoints inside a run cost (methods/checkpoints.py; docs/findings/checkpoints.md).

Two measurements, each on this machine, in one process:
1. The default grid's runs with a checkpoint at every round or epoch (`--checkpoint-every 0`,
   the worst case) and at the default interval: the seconds spent saving against each run's
   total, and each checkpoint's size, from the records' own account (`checkpoints`).
2. The paper preset's generator (its UNet, AdamW and EMA at the table's 32 px) trained for a
   few steps at a reduced batch: seconds per step, seconds and bytes per save. At the default
   interval a run saves once per 600 s, so the overhead there is one save's seconds / 600.

    python benchmarks/checkpoint_cost.py --out results-checkpoint-cost   # ~10 min on 2 cores
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench.cli import main as bench  # first: the suite pins torch's numerics before torch loads

import torch  # noqa: E402
from bench.methods.checkpoints import DEFAULT_EVERY, Checkpoint
from bench.methods.federatedfactory.modules import train_module
from bench.methods.federatedfactory.params import PRESETS, FFParams
from bench.store import RecordStore


def grid_cost(out: Path, every: str) -> list[dict]:
    assert bench(["run", "--out", str(out), "--yes", "--checkpoint-every", every]) == 0
    rows = []
    for r in RecordStore(out).all_records():
        c = r.checkpoints
        rows.append({"run": r.config.label, "saves": c["saves"], "seconds": c["save_seconds"],
                     "total": r.timings["total"], "bytes": c["largest_bytes"]})
    return rows


def generator_cost(steps: int, batch: int) -> dict:
    p = FFParams(**{**PRESETS["paper"], "gen_batch_size": batch,
                    "gen_images_seen": steps * batch, "gen_resolution": 32})
    images = torch.rand(64, 1, 32, 32) * 2 - 1
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        train_module(p, images, seed=0)
        plain = time.perf_counter() - t0
        ckpt = Checkpoint(Path(tmp) / "m.ckpt", {"module": "cost"}, every=0)
        t0 = time.perf_counter()
        train_module(p, images, seed=0, checkpoint=ckpt)
        saving = time.perf_counter() - t0
    return {"steps": steps, "batch": batch, "seconds_per_step": plain / steps,
            "seconds_per_save": ckpt.save_seconds / ckpt.saves, "bytes": ckpt.bytes,
            "with_saves_per_step": saving / steps,
            "overhead_at_default_interval": ckpt.save_seconds / ckpt.saves / DEFAULT_EVERY}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    out = Path(args.out)
    print(f"# checkpoint cost, {time.strftime('%Y-%m-%d')}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads\n")
    for every in ("0", f"{DEFAULT_EVERY:g}"):
        rows = grid_cost(out / f"every-{every}", every)
        share = [r["seconds"] / r["total"] for r in rows]
        print(f"default grid, --checkpoint-every {every}: {len(rows)} runs, "
              f"{sum(r['saves'] for r in rows)} saves, "
              f"{sum(r['seconds'] for r in rows):.2f} s saving of "
              f"{sum(r['total'] for r in rows):.0f} s of runs; per run: median "
              f"{100 * statistics.median(share):.2f} %, max {100 * max(share):.2f} %; "
              f"largest checkpoint {max(r['bytes'] for r in rows) / 2**20:.2f} MiB")
    g = generator_cost(args.steps, args.batch)
    print(f"paper-preset generator at 32 px, batch {g['batch']}, {g['steps']} steps: "
          f"{g['seconds_per_step']:.2f} s per step, {g['seconds_per_save']:.2f} s per save "
          f"({g['bytes'] / 2**20:.0f} MiB), one save per {DEFAULT_EVERY:g} s: "
          f"{100 * g['overhead_at_default_interval']:.3f} % overhead")


if __name__ == "__main__":
    main()
