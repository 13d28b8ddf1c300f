"""Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017): 70,000 greyscale images of 28x28 px of
Zalando's articles, 10 classes.

Read from the four official gzipped IDX files (`train-images-idx3-ubyte.gz`,
`train-labels-idx1-ubyte.gz`, `t10k-images-idx3-ubyte.gz`, `t10k-labels-idx1-ubyte.gz`), or
their un-gzipped copies, in `<data root>/FashionMNIST/raw/`: where torchvision puts them
(`python -m bench data --download fashionmnist`), both the .gz files and the un-gzipped ones.
The IDX format is read with numpy here (big-endian header: magic number 2051 for images, 2049
for labels, then the sizes). The source has no validation split: a stratified 10 % of the
training images (6,000) is carved with a fixed seed; the official test set is kept.
"""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from .base import DataError, DatasetInfo, ImageDataset
from .official import VAL_SOURCE, carved, present

FOLDER = Path("FashionMNIST") / "raw"  # torchvision's: <root>/<class name>/raw
URL = "https://github.com/zalandoresearch/fashion-mnist"
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049  # unsigned bytes, 3 and 1 dimensions
# (images, labels) of (train, test), without the .gz
STEMS = (("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))

INFO = DatasetInfo(
    name="fashionmnist",
    class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot"),
    channels=1,
    resolution=28,
    metric="accuracy",
    augmentation="cifar",  # random crop of the padded image and horizontal flip
    citation="Xiao, Rasul and Vollgraf, Fashion-MNIST: a Novel Image Dataset for Benchmarking "
             "Machine Learning Algorithms, arXiv 1708.07747, 2017",
    licence="MIT",
    val_source=VAL_SOURCE,
    test_source="official test set (t10k)",
)


def _path(root: Path, stem: str) -> Path:
    """The .gz file, or the un-gzipped copy when only that one is there."""
    gz, plain = Path(root) / FOLDER / f"{stem}.gz", Path(root) / FOLDER / stem
    return plain if plain.exists() and not gz.exists() else gz


def files(root: Path) -> list[Path]:
    return [_path(root, stem) for pair in STEMS for stem in pair]


def read_idx(p: Path, magic: int) -> np.ndarray:
    """The uint8 array of an IDX file (gzipped when its name ends in .gz), after checking its
    magic number and that its sizes account for every byte."""
    dims = magic % 256
    try:
        with (gzip.open(p, "rb") if p.suffix == ".gz" else open(p, "rb")) as f:
            data = f.read()
    except FileNotFoundError:
        raise
    except (OSError, EOFError, zlib.error) as e:  # a bad gzip stream is an OSError
        raise DataError(f"{p}: not a readable file ({type(e).__name__}: {e}); delete the "
                        f"folder and download again") from None
    got = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if got != magic:
        raise DataError(f"{p}: not an IDX {'image' if dims == 3 else 'label'} file (magic number "
                        f"{got}, expected {magic}); delete the folder and download again")
    header = 4 + 4 * dims
    shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims))
    if len(data) != header + int(np.prod(shape)):
        raise DataError(f"{p}: the header says {shape} ({int(np.prod(shape))} bytes) but "
                        f"{len(data) - header} bytes follow it (truncated?); delete the folder "
                        f"and download again")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape).copy()


def _read_pair(images: Path, labels: Path) -> tuple[np.ndarray, np.ndarray]:
    x, y = read_idx(images, IMAGES_MAGIC), read_idx(labels, LABELS_MAGIC)
    if x.shape[1:] != (28, 28):
        raise DataError(f"{images}: images of {x.shape[1]}x{x.shape[2]} px, expected 28x28")
    if len(x) != len(y):
        raise DataError(f"{images}: {len(x)} images but {labels.name} has {len(y)} labels")
    if len(y) and y.max() >= INFO.n_classes:
        raise DataError(f"{labels}: label {y.max()} outside 0..{INFO.n_classes - 1}")
    return x[:, None], y.astype(np.int64)  # (N, 1, 28, 28)


def download(root: Path) -> None:
    from torchvision.datasets import FashionMNIST

    try:
        FashionMNIST(str(root), train=True, download=True)  # fetches all four files
    except Exception as e:
        raise DataError(f"fashionmnist: download failed ({type(e).__name__}); fetch the four "
                        f".gz files ({URL}) by hand into {Path(root) / FOLDER}") from None


def load(root=None, download_missing: bool = False) -> ImageDataset:
    root = present(INFO.name, root, files, download, download_missing,
                   f"put the four official .gz files ({URL}) in {{root}}/{FOLDER.as_posix()}")
    p = files(root)
    (x, y), (x_test, y_test) = _read_pair(p[0], p[1]), _read_pair(p[2], p[3])
    return carved(INFO, x, y, x_test, y_test)
