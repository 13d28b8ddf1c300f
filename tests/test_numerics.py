"""Portable numerics (methods/numerics.py): with the pins, a run computes the same bits
whatever instruction sets the CPU offers; without them it does not.

A CPU that offers less is emulated by capping each library's dispatch in the environment of a
fresh `python -m bench run` process: ATen at AVX2 (`ATEN_CPU_CAPABILITY`), oneDNN at AVX2
(`ONEDNN_MAX_CPU_ISA`) and MKL at AVX2 (`MKL_ENABLE_INSTRUCTIONS`), as an AVX2-only CPU
would dispatch. The records of a small grid that uses every kernel family of the
suite (convolutions, GEMMs, GroupNorm, the diffusion UNet, the sampler) must be bitwise equal
to the uncapped ones. The planted regression: the same comparison without the pins
(FLBENCH_NUMERICS=native) must find differences, on a CPU with more than AVX2 to cap.
"""
import hashlib
import json
import os
import subprocess
import sys

import pytest
import torch

from bench.methods import numerics
from bench.store import RecordStore

GRID = ["--methods", "fedavg,scaffold,federatedfactory", "--splits", "silos",
        "--set", "rounds=3", "--set", "local_epochs=1",
        "--set", "federatedfactory.gen_images_seen=256",
        "--set", "federatedfactory.samples_per_class=16",
        "--set", "federatedfactory.sampler_steps=3",
        "--set", "federatedfactory.classifier_epochs=2",
        # two generator modules (the UNet's kernels), not ten
        "--set", "federatedfactory.exclude_clients=2,3,4,5,6,7,8,9", "--threads", "1",
        "--executor", "sequential"]
# (MKL capped further, at SSE4.2, gave the same bits on the sensitivity grid: docs/numerics.md)
CAPS = {"AVX2-only CPU": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                          "MKL_ENABLE_INSTRUCTIONS": "AVX2"}}
LIBRARY_SWITCHES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS",
                    "MKL_CBWR", numerics.SWITCH)


def record_digest(record) -> str:
    """Everything a run computed (metrics, curves, the classifiers' and synthetic sets'
    fingerprints), not when or where: no timings, no cache hits."""
    extra = json.loads(json.dumps(record.extra))
    for module in extra.get("modules", []):
        module.pop("cache", None)
    body = {"metrics": record.metrics.to_dict(), "curves": record.curves, "extra": extra,
            "split": record.split}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _grid(out, **env) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if k not in LIBRARY_SWITCHES}
    subprocess.run([sys.executable, "-m", "bench", "run", *GRID, "--out", str(out)],
                   env={**clean, **env}, check=True, capture_output=True, timeout=600)
    digests = {}
    for path in sorted(out.glob("runs/*/*/*.json")):
        record = RecordStore.read(path)
        digests[record.method] = record_digest(record)
        assert record.provenance.numerics.pins == (
            numerics.NATIVE if env.get(numerics.SWITCH) else numerics.PINNED)
    assert len(digests) == 3
    return digests


def _native_capability() -> str:
    out = subprocess.run([sys.executable, "-c", "import torch; "
                          "print(torch.backends.cpu.get_cpu_capability())"],
                         env={k: v for k, v in os.environ.items() if k not in LIBRARY_SWITCHES},
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_the_suites_processes_compute_with_the_pins():
    n = numerics.current("cpu")
    if n.cpu_capability not in ("AVX2",):
        pytest.skip(f"this CPU runs ATen at {n.cpu_capability}: the pins need AVX2")
    assert n.pins == numerics.PINNED
    assert all(os.environ[k] == v for k, v in numerics.PINS.items())


@pytest.mark.slow
def test_pinned_records_do_not_depend_on_what_the_cpu_offers(tmp_path):
    uncapped = _grid(tmp_path / "uncapped")
    for name, caps in CAPS.items():
        assert _grid(tmp_path / name.replace(" ", "_"), **caps) == uncapped, name


@pytest.mark.slow
def test_without_the_pins_capping_the_cpu_changes_the_records(tmp_path):
    """The planted regression: the capping test above would catch a lost pin."""
    if _native_capability() == "AVX2":
        pytest.skip("this CPU offers AVX2 at most: capping it at AVX2 changes nothing")
    native = {numerics.SWITCH: numerics.NATIVE}
    uncapped = _grid(tmp_path / "uncapped", **native)
    capped = _grid(tmp_path / "capped", **native, **CAPS["AVX2-only CPU"])
    assert capped != uncapped


def test_numerics_name_what_the_pins_do_not_cover():
    here = numerics.current("cpu", threads=1)
    other = numerics.Numerics.from_dict({**here.to_dict(), "threads": 2, "torch": "2.99.0"})
    assert here.differences(other) == [f"torch {here.torch} -> 2.99.0", "threads 1 -> 2"]
    assert numerics.current("cuda").threads is None
    assert torch.get_num_threads() >= 1
