"""The user's own data, named on the command line, without editing the suite.

- `npz:PATH`: an archive with the MedMNIST keys (`train_images`, `train_labels`, `val_...`,
  `test_...`; images uint8 (N, H, W) or (N, H, W, C), labels integers). `val_*` may be absent:
  a stratified 10 % of train is then carved with a fixed seed.
- `folder:PATH`: an image folder as torchvision's ImageFolder reads it, with `train/`, `test/`
  and optionally `val/`, each holding one sub-folder per class. Images are converted to the
  first image's mode (grey or RGB) and resized to its size when they differ.

Facts are inferred: classes (folder names, or 0..K-1 from the labels), channels and resolution.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .base import DataError, DatasetInfo, ImageDataset, class_count, stratified_holdout
from .medmnist import to_tensors

CARVE_SEED = 20260103
VAL_FRACTION = 0.10
PREFIXES = ("npz:", "folder:")


def _info(name: str, classes, channels: int, resolution: int, val_source: str) -> DatasetInfo:
    return DatasetInfo(name=name, class_names=tuple(classes), channels=channels,
                       resolution=resolution, metric="accuracy", augmentation="none",
                       citation="user data", licence="user data", val_source=val_source,
                       test_source="the user's test split")


def _carve(x, y):
    keep, val = stratified_holdout(y.numpy(), VAL_FRACTION, np.random.default_rng(CARVE_SEED))
    return x[keep], y[keep], x[val], y[val]


def load_npz(name: str) -> ImageDataset:
    p = Path(name.removeprefix("npz:")).expanduser()
    if not p.exists():
        raise DataError(f"{name}: file {p} not found")
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:
        raise DataError(f"{p}: not a readable .npz archive ({type(e).__name__}: {e})") from None
    for key in ("train_images", "train_labels", "test_images", "test_labels"):
        if key not in arrays:
            raise DataError(f"{p}: missing array {key!r}; expected train/test (and optionally "
                            f"val) _images and _labels")
    if ("val_images" in arrays) != ("val_labels" in arrays):
        have, lack = ("val_images", "val_labels") if "val_images" in arrays else (
            "val_labels", "val_images")
        raise DataError(f"{p}: has {have!r} but no {lack!r}; give both, or neither (a "
                        f"stratified {VAL_FRACTION:.0%} of train then becomes validation)")
    xtr, ytr = to_tensors(arrays["train_images"], arrays["train_labels"], p, "train")
    xte, yte = to_tensors(arrays["test_images"], arrays["test_labels"], p, "test")
    if "val_images" in arrays:
        xva, yva = to_tensors(arrays["val_images"], arrays["val_labels"], p, "val")
        source = "the archive's val split"
    else:
        xtr, ytr, xva, yva = _carve(xtr, ytr)
        source = f"stratified {VAL_FRACTION:.0%} of train, seed {CARVE_SEED}"
    if xtr.shape[2] != xtr.shape[3]:
        raise DataError(f"{p}: images must be square (H = W): crop or pad them to one size, "
                        f"got {tuple(xtr.shape[2:])}")
    k = class_count(p, ytr.numpy(), yva.numpy(), yte.numpy())
    info = _info(name, [str(c) for c in range(k)], xtr.shape[1], xtr.shape[2], source)
    return ImageDataset(info, xtr, ytr, xva, yva, xte, yte)


def load_folder(name: str) -> ImageDataset:
    from PIL import Image

    root = Path(name.removeprefix("folder:")).expanduser()
    for part in ("train", "test"):
        if not (root / part).is_dir():
            raise DataError(f"{name}: {root / part} is missing; expected train/, test/ "
                            f"(and optionally val/) with one sub-folder per class")
    classes = sorted(d.name for d in (root / "train").iterdir() if d.is_dir())
    if len(classes) < 2:
        raise DataError(f"{root / 'train'}: needs one sub-folder per class (at least two)")
    first = next((f for f in sorted((root / "train" / classes[0]).iterdir()) if f.is_file()),
                 None)
    if first is None:
        raise DataError(f"{root / 'train' / classes[0]}: no image")
    with Image.open(first) as im:
        mode = "L" if im.mode in ("L", "1", "I", "I;16") else "RGB"
        size = im.size

    def read(part: str):
        xs, ys = [], []
        for c, cls in enumerate(classes):
            folder = root / part / cls
            for f in sorted(folder.iterdir()) if folder.is_dir() else []:
                if not f.is_file():
                    continue
                try:
                    with Image.open(f) as im:
                        arr = np.asarray(im.convert(mode).resize(size))
                except Exception as e:
                    raise DataError(f"{f}: not a readable image ({type(e).__name__})") from None
                xs.append(arr)
                ys.append(c)
        if not xs:
            raise DataError(f"{root / part}: no image found")
        return to_tensors(np.stack(xs), np.array(ys), root, part)

    xtr, ytr = read("train")
    xte, yte = read("test")
    if (root / "val").is_dir():
        xva, yva = read("val")
        source = "the folder's val/"
    else:
        xtr, ytr, xva, yva = _carve(xtr, ytr)
        source = f"stratified {VAL_FRACTION:.0%} of train, seed {CARVE_SEED}"
    if size[0] != size[1]:
        raise DataError(f"{first}: images must be square (H = W): crop or pad them to one "
                        f"size, got {size}")
    if class_count(root, ytr.numpy(), yva.numpy(), yte.numpy()) != len(classes):
        raise DataError(f"{root / 'train' / classes[-1]}: no image; every class needs "
                        f"training images")
    info = _info(name, classes, 1 if mode == "L" else 3, size[0], source)
    return ImageDataset(info, xtr, ytr, xva, yva, xte, yte)
