import os
from pathlib import Path

import pytest

import bench  # noqa: F401  (first: it pins the CPU numerics before torch loads, as runs do)
import torch  # noqa: E402

from helpers import SHARED_DATA  # noqa: E402

# at most one torch thread per core over the test processes (pytest-xdist's workers, README)
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)
                          // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (it sits beside the clone in CI)")
    return SHARED_DATA


# Under `-n`, pytest-xdist hands each worker whole files (`--dist loadfile`) in collection
# order (`--no-loadscope-reorder`, pyproject.toml). Starting the longest files first balances
# the two workers (longest processing time first); without it, the order of names left one
# worker idle for minutes at the end. Seconds of one worker per file (the 120 longest tests of
# `python -m pytest -q -n 2 --durations=120`, summed per file) on a 2-core AMD EPYC, 2026-12-05
# (docs/findings/measurements.md); files not listed follow, in their own order. Remeasure when
# a file's cost changes by minutes.
LONGEST_FIRST = {
    "test_check_sensitivity.py": 308, "test_federatedfactory.py": 228,
    "test_executors.py": 172, "test_cli.py": 98, "test_checkpoints.py": 91,
    "test_gpu_paths.py": 66, "test_conformance.py": 65, "test_extending.py": 58,
    "test_sample_quality.py": 52, "test_numerics.py": 48, "test_dp_oneshot.py": 39,
    "test_vectorized.py": 37, "test_resume.py": 35, "test_live.py": 32, "test_peers.py": 27,
    "test_provenance.py": 23, "test_privacy.py": 22, "test_dp.py": 14,
}


def pytest_collection_modifyitems(items) -> None:
    items.sort(key=lambda item: -LONGEST_FIRST.get(item.path.name, 0))  # stable: ties keep order
