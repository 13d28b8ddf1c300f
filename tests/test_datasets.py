import numpy as np
import torch

from bench.datasets.base import stratified_holdout
from bench.datasets.registry import all_entries, load_dataset


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
    for name, entry in all_entries().items():
        assert entry.info.name == name
        assert entry.info.n_classes == len(entry.info.class_names)


def _cell_coded_photo(h: int, w: int, base: int) -> np.ndarray:
    """A photograph whose pixels say which grid cell they are in (one grey level per cell)."""
    from bench.datasets.photos import GRID

    rows = np.minimum(np.arange(h) // (h // GRID), GRID - 1)
    cols = np.minimum(np.arange(w) // (w // GRID), GRID - 1)
    cell = rows[:, None] * GRID + cols[None, :]
    return np.repeat((base + 10 * cell).astype(np.uint8)[..., None], 3, axis=2)


def test_photos_test_crops_never_share_a_pixel_with_training_crops():
    from bench.datasets.photos import PER_CLASS, build

    parts = build([_cell_coded_photo(96, 128, 0), _cell_coded_photo(130, 100, 5)])
    for part, (x, y) in parts.items():
        assert x.shape == (2 * PER_CLASS[part], 3, 32, 32) and x.dtype == np.uint8
        assert np.bincount(y).tolist() == [PER_CLASS[part]] * 2
        # a crop lies inside one cell: one grey level
        assert (x.reshape(len(x), -1).min(1) == x.reshape(len(x), -1).max(1)).all()
    cells = {p: {(int(label), int(img[0, 0, 0])) for img, label in zip(*parts[p])}
             for p in parts}
    assert not cells["train"] & cells["test"] and not cells["train"] & cells["val"]
    assert not cells["val"] & cells["test"]
    assert [len({v for c, v in cells[p] if c == 0}) for p in ("train", "val", "test")] \
        == [12, 2, 2]


def test_photos_load_from_scikit_image_fixed_and_balanced():
    a, b = load_dataset("photos"), load_dataset("photos")
    assert a.info.channels == 3 and a.info.n_classes == 8
    assert a.sizes == {"train": 1024, "val": 256, "test": 512}
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.x_test, b.x_test)
    assert torch.bincount(a.y_train).tolist() == [128] * 8
    # eight different photographs: their mean colours differ
    means = torch.stack([a.x_train[a.y_train == c].float().mean((0, 2, 3)) for c in range(8)])
    assert torch.cdist(means, means).add(torch.eye(8) * 1e3).min() > 3
