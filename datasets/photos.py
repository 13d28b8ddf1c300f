"""`photos`: a small real colour set cut from the photographs scikit-image ships (a dependency of
medmnist, so installed with the suite: no download). Eight classes, one per photograph.

What it is: 32 px square crops of eight colour photographs (an astronaut, a cat, a cup of
coffee, the Hubble deep field, an immunohistochemistry slide, a motorcycle, a retina, a
rocket), each crop labelled by the photograph it comes from. Every photograph is cut into a
4 x 4 grid of cells; with a fixed seed two cells hold the test crops, two the validation crops
and the other twelve the training crops, so no test pixel is ever seen in training. A crop is a
square of 60-100 % of its cell's shorter side at a uniform position inside the cell, resized
to 32 px (PIL bicubic, antialiased). 128 training, 32 validation and 64 test crops per class:
1,024 / 256 / 512.

What it is not: an object-recognition benchmark. A class is one scene, so it is told apart by
colour palette and texture as much as by content, and its crops are correlated (they overlap
within a cell). It exists so that colour natural images can be tested and measured on a CPU
without a download; CIFAR-10's numbers must come from CIFAR-10.
"""
from __future__ import annotations

import numpy as np
import torch

from .base import DatasetInfo, ImageDataset

CARVE_SEED = 20261126  # fixed: the crops never depend on the run seed
RESOLUTION = 32
GRID = 4  # cells per side
CELLS = {"test": 2, "val": 2}  # the rest of the GRID x GRID cells are for training
PER_CLASS = {"train": 128, "val": 32, "test": 64}
CROP_FRACTION = (0.6, 1.0)  # crop side / the cell's shorter side
# (class name, scikit-image loader); all are files inside the package (skimage/data)
PHOTOS = (("astronaut", "astronaut"), ("cat", "chelsea"), ("coffee", "coffee"),
          ("hubble", "hubble_deep_field"), ("ihc", "immunohistochemistry"),
          ("motorcycle", "stereo_motorcycle"), ("retina", "retina"), ("rocket", "rocket"))

INFO = DatasetInfo(
    name="photos",
    class_names=tuple(name for name, _ in PHOTOS),
    channels=3,
    resolution=RESOLUTION,
    metric="accuracy",
    augmentation="cifar",  # random crop of the padded image and horizontal flip
    citation="scikit-image's sample images (van der Walt et al., PeerJ 2014); each "
             "photograph's source is in its skimage.data loader's docstring",
    licence="public domain or CC0, except the motorcycle (Middlebury 2014 stereo set, "
            "Scharstein et al., GCPR 2014): see each skimage.data loader's docstring",
    val_source=f"crops of {CELLS['val']} held-out cells of each photograph, seed {CARVE_SEED}",
    test_source=f"crops of {CELLS['test']} other held-out cells of each photograph, seed "
                f"{CARVE_SEED}",
)


def _photograph(loader: str) -> np.ndarray:
    from skimage import data

    image = getattr(data, loader)()
    if loader == "stereo_motorcycle":  # (left, right, disparity): the left view
        image = image[0]
    return np.ascontiguousarray(image[..., :3])


def _crops(image: np.ndarray, cells: list[tuple[int, int]], n: int,
           rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    h, w = image.shape[:2]
    ch, cw = h // GRID, w // GRID
    out = np.empty((n, RESOLUTION, RESOLUTION, 3), dtype=np.uint8)
    for i in range(n):
        row, col = cells[int(rng.integers(len(cells)))]
        side = int(rng.uniform(*CROP_FRACTION) * min(ch, cw))
        top = row * ch + int(rng.integers(ch - side + 1))
        left = col * cw + int(rng.integers(cw - side + 1))
        crop = Image.fromarray(image[top:top + side, left:left + side])
        out[i] = np.asarray(crop.resize((RESOLUTION, RESOLUTION), Image.Resampling.BICUBIC))
    return out


def build(photos=None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{part: (uint8 images (N, 3, 32, 32), int64 labels)} from the photographs (default: the
    scikit-image files; tests pass arrays)."""
    rng = np.random.default_rng(CARVE_SEED)
    images = photos if photos is not None else [_photograph(loader) for _, loader in PHOTOS]
    parts = {p: ([], []) for p in PER_CLASS}
    for label, image in enumerate(images):
        order = rng.permutation(GRID * GRID)
        cells = [divmod(int(i), GRID) for i in order]
        split = {"test": cells[:CELLS["test"]],
                 "val": cells[CELLS["test"]:CELLS["test"] + CELLS["val"]],
                 "train": cells[CELLS["test"] + CELLS["val"]:]}
        for part, n in PER_CLASS.items():
            parts[part][0].append(_crops(image, split[part], n, rng))
            parts[part][1].append(np.full(n, label, dtype=np.int64))
    return {p: (np.concatenate(x).transpose(0, 3, 1, 2).copy(), np.concatenate(y))
            for p, (x, y) in parts.items()}


def load(root=None, download_missing: bool = False) -> ImageDataset:
    """Cut the set (about a second); `root` and `download_missing` are accepted for a uniform
    signature."""
    parts = build()
    tensors = [torch.from_numpy(a) for p in ("train", "val", "test") for a in parts[p]]
    return ImageDataset(INFO, *tensors)
