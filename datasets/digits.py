"""scikit-learn's bundled handwritten digits: the embedded default (ships inside scikit-learn,
no download).

1,797 grey images of 8x8 pixels with 17 intensity levels (0..16), 10 classes. We keep the native
8x8 resolution: upsampling adds no information and costs 4x per training step on a CPU.
Intensities are mapped to uint8 as round(v * 255 / 16).

The source has no train/validation/test split. We carve, with a fixed seed (independent of the
run seed, so every run of every method sees the same test set): a stratified 20 % test set
(359 images), then a stratified 15 % of the remainder as validation (216), leaving 1,222 for
training.
"""
from __future__ import annotations

import numpy as np
import torch

from .base import DatasetInfo, ImageDataset, stratified_holdout

CARVE_SEED = 20260101  # fixed: the test and validation sets never depend on the run seed
TEST_FRACTION = 0.20
VAL_FRACTION = 0.15

INFO = DatasetInfo(
    name="digits",
    class_names=tuple(str(d) for d in range(10)),
    channels=1,
    resolution=8,
    metric="accuracy",
    augmentation="none",  # digits must not be flipped or rotated
    citation="Alpaydin & Kaynak, Optical Recognition of Handwritten Digits, UCI ML Repository (1998)",
    licence="CC BY 4.0 (UCI ML Repository)",
    val_source=f"stratified {VAL_FRACTION:.0%} of the non-test images, seed {CARVE_SEED}",
    test_source=f"stratified {TEST_FRACTION:.0%} of all images, seed {CARVE_SEED}",
)


def carve(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fixed stratified (train, val, test) index arrays into the 1,797 source images."""
    rng = np.random.default_rng(CARVE_SEED)
    rest, test = stratified_holdout(labels, TEST_FRACTION, rng)
    train_pos, val_pos = stratified_holdout(labels[rest], VAL_FRACTION, rng)
    return rest[train_pos], rest[val_pos], test


def load(root=None, download_missing: bool = False) -> ImageDataset:
    """Load the digits; `root` and `download_missing` are accepted for a uniform signature."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # (N, 1, 8, 8)
    labels = bunch.target.astype(np.int64)
    train, val, test = carve(labels)

    def part(idx):
        return torch.from_numpy(images[idx].copy()), torch.from_numpy(labels[idx].copy())

    return ImageDataset(INFO, *part(train), *part(val), *part(test))
