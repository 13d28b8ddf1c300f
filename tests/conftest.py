import os
from pathlib import Path

import pytest

import bench  # noqa: F401  (first: it pins the CPU numerics before torch loads, as runs do)
import torch  # noqa: E402

from helpers import SHARED_DATA  # noqa: E402
# `--cpu-durations N` (tests/cpu_time.py): hooks of conftest's, so imported here
from cpu_time import (pytest_addoption, pytest_configure,  # noqa: E402, F401
                      pytest_runtest_logstart, pytest_runtest_makereport)

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
# worker idle for minutes at the end. CPU seconds per file (`python -m pytest -q -n 2
# --cpu-durations 60`, tests/cpu_time.py: the work a file costs, not the wall seconds that
# the other worker's load inflates) on a 2-core AMD EPYC, 2026-12-05
# (docs/findings/measurements.md); files not listed follow, in their own order. Remeasure when
# a file's cost changes by minutes.
LONGEST_FIRST = {
    "test_check_sensitivity.py": 477, "test_conformance.py": 237,
    "test_federatedfactory.py": 187, "test_cli.py": 158, "test_checkpoints.py": 113,
    "test_executors.py": 105, "test_gpu_paths.py": 96, "test_extending.py": 72,
    "test_sample_quality.py": 68, "test_provenance.py": 63, "test_live.py": 58,
    "test_dp_oneshot.py": 47, "test_resume.py": 38, "test_report.py": 33,
    "test_vectorized.py": 32, "test_numerics.py": 25, "test_privacy.py": 23, "test_edm.py": 18,
    "test_readme.py": 18, "test_dp.py": 17,
}


def pytest_collection_modifyitems(items) -> None:
    items.sort(key=lambda item: -LONGEST_FIRST.get(item.path.name, 0))  # stable: ties keep order
