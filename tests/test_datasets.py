import numpy as np
import torch

from bench.datasets.base import stratified_holdout
from bench.datasets.registry import DATASETS, load_dataset


def test_digits_facts_and_representation():
    d = load_dataset("digits")
    info = d.info
    assert (info.n_classes, info.channels, info.resolution) == (10, 1, 8)
    assert info.citation and info.licence and info.metric == "accuracy"
    assert d.sizes == {"train": 1222, "val": 216, "test": 359}
    assert sum(d.sizes.values()) == 1797
    for x, y in ((d.x_train, d.y_train), (d.x_val, d.y_val), (d.x_test, d.y_test)):
        assert x.dtype == torch.uint8 and x.shape[1:] == (1, 8, 8)
        assert y.dtype == torch.int64
        assert torch.bincount(y, minlength=10).min() > 0  # stratified: every class present
    assert int(d.x_train.max()) == 255 and int(d.x_train.min()) == 0


def test_digits_parts_do_not_overlap():
    from sklearn.datasets import load_digits

    from bench.datasets.digits import carve

    labels = load_digits().target
    train, val, test = carve(labels)
    joined = np.concatenate([train, val, test])
    assert np.array_equal(np.sort(joined), np.arange(1797))
    assert np.array_equal(np.bincount(labels[test]), np.bincount(load_dataset("digits").y_test))


def test_digits_split_fixed_across_calls():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.y_val, b.y_val)


def test_stratified_holdout():
    labels = np.repeat([0, 1, 2], [100, 10, 2])
    kept, held = stratified_holdout(labels, 0.2, np.random.default_rng(0))
    assert len(np.intersect1d(kept, held)) == 0 and len(kept) + len(held) == 112
    assert np.bincount(labels[held]).tolist() == [20, 2, 1]  # rare class still represented


def test_registry_entries_state_their_facts():
    for name, entry in DATASETS.items():
        assert entry.info.name == name
        assert entry.info.n_classes == len(entry.info.class_names)
