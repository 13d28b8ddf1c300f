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
