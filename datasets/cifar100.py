"""CIFAR-100 (Krizhevsky, 2009): 60,000 colour images of 32x32 px, 100 classes (the fine
labels; the 20 coarse superclasses are not used).

Read from the official python archive, extracted as `<data root>/cifar-100-python/` (`train`,
`test`, `meta`), or downloaded through torchvision (`python -m bench data --download
cifar100`). The batches are pickled as CIFAR-10's, with the label key `fine_labels`; they
have a reader of their own, since a loader's source is part of its runs' fingerprint
(methods/provenance.py) and CIFAR-10's stored runs must not go stale. The class names are the official fine label names, in the archive's
(alphabetical) order; when `meta` is present its `fine_label_names` must be the same. The
source has no validation split: a stratified 10 % of the training images (5,000, 50 per
class) is carved with a fixed seed; the official test set is kept.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from .base import DataError, DatasetInfo, ImageDataset
from .official import VAL_SOURCE, carved, present

FOLDER = "cifar-100-python"
URL = "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"
LABEL_KEY = b"fine_labels"

CLASS_NAMES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
    "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom",
    "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle",
    "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)

INFO = DatasetInfo(
    name="cifar100",
    class_names=CLASS_NAMES,
    channels=3,
    resolution=32,
    metric="accuracy",
    augmentation="cifar",
    citation="Krizhevsky, Learning Multiple Layers of Features from Tiny Images, 2009",
    licence="no licence stated by the authors; free for research use",
    val_source=VAL_SOURCE,
    test_source="official test set",
)


def files(root: Path) -> list[Path]:
    return [Path(root) / FOLDER / f for f in ("train", "test")]


def read_batch(p: Path) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3, 32, 32) uint8 images and their fine labels, of one pickled file."""
    try:
        with open(p, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        x = np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        y = np.asarray(d[LABEL_KEY], dtype=np.int64)
    except Exception as e:  # unpickling errors come in many types
        raise DataError(f"{p}: not a CIFAR-100 python file ({type(e).__name__}: {e}); delete "
                        f"the folder and download again") from None
    if len(x) != len(y):
        raise DataError(f"{p}: {len(x)} images but {len(y)} labels")
    if len(y) and not 0 <= y.min() <= y.max() < len(CLASS_NAMES):
        raise DataError(f"{p}: fine labels outside 0..{len(CLASS_NAMES) - 1}; not the official "
                        f"archive")
    return x, y


def check_meta(p: Path) -> None:
    """A DataError unless the `meta` pickle's fine label names are CLASS_NAMES, in order."""
    try:
        with open(p, "rb") as f:
            names = tuple(n.decode() for n in pickle.load(f, encoding="bytes")[
                b"fine_label_names"])
    except Exception as e:  # unpickling errors come in many types
        raise DataError(f"{p}: not a CIFAR-100 meta file ({type(e).__name__}: {e}); delete the "
                        f"folder and download again") from None
    if len(names) != len(CLASS_NAMES):
        raise DataError(f"{p}: {len(names)} fine_label_names, expected the {len(CLASS_NAMES)} "
                        f"official CIFAR-100 names; not the official archive")
    if names != CLASS_NAMES:
        i = next(i for i, (a, b) in enumerate(zip(names, CLASS_NAMES)) if a != b)
        raise DataError(f"{p}: fine_label_names differ from the official CIFAR-100 names (at "
                        f"index {i}: {names[i]!r}, expected {CLASS_NAMES[i]!r}); not the "
                        f"official archive")


def download(root: Path) -> None:
    from torchvision.datasets import CIFAR100

    try:
        CIFAR100(str(root), train=True, download=True)
    except Exception as e:
        raise DataError(f"cifar100: download failed ({type(e).__name__}); fetch {URL} by hand "
                        f"and extract it into {root}") from None


def load(root=None, download_missing: bool = False) -> ImageDataset:
    root = present(INFO.name, root, files, download, download_missing,
                   f"extract {URL} into {{root}}")
    meta = Path(root) / FOLDER / "meta"
    if meta.exists():
        check_meta(meta)
    (x, y), (x_test, y_test) = (read_batch(p) for p in files(root))
    return carved(INFO, x, y, x_test, y_test)
