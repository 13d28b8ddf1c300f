import os
from pathlib import Path

import pytest

import bench  # noqa: F401  (first: it pins the CPU numerics before torch loads, as runs do)
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"

# at most one torch thread per core over the test processes (pytest-xdist's workers, README)
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)
                          // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))))


def tiny_overrides(rounds: int = 2, local_epochs: int = 1) -> list[str]:
    """--set values that make a digits run take about a second."""
    return ["--set", f"rounds={rounds}", "--set", f"local_epochs={local_epochs}"]


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (it sits beside the clone in CI)")
    return SHARED_DATA
