"""The GPU path, proved on a lent GPU in one command (benchmarks/gpu_check.sh), one table out.

1. Throughput and peak memory of the paper preset's generator (its UNet, AdamW and EMA at
   CIFAR-10's 32 px, the preset's batch) and of a ResNet-50 client update (FedAvg's local
   training at 32 px, batch 128), each against what `bench estimate` assumes for a GPU
   (bench/estimate.py: ASSUMED_GPU_TFLOPS) and what the memory guard estimates
   (`peak_memory`).
2. A FederatedFactory run (the embedded digits, so no download) killed with SIGKILL in the
   middle of a generator module and started again: its record against an uninterrupted one.
3. The same run twice: bitwise equal or not, with cuDNN's determinism off (the suite's
   default) and on (`torch.use_deterministic_algorithms`, CUBLAS_WORKSPACE_CONFIG).
4. With two GPUs visible: two runs at once, one per GPU (the executor's plan).

`--dry` runs every step on the CPU at toy sizes (CI runs it, so that the script keeps working
where no GPU is); the numbers it prints then say nothing about a GPU.

    bash benchmarks/gpu_check.sh          # on a GPU machine: under 8 minutes on one H100/H200
    bash benchmarks/gpu_check.sh --dry    # anywhere: the same steps, toy sizes, on the CPU
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench  # noqa: F401  (first: it pins the CPU numerics before torch loads)
import torch  # noqa: E402

from bench.config import parse_overrides, resolve  # noqa: E402
from bench.estimate import ASSUMED_GPU_TFLOPS, peak_memory  # noqa: E402
from bench.methods.cost import classifier_flops  # noqa: E402
from bench.methods.federatedfactory.cost import unet_flops  # noqa: E402
from bench.methods.federatedfactory.modules import train_module  # noqa: E402
from bench.methods.federatedfactory.network import generator_resolution  # noqa: E402
from bench.methods.federatedfactory.params import FFParams  # noqa: E402
from bench.store import RecordStore  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# a FederatedFactory run of a few minutes on a GPU (seconds with --dry): its generators are the
# paper preset's network at the digits' size
RUN = ["--datasets", "digits", "--methods", "federatedfactory", "--splits", "silos",
       "--set", "federatedfactory.preset=paper", "--set", "federatedfactory.samples_per_class=64",
       "--set", "federatedfactory.classifier_epochs=2", "--set", "federatedfactory.modes=server"]
DRY = ["--set", "federatedfactory.gen_images_seen=48", "--set",
       "federatedfactory.gen_batch_size=16", "--set", "federatedfactory.sampler_steps=2",
       "--set", "federatedfactory.samples_per_class=4", "--set", "batch_size=16",
       "--set", "federatedfactory.classifier_epochs=1",
       "--set", "federatedfactory.preset=cpu", "--set", "federatedfactory.min_class_samples=1"]
WET = ["--set", "federatedfactory.gen_images_seen=200000"]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak(device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


def throughput(device, dry: bool) -> list[dict]:
    rows = []
    cfg = resolve("cifar10", "federatedfactory", "silos", 0)
    p = FFParams(**{**cfg.method_params, **({"gen_batch_size": 2} if dry else {})})
    steps = 2 if dry else 40
    res = generator_resolution(p, 32)
    x = torch.rand(max(p.gen_batch_size, 64), 3, res, res, device=device) * 2 - 1
    for n in (1, steps):  # the first call pays for allocation and kernel selection
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        t0 = time.perf_counter()
        train_module(FFParams(**{**p.__dict__, "gen_images_seen": n * p.gen_batch_size}), x, 0)
        sync(device)
        seconds = time.perf_counter() - t0
    flops = unet_flops(p, 3, res, True) * steps * p.gen_batch_size
    rows.append({"what": f"paper generator, 32 px, batch {p.gen_batch_size}",
                 "rate": f"{steps / seconds:.2f} steps/s, {steps * p.gen_batch_size / seconds:,.0f} img/s",
                 "vs estimate": f"{flops / seconds / 1e12 / ASSUMED_GPU_TFLOPS:.2f}x",
                 "peak GiB": f"{peak(device):.1f}",
                 "guard GiB": f"{peak_memory(cfg).bytes / 2**30:.1f}"})

    from bench.methods.models import build_model

    batch = 8 if dry else 128
    model = build_model("resnet50", 3, 10, 32, "group").to(device).to(
        memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    xb = torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    yb = torch.randint(0, 10, (batch,), device=device)
    steps = 2 if dry else 50
    for n in (1, steps):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        t0 = time.perf_counter()
        for _ in range(n):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = torch.nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sync(device)
        seconds = time.perf_counter() - t0
    fedavg = resolve("cifar10", "fedavg", "silos", 0)
    flops = classifier_flops("resnet50", 3, 10, 32, fedavg.train.norm, True) * steps * batch
    rows.append({"what": f"ResNet-50 client update, 32 px, batch {batch}",
                 "rate": f"{steps * batch / seconds:,.0f} img/s",
                 "vs estimate": f"{flops / seconds / 1e12 / ASSUMED_GPU_TFLOPS:.2f}x",
                 "peak GiB": f"{peak(device):.1f}",
                 "guard GiB": f"{peak_memory(fedavg).bytes / 2**30:.1f}"})
    return rows


def bench_run(out: Path, device: str, args: list[str], env=None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "bench", "run", "--out", str(out), "--device", device, "--yes",
           "--executor", "sequential", "--checkpoint-every", "0", *args]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **(env or {})})


def record_of(out: Path) -> dict:
    (r,) = RecordStore(out).all_records()
    d = r.to_dict()
    return {k: d[k] for k in ("metrics", "curves")}


def largest_difference(a, b) -> float:
    """The largest absolute difference between the numbers of two equal-shaped JSON trees."""
    if isinstance(a, dict):
        return max([largest_difference(a[k], b.get(k)) for k in a] or [0.0])
    if isinstance(a, list):
        return max([largest_difference(x, y) for x, y in zip(a, b)] or [0.0])
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b)
    return 0.0 if a == b else float("inf")


def kill_and_resume(device: str, args: list[str], tmp: Path) -> tuple[dict, Path]:
    reference = tmp / "reference"
    assert bench_run(reference, device, args).wait() == 0
    out = tmp / "killed"
    proc = bench_run(out, device, args)
    deadline, at = time.monotonic() + 300, None
    while at is None:
        assert proc.poll() is None and time.monotonic() < deadline, "no module checkpoint"
        for f in out.rglob("*.ckpt/module.pt"):
            try:
                at = torch.load(f, map_location="cpu", weights_only=False)["at"]
            except Exception:  # noqa: BLE001 - being written: the next poll reads it
                pass
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed = bench_run(out, device, args)
    assert resumed.wait() == 0, resumed.stderr.read()
    diff = largest_difference(record_of(reference), record_of(out))
    return {"what": "killed mid-generator, resumed", "rate": f"killed after module {at}",
            "vs estimate": "", "peak GiB": "",
            "guard GiB": f"largest difference {diff:.2e}" + (" (bitwise)" if diff == 0 else "")
            }, reference


def twice(device: str, args: list[str], tmp: Path, deterministic: bool,
          first: Path | None = None) -> dict:
    """The same run twice (`first`: an earlier computation of it, with the same switches)."""
    env = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8", "FLBENCH_DETERMINISTIC": "1"} \
        if deterministic else {}
    outs = [record_of(first)] if first is not None else []
    for i in range(2 - len(outs)):
        out = tmp / f"twice-{deterministic}-{i}"
        proc = bench_run(out, device, args, env)
        assert proc.wait() == 0, proc.stderr.read()
        outs.append(record_of(out))
    diff = largest_difference(*outs)
    return {"what": f"same run twice, deterministic algorithms {'on' if deterministic else 'off'}",
            "rate": "bitwise equal" if diff == 0 else f"differs by up to {diff:.2e}",
            "vs estimate": "", "peak GiB": "", "guard GiB": ""}


def two_gpus(args: list[str], tmp: Path) -> dict:
    out = tmp / "two"
    cmd = [sys.executable, "-m", "bench", "run", "--out", str(out), "--device", "cuda", "--yes",
           "--seeds", "0-1", *args]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    plan = re.search(r"\((joblib[^)]*\))", proc.stderr)
    devices = sorted({r.environment.get("device_name", "?") + " " + str(r.environment.get("device"))
                      for r in RecordStore(out).all_records()})
    return {"what": "two runs on two GPUs", "rate": f"{time.perf_counter() - t0:.0f} s",
            "vs estimate": "", "peak GiB": "",
            "guard GiB": f"{plan.group(1) if plan else proc.stderr[-200:]}; {devices}"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry", action="store_true", help="toy sizes on the CPU")
    args = parser.parse_args()
    if not args.dry and not torch.cuda.is_available():
        print("gpu_check: no GPU visible here; run with --dry to try the steps on the CPU",
              file=sys.stderr)
        return 2
    device = torch.device("cpu" if args.dry else "cuda")
    run_args = RUN + (DRY if args.dry else WET)
    rows = throughput(device, args.dry)
    with tempfile.TemporaryDirectory() as tmp:
        row, reference = kill_and_resume(device.type, run_args, Path(tmp))
        rows.append(row)
        rows.append(twice(device.type, run_args, Path(tmp), False, first=reference))
        if device.type == "cuda":
            rows.append(twice(device.type, run_args, Path(tmp), deterministic=True))
        if device.type == "cuda" and torch.cuda.device_count() > 1:
            rows.append(two_gpus(run_args, Path(tmp)))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (--dry)"
    print(f"\n{name}, torch {torch.__version__}, {time.strftime('%Y-%m-%d')}")
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(str(r[k]) for k in keys) + " |")
    print(json.dumps(rows), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
