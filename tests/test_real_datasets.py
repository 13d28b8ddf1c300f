"""Real-dataset loaders on files the tests write in each official format, and on the real
PneumoniaMNIST file in ../shared/data (skipped with a reason when absent). No network."""

import numpy as np
import pytest
import torch
from PIL import Image

from bench.cli import main
from bench.datasets.base import DataError
from bench.datasets.registry import get_entry, load_dataset
from bench.methods.data import AUGMENTATIONS
from helpers import ROOT, stored_records, tiny_overrides, write_cifar, write_isic, write_medmnist


def test_medmnist_official_layout(tmp_path):
    write_medmnist(tmp_path / "medmnist" / "bloodmnist.npz", channels=3, classes=8,
                   n=(64, 16, 16))
    d = load_dataset("bloodmnist", tmp_path)
    assert d.info.n_classes == 8 and d.info.channels == 3 and d.info.resolution == 28
    assert d.info.class_names[0].startswith("basophil")  # from the package's metadata
    assert d.x_train.shape == (64, 3, 28, 28) and d.y_train.dtype == torch.int64
    assert d.sizes == {"train": 64, "val": 16, "test": 16}


def test_medmnist_sizes_have_their_own_files(tmp_path):
    write_medmnist(tmp_path / "medmnist" / "pneumoniamnist_64.npz", size=64)
    assert load_dataset("pneumoniamnist_64", tmp_path).x_test.shape[-1] == 64
    with pytest.raises(DataError, match="pneumoniamnist_128.npz not found.*--download"):
        load_dataset("pneumoniamnist_128", tmp_path)


@pytest.mark.parametrize("damage,msg", [("garbage", "not a readable .npz"),
                                        ("key", "missing array 'test_labels'"),
                                        ("dtype", "must be uint8")])
def test_medmnist_corrupt_files_name_the_file(tmp_path, damage, msg):
    p = tmp_path / "medmnist" / "breastmnist.npz"
    arrays = write_medmnist(p)
    if damage == "garbage":
        p.write_bytes(b"not a zip")
    elif damage == "key":
        del arrays["test_labels"]
        np.savez(p, **arrays)
    else:
        arrays["train_images"] = arrays["train_images"].astype(np.float32)
        np.savez(p, **arrays)
    with pytest.raises(DataError, match=msg) as e:
        load_dataset("breastmnist", tmp_path)
    assert str(p) in str(e.value)


def test_real_pneumoniamnist_subset(shared_data):
    """The shared file is a subset (3,882 training images instead of 4,708): the package's own
    class fails its length assertion, our loader reads it."""
    d = load_dataset("pneumoniamnist", shared_data)
    assert d.sizes == {"train": 3882, "val": 524, "test": 624}
    assert torch.bincount(d.y_train).tolist() == [388, 3494]
    assert torch.bincount(d.y_test).tolist() == [234, 390]
    assert d.info.class_names == ("normal", "pneumonia")


def test_cifar10_official_pickles(tmp_path):
    write_cifar(tmp_path)
    d = load_dataset("cifar10", tmp_path)
    assert d.sizes == {"train": 90, "val": 10, "test": 20}  # 10 % of train carved for val
    assert d.x_train.shape[1:] == (3, 32, 32)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"\x80garbage")
    with pytest.raises(DataError, match="data_batch_3: not a CIFAR-10 python batch"):
        load_dataset("cifar10", tmp_path)


def test_cifar10_missing_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="--download cifar10"):
        load_dataset("cifar10", tmp_path)


def test_user_npz_without_val_and_image_folder(tmp_path):
    arrays = write_medmnist(tmp_path / "mine.npz", classes=3, n=(60, 0, 15), size=16)
    np.savez(tmp_path / "mine.npz", **{k: v for k, v in arrays.items() if "val" not in k})
    d = load_dataset(f"npz:{tmp_path / 'mine.npz'}")
    assert d.info.n_classes == 3 and d.info.resolution == 16 and d.sizes["val"] == 6
    for split, count in (("train", 6), ("test", 2)):
        for cls in ("cat", "dog"):
            folder = tmp_path / "imgs" / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(np.full((12, 12, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
    f = load_dataset(f"folder:{tmp_path / 'imgs'}")
    assert f.info.class_names == ("cat", "dog") and f.info.channels == 3
    assert f.sizes["test"] == 4 and f.x_train.shape[-1] == 12
    with pytest.raises(DataError, match="missing"):
        get_entry(f"folder:{tmp_path}")


@pytest.mark.parametrize("family", ["cifar", "medical", "retina"])
def test_augmentations_batched_deterministic_shape_preserving(family):
    x = torch.rand(6, 3, 16, 16) * 2 - 1
    aug = AUGMENTATIONS[family]
    a = aug(x, torch.Generator().manual_seed(1))
    b = aug(x, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, x)
    assert a.min() >= -1 and a.max() <= 1


def test_end_to_end_on_every_format(tmp_path, capsys):
    """One small run per official format (MedMNIST npz, CIFAR pickles), the user's npz and the
    user's image folder, through the same CLI."""
    write_medmnist(tmp_path / "data" / "medmnist" / "pneumoniamnist.npz", n=(80, 20, 20))
    write_cifar(tmp_path / "data")
    for split, count in (("train", 10), ("test", 4)):
        for cls in ("a", "b"):
            folder = tmp_path / "imgs" / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(np.full((8, 8), 10 * i + (cls == "b") * 100, np.uint8)).save(
                    folder / f"{i}.png")
    for dataset in ("pneumoniamnist", "cifar10", f"folder:{tmp_path / 'imgs'}",
                    f"npz:{tmp_path / 'data' / 'medmnist' / 'pneumoniamnist.npz'}"):
        assert main(["run", "--datasets", dataset, "--methods", "fedavg,centralized",
                     "--splits", "silos", "--scale", "cpu", "--data-root", str(tmp_path / "data"),
                     "--out", str(tmp_path / "out"), *tiny_overrides()]) == 0
    # accuracy, AUROC, worst-client accuracy and membership AUC, 4 datasets
    assert capsys.readouterr().out.count("| fedavg |") == 16
    assert main(["data", "--data-root", str(tmp_path / "data")]) == 0
    out = capsys.readouterr().out
    assert "pneumoniamnist" in out and "present" in out and "md5 differs" in out
    # the user's data: stored under a short readable folder, shown by its path
    folders = sorted(p.name for p in (tmp_path / "out" / "runs").iterdir())
    assert [f.split("-")[0] for f in folders] == ["cifar10", "folder", "npz", "pneumoniamnist"]
    assert all(len(f) < 40 and "/" not in f for f in folders)
    npz = tmp_path / "data" / "medmnist" / "pneumoniamnist.npz"
    assert main(["data", "--datasets", f"npz:{npz}"]) == 0
    shown = capsys.readouterr().out
    assert str(npz) in shown and "(in the package)" not in shown


@pytest.mark.slow
def test_report_of_the_users_data_draws_its_figures_in_the_report_folder(tmp_path):
    """Figure names come from the store's short folder name: a name built from
    `npz:/abs/path.npz` escaped the report folder, and the sample grid of a user's dataset was
    looked for under a path the store never writes (and silently skipped)."""
    from helpers import TINY_FF_CLI

    npz = tmp_path / "mine.npz"
    write_medmnist(npz, n=(60, 20, 20), size=8)
    out = tmp_path / "out"
    assert main(["run", "--datasets", f"npz:{npz}", "--methods", "fedavg,federatedfactory",
                 "--splits", "silos", "--scale", "cpu", "--out", str(out),
                 *tiny_overrides(), *TINY_FF_CLI]) == 0
    assert main(["report", "--out", str(out)]) == 0
    (folder,) = [p.name for p in (out / "runs").iterdir()]
    figures = {p.name for p in (out / "report" / "figures").glob("*.png")}
    assert f"{folder}_silos_s0_federatedfactory_samples.png" in figures, figures
    assert f"{folder}_silos_accuracy.png" in figures
    assert not list(tmp_path.glob("*.png")) and not list(tmp_path.glob("*.pdf"))


@pytest.mark.parametrize("keys,needle", [
    (("val_images",), "has 'val_images' but no 'val_labels'"),
    (("val_labels",), "has 'val_labels' but no 'val_images'"),
    (("train_labels",), "missing array 'train_labels'"),
])
def test_user_npz_with_missing_keys_is_a_one_line_error(tmp_path, capsys, keys, needle):
    arrays = write_medmnist(tmp_path / "mine.npz", classes=3, n=(30, 6, 9), size=8)
    drop = {"val_images": "val_labels", "val_labels": "val_images",
            "train_labels": "train_labels"}[keys[0]]
    np.savez(tmp_path / "mine.npz", **{k: v for k, v in arrays.items() if k != drop})
    rc = main(["run", "--datasets", f"npz:{tmp_path / 'mine.npz'}", "--methods", "fedavg",
               "--splits", "iid", "--dry-run"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and needle in err, err


def test_user_images_must_be_square_and_the_readme_says_so(tmp_path, capsys):
    """A newcomer's archive of 24 x 20 images: one line that says what to do, exit 2; the
    README's data section says it before the run does."""
    arrays = write_medmnist(tmp_path / "mine.npz", classes=3, n=(30, 6, 9), size=8)
    np.savez(tmp_path / "mine.npz", **{k: np.zeros((len(v), 24, 20), np.uint8)
                                       if k.endswith("images") else v for k, v in arrays.items()})
    rc = main(["run", "--datasets", f"npz:{tmp_path / 'mine.npz'}", "--methods", "fedavg",
               "--splits", "iid", "--dry-run"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "must be square" in err and "crop or pad" in err and "(24, 20)" in err
    assert "square" in (ROOT / "README.md").read_text().split("**A method of your own**")[0]


def test_user_npz_labels_must_be_class_indices(tmp_path):
    arrays = write_medmnist(tmp_path / "mine.npz", classes=3, n=(30, 6, 9), size=8)
    np.savez(tmp_path / "mine.npz", **{**arrays, "test_labels": arrays["test_labels"].astype(int) - 5})
    with pytest.raises(DataError, match="class indices >= 0"):
        load_dataset(f"npz:{tmp_path / 'mine.npz'}")
    np.savez(tmp_path / "mine.npz", **{**arrays, "test_labels": arrays["test_labels"] + 0.5})
    with pytest.raises(DataError, match="must be integers"):
        load_dataset(f"npz:{tmp_path / 'mine.npz'}")


@pytest.mark.slow
def test_all_dry_run_lists_the_paper_grid(capsys):
    assert main(["run", "--all", "--dry-run"]) == 0
    import json

    configs = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {c["dataset"] for c in configs} == {"cifar10", "isic2019", "bloodmnist", "pathmnist",
                                               "retinamnist"}
    assert {c["seed"] for c in configs} == {0, 1, 2, 3, 4}
    fedavg = next(c for c in configs if c["method"] == "fedavg")
    assert fedavg["train"]["model"] == "resnet50" and fedavg["train"]["rounds"] == 200
    silos = {c["dataset"]: c["n_clients"] for c in configs
             if c["split"] == "silos" and c["method"] == "fedavg"}
    assert silos == {"cifar10": 10, "isic2019": 8, "bloodmnist": 8, "pathmnist": 9,
                     "retinamnist": 5}
    isic = next(c for c in configs if c["dataset"] == "isic2019")
    assert isic["resolution"] == 128
    ff = next(c for c in configs if c["method"] == "federatedfactory")
    assert ff["method_params"]["preset"] == "paper" and ff["method_params"]["sampler"] == "heun"
    central = next(c for c in configs if c["method"] == "centralized")
    assert central["method_params"]["epochs"] == 300


def test_isic2019_prepare_load_and_natural_split(tmp_path, capsys):
    with pytest.raises(DataError, match="isic2019.*not found.*challenge.isic-archive"):
        load_dataset("isic2019", tmp_path)
    write_isic(tmp_path)
    with pytest.raises(DataError, match="bench prepare isic2019"):
        load_dataset("isic2019", tmp_path)
    assert main(["prepare", "isic2019", "--resolution", "16", "--data-root", str(tmp_path)]) == 0
    assert main(["prepare", "isic2019", "--data-root", str(tmp_path)]) == 0  # 128 px
    d = load_dataset("isic2019", tmp_path)
    assert d.x_train.shape[1:] == (3, 128, 128) and d.sizes["test"] == 6
    assert d.info.natural_clients == 6 and len(d.groups_train) == d.sizes["train"]
    out = tmp_path / "out"
    assert main(["run", "--datasets", "isic2019", "--methods", "fedavg", "--splits", "natural",
                 "--scale", "cpu", "--set", "resolution=16", "--data-root", str(tmp_path),
                 "--out", str(out), *tiny_overrides(rounds=1)]) == 0
    (record,) = stored_records(out)
    assert record.config.n_clients == 6
    assert [sum(c) for c in record.split["client_class_counts"]] == \
        [int((d.groups_train == g).sum()) for g in range(6)]
    (tmp_path / "isic2019" / "ISIC_2019_Training_Input" / "ISIC_0000003.jpg").unlink()
    assert main(["prepare", "isic2019", "--data-root", str(tmp_path)]) == 2
    assert "ISIC_0000003.jpg" in capsys.readouterr().err


def test_natural_split_needs_a_dataset_with_centers(capsys):
    assert main(["run", "--splits", "natural", "--methods", "fedavg", "--dry-run"]) == 2
    assert "no natural clients" in capsys.readouterr().err


def test_a_mistyped_label_is_a_one_line_error_not_a_million_classes(tmp_path, capsys):
    """One train label of 1,000,000 among 0/1 (a typo) used to make the suite infer 1,000,001
    classes, and `bench run --methods centralized` grew to 24 GB before the OOM killer ended
    it. Labels are checked on load: 0..C-1 with every class in training."""
    arrays = write_medmnist(tmp_path / "mine.npz", classes=2, n=(30, 6, 9), size=8)
    train = arrays["train_labels"].astype(np.int64)
    train[7] = 1_000_000
    np.savez(tmp_path / "mine.npz", **{**arrays, "train_labels": train})
    rc = main(["run", "--datasets", f"npz:{tmp_path / 'mine.npz'}", "--methods", "centralized",
               "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "1000000 (1 image)" in err and "999998 classes have no training image" in err
    assert not (tmp_path / "out" / "runs").exists()
    # test labels outside the training classes
    np.savez(tmp_path / "mine.npz", **{**arrays, "test_labels": arrays["test_labels"] + 1})
    with pytest.raises(DataError, match=r"test labels \[2\] are not among the training"):
        load_dataset(f"npz:{tmp_path / 'mine.npz'}")


def test_an_image_folder_with_an_empty_class_is_an_error(tmp_path):
    for split in ("train", "test"):
        for cls in ("a", "b", "c"):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            if split == "train" and cls == "c":
                continue
            for i in range(4):
                Image.fromarray(np.full((8, 8), 30 * i, np.uint8)).save(folder / f"{i}.png")
    with pytest.raises(DataError, match="every class needs training images"):
        load_dataset(f"folder:{tmp_path}")
