"""Fed-ISIC2019 (FLamby): dermoscopy images of the ISIC 2019 challenge training set, 8 classes,
assigned to 6 natural centers, with FLamby's train/test split.

The images cannot be downloaded automatically (the archive's terms must be accepted by hand).
Put in `<data root>/isic2019/`:
- `ISIC_2019_Training_Input/` (the official training images, `ISIC_xxxxxxx.jpg`);
- `ISIC_2019_Training_GroundTruth.csv` (columns image, MEL, NV, BCC, AK, BKL, DF, VASC, SCC,
  UNK) and `ISIC_2019_Training_Metadata.csv` (image, age_approx, anatom_site_general,
  lesion_id, sex), both from https://challenge.isic-archive.com/data/#2019;
- `train_test_split`: FLamby's file (`flamby/datasets/fed_isic2019/dataset_creation_scripts/`
  in github.com/owkin/FLamby) giving each image its center (0-5) and fold (train/test); the
  centers come from the HAM10000 and challenge metadata, as FLamby derived them.

Then `python -m bench prepare isic2019 --resolution 128` resizes every image once (shorter side
to the resolution, centre crop) into `isic2019_<R>.npz`, so later runs load in seconds.
The validation set is a stratified 10 % of FLamby's training fold (as FLamby's val_rate), with
a fixed seed. The natural split (`natural`) gives each center's training images to one client.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from .base import DataError, DatasetInfo, ImageDataset, stratified_holdout
from .files import atomic_write

if TYPE_CHECKING:
    import pandas as pd

CLASSES = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")  # UNK has no image in 2019
CENTERS = ("BCN", "HAM_vidir_molemax", "HAM_vidir_modern", "HAM_rosendahl", "MSK",
           "HAM_vienna_dias")
FOLDER = "isic2019"
IMAGES = "ISIC_2019_Training_Input"
GROUND_TRUTH = "ISIC_2019_Training_GroundTruth.csv"
METADATA = "ISIC_2019_Training_Metadata.csv"
SPLIT_FILE = "train_test_split"
URL = "https://challenge.isic-archive.com/data/#2019"
CARVE_SEED = 20260104
VAL_FRACTION = 0.10
DEFAULT_RESOLUTION = 128


def info(resolution: int = DEFAULT_RESOLUTION) -> DatasetInfo:
    return DatasetInfo(
        name="isic2019", class_names=CLASSES, channels=3, resolution=resolution,
        metric="balanced_accuracy", augmentation="medical",
        citation="Codella et al. 2017; Tschandl et al. 2018 (HAM10000); Combalia et al. 2019 "
                 "(BCN20000); Ogier du Terrail et al., FLamby, NeurIPS 2022",
        licence="CC BY-NC 4.0 (ISIC 2019 challenge data)",
        val_source=f"stratified {VAL_FRACTION:.0%} of FLamby's train fold, seed {CARVE_SEED}",
        test_source="FLamby's test fold", natural_clients=len(CENTERS))


def raw_files(root: Path) -> list[Path]:
    base = Path(root) / FOLDER
    return [base / IMAGES, base / GROUND_TRUTH, base / METADATA, base / SPLIT_FILE]


def prepared_path(root: Path, resolution: int) -> Path:
    return Path(root) / FOLDER / f"isic2019_{resolution}.npz"


def _read_tables(root: Path) -> pd.DataFrame:
    import pandas as pd  # here: a run on other data need not import it

    base = Path(root) / FOLDER
    missing = [p for p in raw_files(root) if not p.exists()]
    if missing:
        raise DataError(f"isic2019: {missing[0]} not found; accept the terms and download the "
                        f"training data from {URL}, and FLamby's train_test_split, into {base} "
                        f"(see datasets/isic2019.py)")
    try:
        truth = pd.read_csv(base / GROUND_TRUTH)
        meta = pd.read_csv(base / METADATA)
        split = pd.read_csv(base / SPLIT_FILE)
    except Exception as e:
        raise DataError(f"isic2019: a CSV file in {base} is unreadable ({e})") from None
    for table, name, cols in ((truth, GROUND_TRUTH, ("image", *CLASSES)),
                              (meta, METADATA, ("image", "lesion_id")),
                              (split, SPLIT_FILE, ("image", "center", "fold"))):
        absent = [c for c in cols if c not in table.columns]
        if absent:
            raise DataError(f"{base / name}: missing column(s) {', '.join(absent)}")
    rows = split[["image", "center", "fold"]].merge(truth[["image", *CLASSES]], on="image",
                                                     how="inner")
    if len(rows) < len(split):
        raise DataError(f"{base / SPLIT_FILE}: {len(split) - len(rows)} images have no row in "
                        f"{GROUND_TRUTH}")
    rows["label"] = rows[list(CLASSES)].to_numpy().argmax(axis=1)
    return rows


def prepare(root: Path, resolution: int = DEFAULT_RESOLUTION, progress=None) -> Path:
    """Resize every image once into `isic2019_<R>.npz` (images, labels, centers, folds)."""
    from PIL import Image

    rows = _read_tables(root)
    images = np.zeros((len(rows), 3, resolution, resolution), dtype=np.uint8)
    folder = Path(root) / FOLDER / IMAGES
    for i, name in enumerate(rows["image"]):
        path = folder / f"{name}.jpg"
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                scale = resolution / min(im.size)
                w, h = max(resolution, round(im.width * scale)), max(resolution,
                                                                     round(im.height * scale))
                im = im.resize((w, h), Image.BICUBIC)
                left, top = (w - resolution) // 2, (h - resolution) // 2
                im = im.crop((left, top, left + resolution, top + resolution))
                images[i] = np.asarray(im).transpose(2, 0, 1)
        except FileNotFoundError:
            raise DataError(f"isic2019: image {path} (listed in {SPLIT_FILE}) not found") from None
        except Exception as e:
            raise DataError(f"{path}: not a readable image ({type(e).__name__})") from None
        if progress is not None:
            progress.update(1)
    target = prepared_path(root, resolution)
    return atomic_write(target, lambda f: np.savez(
        f, images=images, labels=rows["label"].to_numpy(np.int64),
        centers=rows["center"].to_numpy(np.int64), train=(rows["fold"] == "train").to_numpy()))


def load(root=None, download_missing: bool = False,
         resolution: int = DEFAULT_RESOLUTION) -> ImageDataset:
    from .root import data_root

    root = data_root(root)
    p = prepared_path(root, resolution)
    if not p.exists():
        _read_tables(root)  # says what is missing, if anything
        raise DataError(f"isic2019: {p} not found; run `python -m bench prepare isic2019 "
                        f"--resolution {resolution}` once (it resizes the images)")
    try:
        with np.load(p) as z:
            x, y, centers, train = z["images"], z["labels"], z["centers"], z["train"]
    except Exception as e:
        raise DataError(f"{p}: unreadable ({type(e).__name__}: {e}); delete it and run "
                        f"`python -m bench prepare isic2019` again") from None
    tr, te = np.flatnonzero(train), np.flatnonzero(~train)
    keep, val = stratified_holdout(y[tr], VAL_FRACTION, np.random.default_rng(CARVE_SEED))
    tr, va = tr[keep], tr[val]
    t = torch.from_numpy
    return ImageDataset(info(resolution), t(x[tr]), t(y[tr]), t(x[va]), t(y[va]), t(x[te]),
                        t(y[te]), groups_train=t(centers[tr]))
