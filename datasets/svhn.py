"""SVHN, the Street View House Numbers (Netzer et al., 2011), cropped digits: 99,289 colour
images of 32x32 px, 10 classes (the digits 0-9).

Read from the official MATLAB files of the cropped-digit format, `train_32x32.mat` (73,257
images) and `test_32x32.mat` (26,032), with `scipy.io.loadmat`: `X` holds the images as
32 x 32 x 3 x N uint8, `y` the labels as N x 1, with 10 for the digit 0 (mapped to 0 here).
They live in `<data root>/svhn/`, where `python -m bench data --download svhn` puts them
through torchvision; files that torchvision downloaded straight into the data root (its
`SVHN(root)` keeps no folder of its own) are read there too. The `extra` split (531,131
easier images) is not used. The source has no validation split: a stratified 10 % of the
training images is carved with a fixed seed; the official test set is kept.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import DataError, DatasetInfo, ImageDataset
from .official import VAL_SOURCE, carved, present

FOLDER = "svhn"
URL = "http://ufldl.stanford.edu/housenumbers/"
SPLITS = ("train", "test")

INFO = DatasetInfo(
    name="svhn",
    class_names=tuple(str(d) for d in range(10)),
    channels=3,
    resolution=32,
    metric="accuracy",
    augmentation="none",  # digits must not be flipped
    citation="Netzer, Wang, Coates, Bissacco, Wu and Ng, Reading Digits in Natural Images with "
             "Unsupervised Feature Learning, NIPS Workshop on Deep Learning and Unsupervised "
             "Feature Learning, 2011",
    licence="non-commercial use only (the authors' terms)",
    val_source=VAL_SOURCE,
    test_source="official test set (test_32x32.mat)",
)


def _path(root: Path, split: str) -> Path:
    """`<root>/svhn/<split>_32x32.mat`, or `<root>/<split>_32x32.mat` when only that one is
    there (torchvision's own place)."""
    ours, theirs = Path(root) / FOLDER / f"{split}_32x32.mat", Path(root) / f"{split}_32x32.mat"
    return theirs if theirs.exists() and not ours.exists() else ours


def files(root: Path) -> list[Path]:
    return [_path(root, s) for s in SPLITS]


def read_mat(p: Path) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3, 32, 32) uint8 images and int64 labels 0-9 of an official cropped-digit file."""
    from scipy.io import loadmat

    try:
        d = loadmat(p, variable_names=("X", "y"))
    except FileNotFoundError:
        raise
    except Exception as e:  # scipy's readers fail in many types
        raise DataError(f"{p}: not a readable MATLAB file ({type(e).__name__}: {e}); delete it "
                        f"and download again") from None
    for key in ("X", "y"):
        if key not in d:
            raise DataError(f"{p}: no variable {key!r}; expected SVHN's cropped-digit format "
                            f"(X: 32x32x3xN images, y: Nx1 labels)")
    x, y = d["X"], d["y"]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise DataError(f"{p}: X must be uint8 32x32x3xN, got {x.dtype} {x.shape}")
    y = y.reshape(-1)
    if len(y) != x.shape[3]:
        raise DataError(f"{p}: {x.shape[3]} images but {len(y)} labels")
    if len(y) and (y.min() < 1 or y.max() > 10):
        raise DataError(f"{p}: labels must be 1..10 (10: the digit 0), got {y.min()}..{y.max()}")
    y = y.astype(np.int64) % 10  # 10 -> 0
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), y


def download(root: Path) -> None:
    from torchvision.datasets import SVHN

    try:
        for split in SPLITS:
            SVHN(str(Path(root) / FOLDER), split=split, download=True)
    except Exception as e:
        raise DataError(f"svhn: download failed ({type(e).__name__}); fetch train_32x32.mat and "
                        f"test_32x32.mat from {URL} by hand into {Path(root) / FOLDER}") from None


def load(root=None, download_missing: bool = False) -> ImageDataset:
    root = present(INFO.name, root, files, download, download_missing,
                   f"put train_32x32.mat and test_32x32.mat ({URL}) in {{root}}/{FOLDER}")
    (x, y), (x_test, y_test) = (read_mat(p) for p in files(root))
    return carved(INFO, x, y, x_test, y_test)
