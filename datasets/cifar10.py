"""CIFAR-10 (Krizhevsky, 2009): 60,000 colour images of 32x32 px, 10 classes.

Read from the official python archive, extracted as `<data root>/cifar-10-batches-py/`
(`data_batch_1..5`, `test_batch`, `batches.meta`), or downloaded through torchvision
(`python -m bench data --download cifar10`). The source has no validation split: a stratified
10 % of the training images (5,000) is carved with a fixed seed; the official test set is kept.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from .base import DataError, DatasetInfo, ImageDataset, stratified_holdout

FOLDER = "cifar-10-batches-py"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CARVE_SEED = 20260102
VAL_FRACTION = 0.10
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]

INFO = DatasetInfo(
    name="cifar10",
    class_names=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck"),
    channels=3,
    resolution=32,
    metric="accuracy",
    augmentation="cifar",
    citation="Krizhevsky, Learning Multiple Layers of Features from Tiny Images, 2009",
    licence="no licence stated by the authors; free for research use",
    val_source=f"stratified {VAL_FRACTION:.0%} of the official training set, seed {CARVE_SEED}",
    test_source="official test batch",
)


def files(root: Path) -> list[Path]:
    return [Path(root) / FOLDER / f for f in (*TRAIN_FILES, "test_batch")]


def _read_batch(p: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(p, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        y = np.asarray(d[b"labels"], dtype=np.int64)
    except FileNotFoundError:
        raise
    except Exception as e:  # unpickling errors come in many types
        raise DataError(f"{p}: not a CIFAR-10 python batch ({type(e).__name__}: {e}); delete "
                        f"the folder and download again") from None
    if len(x) != len(y):
        raise DataError(f"{p}: {len(x)} images but {len(y)} labels")
    return x, y


def download(root: Path) -> None:
    from torchvision.datasets import CIFAR10

    try:
        CIFAR10(str(root), train=True, download=True)
    except Exception as e:
        raise DataError(f"cifar10: download failed ({type(e).__name__}); fetch {URL} by hand and "
                        f"extract it into {root}") from None


def load(root=None, download_missing: bool = False) -> ImageDataset:
    from .root import data_root

    root = data_root(root)
    missing = [p for p in files(root) if not p.exists()]
    if missing and download_missing:
        download(root)
        missing = [p for p in files(root) if not p.exists()]
    if missing:
        raise DataError(f"cifar10: {missing[0]} not found; run `python -m bench data --download "
                        f"cifar10` or extract {URL} into {root}")
    parts = [_read_batch(p) for p in files(root)]
    x = np.concatenate([p[0] for p in parts[:5]])
    y = np.concatenate([p[1] for p in parts[:5]])
    x_test, y_test = parts[5]
    train, val = stratified_holdout(y, VAL_FRACTION, np.random.default_rng(CARVE_SEED))
    t = torch.from_numpy
    return ImageDataset(INFO, t(x[train]), t(y[train]), t(x[val]), t(y[val]), t(x_test),
                        t(y_test))
