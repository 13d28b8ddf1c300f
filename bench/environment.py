"""Where a run computed: the machine and library versions it records in `environment`
(information for the reader; what its numbers depend on, torch's version and threads among
them, is `provenance`, bench/provenance.py)."""
from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path

import numpy as np
import torch


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name and family/model numbers (Linux), e.g. "Intel(R) Xeon(R)
    Processor (6/207)", for the record: what a run's bits depend on is its `Numerics`
    (methods/numerics.py), which the pins make independent of the CPU model."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if not sep:
                    break  # the first processor's block ends
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or platform.machine()
    return f"{fields.get('model name', '?')} ({fields.get('cpu family', '?')}/" \
           f"{fields.get('model', '?')})"


def environment(device: torch.device) -> dict:
    from importlib.metadata import version  # not `import sklearn`: a second, for a string

    return {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
        else platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "sklearn": version("scikit-learn"),
        "platform": platform.platform(),
        "git_commit": git_commit(),
    }


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the code that ran, with '+dirty' when the tree had local changes."""
    here = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=here, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return (sha + ("+dirty" if dirty.strip() else "")) if sha else None
