"""Fashion-MNIST, CIFAR-100 and SVHN loaders on tiny files the tests write in each official
format (gzipped IDX, the python archive's pickles, MATLAB v5 files) where torchvision puts
them. No network."""
import gzip
import json
import pickle

import numpy as np
import pytest
import torch
from scipy.io import savemat

from bench.cli import main
from bench.datasets import cifar100, fashion_mnist, svhn
from bench.datasets.base import DataError, stratified_holdout
from bench.datasets.registry import load_dataset
from helpers import run_cli

NEW = ("fashionmnist", "cifar100", "svhn")


def write_idx(p, arr: np.ndarray, magic: int, gz: bool = True) -> None:
    """An IDX file: big-endian magic number and sizes, then the bytes."""
    data = (magic.to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
            + np.asarray(arr, np.uint8).tobytes())
    p.parent.mkdir(parents=True, exist_ok=True)
    with (gzip.open(p, "wb") if gz else open(p, "wb")) as f:
        f.write(data)


def write_fashion(root, per_class=(20, 3), gz=True) -> dict:
    """The four official files in torchvision's folder, `<root>/FashionMNIST/raw/`."""
    rng, out = np.random.default_rng(0), {}
    for part, n in zip(("train", "t10k"), per_class):
        y = rng.permutation(np.repeat(np.arange(10), n)).astype(np.uint8)
        x = rng.integers(0, 256, (len(y), 28, 28), dtype=np.uint8)
        folder = root / "FashionMNIST" / "raw"
        write_idx(folder / f"{part}-images-idx3-ubyte{'.gz' * gz}", x, 2051, gz)
        write_idx(folder / f"{part}-labels-idx1-ubyte{'.gz' * gz}", y, 2049, gz)
        out[part] = (x, y)
    return out


def write_cifar100(root, per_class=(10, 2), names=None) -> dict:
    """`cifar-100-python/{train,test,meta}` with the real archive's keys."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    rng, out = np.random.default_rng(0), {}
    for part, n in zip(("train", "test"), per_class):
        fine = rng.permutation(np.repeat(np.arange(100), n))
        d = {b"filenames": [f"img_{i}.png".encode() for i in range(len(fine))],
             b"batch_label": f"{'training' if part == 'train' else 'testing'} batch 1 of 1"
             .encode(),
             b"fine_labels": fine.tolist(), b"coarse_labels": (fine // 5).tolist(),
             b"data": rng.integers(0, 256, (len(fine), 3072), dtype=np.uint8)}
        with open(folder / part, "wb") as f:
            pickle.dump(d, f)
        out[part] = d
    with open(folder / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": [s.encode() for s in names or cifar100.CLASS_NAMES],
                     b"coarse_label_names": [f"super{i}".encode() for i in range(20)]}, f)
    return out


def write_svhn(root, per_class=(20, 3), folder="svhn") -> dict:
    """`train_32x32.mat` and `test_32x32.mat`: X 32x32x3xN uint8, y Nx1 with 10 for 0."""
    rng, out = np.random.default_rng(0), {}
    (root / folder).mkdir(parents=True, exist_ok=True)
    for part, n in zip(("train", "test"), per_class):
        y = rng.permutation(np.repeat(np.arange(1, 11), n)).astype(np.uint8)[:, None]
        x = rng.integers(0, 256, (32, 32, 3, len(y)), dtype=np.uint8)
        savemat(root / folder / f"{part}_32x32.mat", {"X": x, "y": y})
        out[part] = (x, y)
    return out


def _carve(y, module):
    from bench.datasets import official

    return stratified_holdout(np.asarray(y), official.VAL_FRACTION,
                              np.random.default_rng(official.CARVE_SEED))


def _check_common(d, classes, channels, px, n_train, n_test):
    assert d.info.n_classes == classes and d.info.channels == channels
    assert d.info.resolution == px
    assert d.sizes["train"] + d.sizes["val"] == n_train and d.sizes["test"] == n_test
    assert d.sizes["val"] == round(0.1 * n_train)
    for part in ("train", "val", "test"):
        x, y = getattr(d, f"x_{part}"), getattr(d, f"y_{part}")
        assert x.dtype == torch.uint8 and x.shape[1:] == (channels, px, px)
        assert y.dtype == torch.int64 and int(y.min()) >= 0 and int(y.max()) < classes
    assert torch.bincount(d.y_val, minlength=classes).min() >= 1  # stratified: every class


def test_fashionmnist_official_idx_files(tmp_path):
    raw = write_fashion(tmp_path)
    d = load_dataset("fashionmnist", tmp_path)
    _check_common(d, 10, 1, 28, 200, 30)
    assert d.info.class_names[0] == "T-shirt/top" and d.info.class_names[9] == "Ankle boot"
    x, y = raw["train"]
    train, val = _carve(y, fashion_mnist)
    assert torch.equal(d.x_train[:, 0], torch.from_numpy(x[train]))
    assert torch.equal(d.y_val, torch.from_numpy(y[val].astype(np.int64)))
    x_test, y_test = raw["t10k"]
    assert int(d.x_test[7, 0, 3, 21]) == int(x_test[7, 3, 21])  # image, row, column
    assert d.y_test.tolist() == y_test.tolist()  # the official test set, in its order
    again = load_dataset("fashionmnist", tmp_path)
    assert torch.equal(again.x_val, d.x_val) and torch.equal(again.y_train, d.y_train)
    # the un-gzipped copies alone (torchvision keeps both) give the same dataset
    for p in (tmp_path / "FashionMNIST" / "raw").glob("*.gz"):
        p.unlink()
    write_fashion(tmp_path, gz=False)
    plain = load_dataset("fashionmnist", tmp_path)
    assert torch.equal(plain.x_train, d.x_train) and torch.equal(plain.y_test, d.y_test)


def test_cifar100_official_pickles(tmp_path):
    raw = write_cifar100(tmp_path)
    d = load_dataset("cifar100", tmp_path)
    _check_common(d, 100, 3, 32, 1000, 200)
    assert d.info.class_names[:3] == ("apple", "aquarium_fish", "baby")
    assert list(d.info.class_names) == sorted(d.info.class_names)
    fine = np.array(raw["train"][b"fine_labels"])
    train, val = _carve(fine, cifar100)
    x = raw["train"][b"data"].reshape(-1, 3, 32, 32)
    assert torch.equal(d.x_train, torch.from_numpy(x[train]))
    assert d.y_val.tolist() == fine[val].tolist()
    assert torch.bincount(d.y_val).tolist() == [1] * 100
    # channel-major rows: byte 1024 + 32 * 5 + 6 is the green pixel at row 5, column 6
    assert int(d.x_test[3, 1, 5, 6]) == int(raw["test"][b"data"][3, 1024 + 32 * 5 + 6])
    assert d.y_test.tolist() == raw["test"][b"fine_labels"]
    again = load_dataset("cifar100", tmp_path)
    assert torch.equal(again.x_val, d.x_val) and torch.equal(again.y_train, d.y_train)
    (tmp_path / "cifar-100-python" / "meta").unlink()  # meta is optional
    assert torch.equal(load_dataset("cifar100", tmp_path).y_test, d.y_test)


def test_svhn_official_mat_files(tmp_path):
    raw = write_svhn(tmp_path)
    d = load_dataset("svhn", tmp_path)
    _check_common(d, 10, 3, 32, 200, 30)
    assert d.info.class_names == tuple("0123456789")
    x, y = raw["train"]
    labels = y[:, 0].astype(np.int64) % 10
    train, val = _carve(labels, svhn)
    assert torch.equal(d.x_train, torch.from_numpy(x.transpose(3, 2, 0, 1)[train]))
    x_test, y_test = raw["test"]
    i = int(np.flatnonzero(y_test[:, 0] == 10)[0])
    assert int(d.y_test[i]) == 0  # 10 is the digit 0
    j = int(np.flatnonzero(y_test[:, 0] == 7)[0])
    assert int(d.y_test[j]) == 7
    assert int(d.x_test[i, 2, 4, 9]) == int(x_test[4, 9, 2, i])  # row 4, column 9, blue
    assert torch.bincount(d.y_test).tolist() == [3] * 10
    again = load_dataset("svhn", tmp_path)
    assert torch.equal(again.x_val, d.x_val) and torch.equal(again.y_train, d.y_train)


def test_svhn_files_where_torchvision_puts_them(tmp_path):
    """`SVHN(root, download=True)` keeps the .mat files in the root itself."""
    write_svhn(tmp_path, folder=".")
    assert load_dataset("svhn", tmp_path).sizes["test"] == 30


@pytest.mark.parametrize("name", NEW)
def test_missing_files_say_how_to_get_them(tmp_path, name):
    with pytest.raises(DataError, match=f"--download {name}`") as e:
        load_dataset(name, tmp_path)
    assert "not found" in str(e.value) and "\n" not in str(e.value)


def _one_line_naming(tmp_path, name, path, needle):
    with pytest.raises(DataError, match=needle) as e:
        load_dataset(name, tmp_path)
    assert str(path) in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_corrupt_fashionmnist_files_name_the_file(tmp_path):
    raw = write_fashion(tmp_path)
    folder = tmp_path / "FashionMNIST" / "raw"
    images = folder / "train-images-idx3-ubyte.gz"
    write_idx(images, raw["train"][0], 2049)  # a label file's magic number
    _one_line_naming(tmp_path, "fashionmnist", images,
                     "not an IDX image file .magic number 2049, expected 2051")
    write_fashion(tmp_path)
    write_idx(images, raw["train"][0][:, :, :27], 2051)  # 28 x 27 px
    _one_line_naming(tmp_path, "fashionmnist", images, "27 px, expected 28x28")
    write_fashion(tmp_path)
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    with gzip.open(labels, "rb") as f:
        data = f.read()
    with gzip.open(labels, "wb") as f:
        f.write(data[:-5])  # truncated
    _one_line_naming(tmp_path, "fashionmnist", labels, "header says .30,. .30 bytes. but 25")
    labels.write_bytes(b"not gzip at all")
    _one_line_naming(tmp_path, "fashionmnist", labels, "not a readable file")
    write_fashion(tmp_path)
    write_idx(labels, raw["t10k"][1][:20], 2049)  # 30 images, 20 labels
    _one_line_naming(tmp_path, "fashionmnist", folder / "t10k-images-idx3-ubyte.gz",
                     "30 images but t10k-labels-idx1-ubyte.gz has 20 labels")


def test_corrupt_cifar100_files_name_the_file(tmp_path):
    write_cifar100(tmp_path)
    train = tmp_path / "cifar-100-python" / "train"
    train.write_bytes(train.read_bytes()[:2000])  # truncated
    _one_line_naming(tmp_path, "cifar100", train, "train: not a CIFAR-100 python file")
    write_cifar100(tmp_path)
    test = tmp_path / "cifar-100-python" / "test"
    with open(test, "rb") as f:
        d = pickle.load(f)
    del d[b"fine_labels"]  # a CIFAR-10-like batch
    with open(test, "wb") as f:
        pickle.dump({**d, b"labels": [0] * 200}, f)
    _one_line_naming(tmp_path, "cifar100", test, "not a CIFAR-100 python file .KeyError")


def test_cifar100_meta_must_hold_the_official_names(tmp_path):
    names = list(cifar100.CLASS_NAMES)
    names[3], names[4] = names[4], names[3]
    write_cifar100(tmp_path, names=names)
    meta = tmp_path / "cifar-100-python" / "meta"
    _one_line_naming(tmp_path, "cifar100", meta,
                     "fine_label_names differ.*at index 3: 'beaver', expected 'bear'")
    write_cifar100(tmp_path, names=cifar100.CLASS_NAMES[:20])  # e.g. coarse names
    _one_line_naming(tmp_path, "cifar100", meta, "20 fine_label_names, expected the 100")
    meta.write_bytes(b"\x80garbage")
    _one_line_naming(tmp_path, "cifar100", meta, "not a CIFAR-100 meta file")


def test_corrupt_svhn_files_name_the_file(tmp_path):
    raw = write_svhn(tmp_path)
    train = tmp_path / "svhn" / "train_32x32.mat"
    savemat(train, {"y": raw["train"][1]})
    _one_line_naming(tmp_path, "svhn", train, "no variable 'X'")
    savemat(train, {"X": raw["train"][0], "y": raw["train"][1] - 1})  # 0..9, not the format
    _one_line_naming(tmp_path, "svhn", train, r"labels must be 1..10 .10: the digit 0., got 0")
    savemat(train, {"X": raw["train"][0].transpose(3, 0, 1, 2), "y": raw["train"][1]})
    _one_line_naming(tmp_path, "svhn", train, "X must be uint8 32x32x3xN")
    train.write_bytes(b"MATLAB 5.0 MAT-file, truncated")
    _one_line_naming(tmp_path, "svhn", train, "not a readable MATLAB file")


def test_dry_run_and_data_listing_name_the_new_datasets(tmp_path, capsys):
    write_fashion(tmp_path)
    write_cifar100(tmp_path)
    write_svhn(tmp_path)
    proc = run_cli("run", "--datasets", ",".join(NEW), "--methods", "fedavg", "--splits",
                   "silos", "--seeds", "0", "--scale", "cpu", "--dry-run", "--data-root",
                   str(tmp_path), "--out", str(tmp_path / "out"), timeout=120)
    assert proc.returncode == 0, proc.stderr
    configs = {c["dataset"]: c for c in map(json.loads, proc.stdout.splitlines())}
    # silos: one client per class, so CIFAR-100 has 100 clients; the CPU scale's resolution
    assert {n: (c["n_clients"], c["resolution"]) for n, c in configs.items()} == \
        {"fashionmnist": (10, 28), "cifar100": (100, 32), "svhn": (10, 32)}
    assert main(["data", "--data-root", str(tmp_path)]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    for name, shape in zip(NEW, ("10 classes, 1x28px", "100 classes, 3x32px",
                                 "10 classes, 3x32px")):
        assert shape in rows[name] and "present" in rows[name], rows[name]
    assert main(["list"]) == 0
    listed = capsys.readouterr().out
    assert all(f"\n  {name} " in listed for name in NEW)


def test_cifar100_names_are_the_official_fine_labels():
    """Written out here, not from the loader (the meta check compares with the loader's own
    list, so a typo there would pass every file the tests write and refuse the real one)."""
    from bench.datasets import cifar100

    official = {0: "apple", 1: "aquarium_fish", 19: "cattle", 41: "lawn_mower",
                54: "orchid", 58: "pickup_truck", 83: "sweet_pepper", 99: "worm"}
    assert len(cifar100.CLASS_NAMES) == 100 == len(set(cifar100.CLASS_NAMES))
    assert {i: cifar100.CLASS_NAMES[i] for i in official} == official
    assert list(cifar100.CLASS_NAMES) == sorted(cifar100.CLASS_NAMES)
