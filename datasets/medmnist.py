"""MedMNIST v2, every 2D subset at every size the package offers (28, 64, 128, 224 px).

Facts (class names, channels, splits, licence) come from the `medmnist` package's own
metadata (`medmnist.INFO`). Files are the official `.npz` archives, named as the package names
them, in `<data root>/medmnist/`: `bloodmnist.npz` (28 px), `bloodmnist_64.npz`, ... They are
read with numpy directly, so a subset archive (fewer training images than the official one,
which fails the package's own sample-count assertion) loads all the same. Downloads go
through the package (`python -m bench data --download NAME`).

Left out: ChestMNIST (multi-label, not single-label classification) and the 3D subsets.
The official validation split is used. Dataset names: `bloodmnist` (28 px) and
`bloodmnist_64`, `bloodmnist_128`, `bloodmnist_224`.
"""
from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import torch

from .base import DataError, DatasetInfo, ImageDataset

SIZES = (28, 64, 128, 224)
CITATION = ("Yang et al., MedMNIST v2: a large-scale lightweight benchmark for 2D and 3D "
            "biomedical image classification, Scientific Data 2023")
# augmentation family by subset: orientation-free tissue and cell images get flips and 90-degree
# rotations; retina fundus photographs small affine moves and colour jitter (as in the paper);
# anatomical images (X-ray, CT, ultrasound, OCT) none, since left and right matter there
AUGMENTATION = {"pathmnist": "medical", "dermamnist": "medical", "bloodmnist": "medical",
                "tissuemnist": "medical", "retinamnist": "retina"}


def _info_table() -> dict:
    from medmnist import INFO

    return {flag: i for flag, i in INFO.items()
            if not flag.endswith("3d") and not i["task"].startswith("multi-label")}


def dataset_name(flag: str, size: int) -> str:
    return flag if size == 28 else f"{flag}_{size}"


def file_name(flag: str, size: int) -> str:
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def info(flag: str, size: int) -> DatasetInfo:
    meta = _info_table()[flag]
    labels = meta["label"]
    return DatasetInfo(
        name=dataset_name(flag, size),
        class_names=tuple(labels[str(k)] for k in range(len(labels))),
        channels=int(meta["n_channels"]),
        resolution=size,
        metric="accuracy",
        augmentation=AUGMENTATION.get(flag, "none"),
        citation=CITATION,
        licence=meta["license"],
        val_source="official MedMNIST validation split",
        test_source="official MedMNIST test split",
    )


def expected_md5(flag: str, size: int) -> str:
    meta = _info_table()[flag]
    return meta["MD5"] if size == 28 else meta[f"MD5_{size}"]


def url(flag: str, size: int) -> str:
    meta = _info_table()[flag]
    return meta["url"] if size == 28 else meta[f"url_{size}"]


def path(root: Path, flag: str, size: int) -> Path:
    return Path(root) / "medmnist" / file_name(flag, size)


def md5(p: Path) -> str:
    h = hashlib.md5()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download(root: Path, flag: str, size: int) -> Path:
    """Fetch the official archive through the medmnist package (checks its MD5)."""
    import medmnist

    target = path(root, flag, size)
    target.parent.mkdir(parents=True, exist_ok=True)
    cls = getattr(medmnist, _info_table()[flag]["python_class"])
    try:
        cls(split="test", download=True, root=str(target.parent), size=size)
    except Exception as e:  # network errors come in many types
        raise DataError(f"{dataset_name(flag, size)}: download failed ({type(e).__name__}: "
                        f"{str(e).splitlines()[0] if str(e) else ''}); fetch {url(flag, size)} "
                        f"by hand and put it at {target}") from None
    return target


def load_file(p: Path, data_info: DatasetInfo) -> ImageDataset:
    """Read an archive with the MedMNIST keys (`{train,val,test}_{images,labels}`)."""
    try:
        with np.load(p, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{p}: not a readable .npz archive ({e}); delete it and download again") \
            from None
    parts = []
    for split in ("train", "val", "test"):
        try:
            x, y = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        except KeyError as e:
            raise DataError(f"{p}: missing array {e.args[0]!r}; expected the MedMNIST keys "
                            f"train/val/test _images and _labels") from None
        parts += list(to_tensors(x, y, p, split))
    return ImageDataset(data_info, *parts)


def to_tensors(x: np.ndarray, y: np.ndarray, p, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, H, W) or (N, H, W, C) uint8 images and (N,) or (N, 1) labels -> (N, C, H, W), (N,)."""
    if x.dtype != np.uint8 or x.ndim not in (3, 4):
        raise DataError(f"{p}: {split} images must be uint8 (N, H, W[, C]), got {x.dtype} "
                        f"{x.shape}")
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    y = np.asarray(y).reshape(len(y), -1)
    if y.shape[1] != 1 or len(y) != len(x):
        raise DataError(f"{p}: {split} labels must be one integer per image ({len(x)} images), "
                        f"got shape {y.shape}")
    labels = y[:, 0]
    if labels.dtype.kind not in "iub" and not (labels.dtype.kind == "f"
                                                and np.all(labels == np.round(labels))):
        raise DataError(f"{p}: {split} labels must be integers, got {labels.dtype}")
    if len(labels) and labels.min() < 0:
        raise DataError(f"{p}: {split} labels must be class indices >= 0, got {labels.min()}")
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(labels.astype(np.int64))


def make_loader(flag: str, size: int):
    def load(root=None, download_missing: bool = False) -> ImageDataset:
        from .root import data_root

        p = path(data_root(root), flag, size)
        if not p.exists():
            if download_missing:
                download(data_root(root), flag, size)
            else:
                raise DataError(f"{dataset_name(flag, size)}: {p} not found; run `python -m bench "
                                f"data --download {dataset_name(flag, size)}` or put the "
                                f"official file there ({url(flag, size)})")
        return load_file(p, info(flag, size))
    return load
