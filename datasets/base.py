"""The one in-memory dataset type shared by every dataset family.

A dataset is three pairs of tensors, loaded once: uint8 images (N, C, H, W) and int64 labels
for train, validation and test. A client is an index array into the training tensors, never a
copy. Each dataset module states its own facts in a `DatasetInfo`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


class DataError(Exception):
    """Missing, corrupt or unusable data. The message says what to do; the CLI exits 2."""


@dataclass(frozen=True)
class DatasetInfo:
    """Facts a dataset module states about itself (never inferred from its name)."""

    name: str
    class_names: tuple[str, ...]
    channels: int
    resolution: int  # native side length in pixels (images are square)
    metric: str  # the headline metric of this dataset's tables
    augmentation: str  # augmentation family applied to training batches ("none", "cifar", ...)
    citation: str
    licence: str
    val_source: str  # where the validation split comes from (official, or how it was carved)
    test_source: str
    natural_clients: int = 0  # number of natural clients (centers), 0: no natural split

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


@dataclass
class ImageDataset:
    info: DatasetInfo
    x_train: torch.Tensor  # uint8 (N, C, H, W)
    y_train: torch.Tensor  # int64 (N,)
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    groups_train: torch.Tensor | None = None  # natural client (center) of each training image

    def __post_init__(self) -> None:
        for part in ("train", "val", "test"):
            x, y = getattr(self, f"x_{part}"), getattr(self, f"y_{part}")
            if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != self.info.channels:
                raise DataError(
                    f"{self.info.name} {part}: images must be uint8 (N, {self.info.channels}, H, W), "
                    f"got {x.dtype} {tuple(x.shape)}"
                )
            if y.dtype != torch.int64 or y.shape != (x.shape[0],):
                raise DataError(f"{self.info.name} {part}: labels must be int64 ({x.shape[0]},)")
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.info.n_classes):
                raise DataError(
                    f"{self.info.name} {part}: labels outside 0..{self.info.n_classes - 1}"
                )

    @property
    def sizes(self) -> dict[str, int]:
        return {p: len(getattr(self, f"y_{p}")) for p in ("train", "val", "test")}


def class_count(source, train: np.ndarray, val: np.ndarray, test: np.ndarray) -> int:
    """C for labels that are class indices 0..C-1 with every class present in training (and
    val / test labels among them); otherwise a DataError that names the offending values.
    The class count is inferred from the labels, so one mistyped label (1,000,000 among 0/1)
    would otherwise make a million-class model."""
    values, counts = np.unique(train, return_counts=True)
    if not len(values):
        raise DataError(f"{source}: no training labels")
    k = int(values[-1]) + 1
    if k != len(values):
        stray = [(int(v), int(n)) for v, n in zip(values, counts) if v >= len(values)][:5]
        named = ", ".join(f"{v} ({n} image{'s' * (n > 1)})" for v, n in stray)
        raise DataError(f"{source}: train labels must be 0..C-1 with every class present, got "
                        f"{len(values)} distinct labels up to {k - 1}, so {k - len(values)} "
                        f"classes have no training image; labels beyond {len(values) - 1}: "
                        f"{named}; relabel the classes 0..{len(values) - 1} or fix the typo")
    for name, other in (("val", val), ("test", test)):
        unknown = np.setdiff1d(np.unique(other), values)
        if len(unknown):
            raise DataError(f"{source}: {name} labels {unknown[:5].tolist()} are not among "
                            f"the training classes 0..{k - 1}; every class needs training "
                            f"images")
    return k


def stratified_holdout(
    labels: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Split indices into (kept, held_out), holding out `fraction` of every class.

    Each class contributes round(fraction * count) samples (at least one when the class has two
    or more), so rare classes are represented in the held-out part.
    """
    labels = np.asarray(labels)
    kept, held = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n_held = int(round(fraction * len(idx)))
        if len(idx) >= 2:
            n_held = min(max(n_held, 1), len(idx) - 1)
        held.append(idx[:n_held])
        kept.append(idx[n_held:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))
