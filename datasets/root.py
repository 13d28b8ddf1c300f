"""Where datasets live: one data root for all of them."""
from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "BENCH_DATA"
DEFAULT_ROOT = Path("~/.cache/flbench/data")


def data_root(given: str | os.PathLike | None = None) -> Path:
    """`given` (the --data-root option), else $BENCH_DATA, else ~/.cache/flbench/data."""
    if given:
        return Path(given).expanduser()
    env = os.environ.get(DATA_ENV)
    return Path(env).expanduser() if env else DEFAULT_ROOT.expanduser()
