"""Portable CPU numerics: the library switches that make a run compute the same bits on any
x86-64 CPU with AVX2, and the `Numerics` value that says what a run computed with.

On the CPU, float results depend on which kernels the libraries dispatch to, and they choose
by what the CPU offers. On 2026-11-30 each of the three switches below, set alone on an AMD
EPYC (Zen 4, AVX-512), changed every record of the `sensitivity` grid (docs/numerics.md):

- ATen's vectorised kernels run at the CPU's capability (AVX2 or AVX-512: 8- or 16-wide
  reductions). `ATEN_CPU_CAPABILITY=avx2` pins them (PyTorch, `torch.backends.cpu`).
- oneDNN's convolutions choose their kernels by ISA. `ONEDNN_MAX_CPU_ISA=AVX2` pins the ISA.
- MKL's GEMM takes per-CPU code paths, and other ones on non-Intel CPUs. Conditional
  numerical reproducibility `MKL_CBWR=COMPATIBLE` pins them (with a fixed thread count): its
  other branches (`AVX2`, ...) hold on Intel processors only, and on AMD fall back to `AUTO`
  (Intel's oneMKL developer guide). Capping MKL at SSE4.2 with these pins left every record
  bitwise equal.

The pins are environment variables that each library reads once, at its first use, so they
are set before torch is imported: `bench/__init__.py` calls `pin_environment()`, which every
import of the suite runs first, in the command's process and in every joblib or Ray worker.
Measured cost on the default grid: docs/numerics.md.

What the pins do not cover, and so a `Numerics` value names: the torch version, the thread
count, the device type, the architecture, and the per-core L1d/L2 cache sizes (oneDNN's
maintainers guarantee identical results only in the same environment, and its kernels size
their blocking by the caches; oneDNN issue 1443). Off the pinned environment, `bench check`
says so and applies its cross-environment rule (bench/report/check.py).

`FLBENCH_NUMERICS=native` leaves every library its own dispatch (records then say "native").
"""
from __future__ import annotations

import functools
import os
import platform
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

PINS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "COMPATIBLE"}
PINNED = "avx2+mkl-cnr"  # the name of the pinned set, as records carry it
NATIVE = "native"
SWITCH = "FLBENCH_NUMERICS"  # "native": no pins (the libraries' own, fastest dispatch)

# whether the pins were in the environment before torch was imported in this process (None:
# pin_environment never ran)
_pinned_before_torch: bool | None = None


def pin_environment(environ=os.environ) -> None:
    """Set the pins (unless FLBENCH_NUMERICS=native); they take effect only if torch is not
    imported yet, or if the process started with them (a worker inherits them from the
    command's process, or from a Ray job's environment), which `current()` later checks."""
    global _pinned_before_torch
    if environ.get(SWITCH, "").lower() == NATIVE:
        return
    inherited = all(environ.get(k) == v for k, v in PINS.items())
    environ.update(PINS)
    if _pinned_before_torch is None:
        _pinned_before_torch = inherited or "torch" not in sys.modules


@functools.lru_cache(maxsize=1)
def cpu_caches() -> str | None:
    """Per-core L1 data and L2 cache sizes of CPU 0 (Linux), e.g. "L1d 32K, L2 1024K"."""
    sizes = {}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            level, kind = (index / "level").read_text().strip(), (index / "type").read_text()
            size = (index / "size").read_text().strip()
        except OSError:
            continue
        if level == "1" and kind.startswith("Data"):
            sizes["L1d"] = size
        elif level == "2":
            sizes["L2"] = size
    return ", ".join(f"{k} {v}" for k, v in sizes.items()) or None


@dataclass(frozen=True)
class Numerics:
    """What a run's float results depend on beyond its config and code."""

    torch: str
    device_type: str  # cpu | cuda
    threads: int | None  # torch CPU threads (None on an accelerator)
    pins: str  # PINNED, or NATIVE when any pin is not in effect
    cpu_capability: str | None  # ATen's kernel level as torch reports it ("AVX2", ...)
    arch: str  # platform.machine()
    cpu_caches: str | None  # per-core cache sizes: oneDNN sizes its blocking by them

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Numerics":
        return cls(**{k: d.get(k) for k in cls.__dataclass_fields__})

    def for_device(self, device_type: str) -> "Numerics":
        """The same process's numerics for work on `device_type` (a part listed on the CPU
        for a GPU, say)."""
        if device_type == self.device_type:
            return self
        return current(device_type, self.threads if device_type == "cpu" else None)

    def cache_key(self) -> dict:
        """What caches of reusable work (FederatedFactory's generators and samples) key on
        besides settings and code: the device type and, on the CPU, the thread count and the
        pins (a generator trained with 2 threads, or unpinned, differs in rounding from one
        trained with 1: reusing it would make a record depend on what the cache held)."""
        cpu = {"threads": self.threads, "pins": self.pins} if self.device_type == "cpu" \
            else None
        return {"device_type": self.device_type, "cpu_numerics": cpu}

    def differences(self, other: "Numerics") -> list[str]:
        """'field: this -> other' for every field that differs."""
        mine, theirs = self.to_dict(), other.to_dict()
        return [f"{k} {mine[k]} -> {theirs[k]}" for k in mine if mine[k] != theirs[k]]


def pins_in_effect() -> bool:
    """True when the pins were set before torch was imported and torch runs at AVX2."""
    import torch

    return bool(_pinned_before_torch) and all(os.environ.get(k) == v for k, v in PINS.items()) \
        and torch.backends.cpu.get_cpu_capability() == "AVX2"


def current(device_type: str = "cpu", threads: int | None = None) -> Numerics:
    """This process's numerics for work on `device_type` (threads: the run's, default torch's)."""
    import torch

    cpu = device_type == "cpu"
    return Numerics(torch=torch.__version__, device_type=device_type,
                    threads=(threads or torch.get_num_threads()) if cpu else None,
                    pins=PINNED if pins_in_effect() else NATIVE,
                    cpu_capability=torch.backends.cpu.get_cpu_capability(),
                    arch=platform.machine(), cpu_caches=cpu_caches())
