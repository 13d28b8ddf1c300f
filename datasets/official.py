"""What the loaders of a standard download share (CIFAR-100, Fashion-MNIST, SVHN): find the
official files, downloading them on request, and carve the validation split that none of these
sources has. CIFAR-10's older loader keeps its own copy (datasets/cifar10.py): a loader's
source is part of its runs' fingerprint (methods/provenance.py), and stored CIFAR-10 runs must
not go stale for a refactor.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .base import DataError, DatasetInfo, ImageDataset, stratified_holdout

CARVE_SEED = 20260102  # CIFAR-10's, so every carve of the suite is seeded alike
VAL_FRACTION = 0.10
VAL_SOURCE = f"stratified {VAL_FRACTION:.0%} of the official training set, seed {CARVE_SEED}"


def present(name: str, root, files: Callable[[Path], list[Path]],
            download: Callable[[Path], None], download_missing: bool, how: str) -> Path:
    """The data root, once every file of `files(root)` exists (downloaded first with
    `download_missing`); else a DataError that names the first missing file and how to get
    it: `how` with `{root}` filled in."""
    from .root import data_root

    root = data_root(root)
    missing = [p for p in files(root) if not p.exists()]
    if missing and download_missing:
        download(root)
        missing = [p for p in files(root) if not p.exists()]
    if missing:
        raise DataError(f"{name}: {missing[0]} not found; run `python -m bench data --download "
                        f"{name}` or {how.format(root=root)}")
    return root


def carved(info: DatasetInfo, x: np.ndarray, y: np.ndarray, x_test: np.ndarray,
           y_test: np.ndarray) -> ImageDataset:
    """The dataset with VAL_SOURCE's validation split carved from the official training set;
    the official test set kept."""
    train, val = stratified_holdout(y, VAL_FRACTION, np.random.default_rng(CARVE_SEED))
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    return ImageDataset(info, t(x[train]), t(y[train]), t(x[val]), t(y[val]), t(x_test),
                        t(y_test))
