"""The explicit registry of datasets: name -> (facts, loader)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import digits
from .base import DataError, DatasetInfo, ImageDataset


@dataclass(frozen=True)
class DatasetEntry:
    info: DatasetInfo
    load: Callable[..., ImageDataset]  # load(root) -> ImageDataset


DATASETS: dict[str, DatasetEntry] = {
    "digits": DatasetEntry(digits.INFO, digits.load),
}


def get_entry(name: str) -> DatasetEntry:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; valid choices: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def load_dataset(name: str, root=None) -> ImageDataset:
    return get_entry(name).load(root)
