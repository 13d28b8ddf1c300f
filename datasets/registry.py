"""The explicit registry of datasets: name -> facts, loader, files and how to get them.

Registered: `digits` and `photos` (embedded), `cifar10`, `cifar100`, `fashionmnist`
(Fashion-MNIST), `svhn` (SVHN's cropped digits), `isic2019` (Fed-ISIC2019), and every
MedMNIST 2D subset at every size (`bloodmnist`, `bloodmnist_64`, ...). The user's own data is
named on the command line as `npz:PATH` or `folder:PATH` (datasets/userdata.py); its facts are
inferred when it is loaded.
"""
from __future__ import annotations

import hashlib

import functools
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import (cifar10, cifar100, digits, fashion_mnist, isic2019, medmnist, photos, svhn,
               userdata)
from .base import DataError, DatasetInfo, ImageDataset


@dataclass(frozen=True)
class DatasetEntry:
    info: DatasetInfo
    load: Callable[..., ImageDataset]  # load(root=None, download_missing=False)
    how_to_get: str
    files: Callable[[Path], list] = field(default=lambda root: [])  # what must exist
    verify: Callable[[Path], str] | None = None  # checksum status of present files
    family: str = "embedded"


def _medmnist_entries() -> dict[str, DatasetEntry]:
    out = {}
    for flag in medmnist._info_table():
        for size in medmnist.SIZES:
            name = medmnist.dataset_name(flag, size)

            def verify(root, flag=flag, size=size):
                ok = medmnist.md5(medmnist.path(root, flag, size)) == \
                    medmnist.expected_md5(flag, size)
                return "official (md5 ok)" if ok else \
                    "md5 differs from the official archive (a subset or another version)"
            out[name] = DatasetEntry(
                medmnist.info(flag, size), medmnist.make_loader(flag, size),
                f"python -m bench data --download {name}  (or {medmnist.url(flag, size)})",
                files=lambda root, flag=flag, size=size: [medmnist.path(root, flag, size)],
                verify=verify, family="medmnist")
    return out


_FIXED: dict[str, DatasetEntry] = {
    "digits": DatasetEntry(digits.INFO, digits.load, "ships with scikit-learn: nothing to do"),
    "photos": DatasetEntry(photos.INFO, photos.load,
                           "cut from photographs that ship with scikit-image: nothing to do"),
    "cifar10": DatasetEntry(cifar10.INFO, cifar10.load,
                            f"python -m bench data --download cifar10  (or extract "
                            f"{cifar10.URL} into the data root)", files=cifar10.files,
                            family="cifar"),
    "cifar100": DatasetEntry(cifar100.INFO, cifar100.load,
                             f"python -m bench data --download cifar100  (or extract "
                             f"{cifar100.URL} into the data root)", files=cifar100.files,
                             family="cifar"),
    "fashionmnist": DatasetEntry(fashion_mnist.INFO, fashion_mnist.load,
                                 f"python -m bench data --download fashionmnist  (or the four "
                                 f".gz files of {fashion_mnist.URL} in DATA_ROOT/"
                                 f"{fashion_mnist.FOLDER.as_posix()})", files=fashion_mnist.files,
                                 family="mnist"),
    "svhn": DatasetEntry(svhn.INFO, svhn.load,
                         f"python -m bench data --download svhn  (or train_32x32.mat and "
                         f"test_32x32.mat of {svhn.URL} in DATA_ROOT/{svhn.FOLDER})",
                         files=svhn.files, family="svhn"),
    "isic2019": DatasetEntry(isic2019.info(), isic2019.load,
                             f"download the ISIC 2019 training data ({isic2019.URL}) and FLamby's "
                             f"train_test_split into DATA_ROOT/isic2019, then `python -m bench "
                             f"prepare isic2019`",
                             files=lambda root: [isic2019.prepared_path(
                                 root, isic2019.DEFAULT_RESOLUTION)], family="isic"),
}


@functools.lru_cache(maxsize=1)
def all_entries() -> dict[str, DatasetEntry]:
    """Every registered dataset, name -> entry. The MedMNIST entries are made on first use:
    their facts come from the medmnist package, whose import (its evaluator brings pandas
    and scikit-learn's metrics) costs a process seconds that a run on other data need not
    pay."""
    return {**_FIXED, **_medmnist_entries()}


@functools.lru_cache(maxsize=8)
def _user_dataset(name: str) -> ImageDataset:
    return userdata.load_npz(name) if name.startswith("npz:") else userdata.load_folder(name)


def canonical_name(name: str) -> str:
    """The name a config stores: the user's data by its absolute path (so `npz:x.npz` and
    `npz:/abs/x.npz` are one dataset); registered datasets as they are."""
    if not name.startswith(userdata.PREFIXES):
        return name
    kind, _, path = name.partition(":")
    return f"{kind}:{Path(path).expanduser().resolve()}"


def folder_name(name: str) -> str:
    """A short, stable, readable folder name for a dataset's records: the name itself, or for
    the user's data `npz-<file stem>-<8 hex digits of its absolute path>`."""
    if not name.startswith(userdata.PREFIXES):
        return name
    kind, _, path = canonical_name(name).partition(":")
    digest = hashlib.sha256(path.encode()).hexdigest()[:8]
    return f"{kind}-{Path(path).stem}-{digest}"


def loader_file(name: str) -> Path:
    """The source file of the module that loads dataset `name` (its records' fingerprint
    covers that module and the shared ones, not the other datasets')."""
    if name.startswith(userdata.PREFIXES):
        return Path(userdata.__file__).resolve()
    load = get_entry(name).load
    module = sys.modules[getattr(load, "func", load).__module__]
    return Path(module.__file__).resolve()


def get_entry(name: str) -> DatasetEntry:
    if name.startswith(userdata.PREFIXES):
        ds = _user_dataset(name)
        where = Path(name.partition(":")[2]).expanduser()
        return DatasetEntry(ds.info, lambda root=None, download_missing=False: ds,
                            "the user's own files", files=lambda root: [where],
                            family="user")
    if name in _FIXED:
        return _FIXED[name]
    entries = all_entries()
    if name not in entries:
        shown = [n for n in entries if not n.endswith(("_64", "_128", "_224"))]
        raise DataError(f"unknown dataset {name!r}; valid choices: {', '.join(shown)} (MedMNIST "
                        f"also as NAME_64, NAME_128, NAME_224), npz:PATH or folder:PATH")
    return entries[name]


def load_dataset(name: str, root=None, download_missing: bool = False) -> ImageDataset:
    return get_entry(name).load(root, download_missing)
