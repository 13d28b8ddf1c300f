import numpy as np
import pytest

from bench.datasets.base import DataError
from bench.datasets.registry import load_dataset
from bench.datasets.splits import parse_split

LABELS = load_dataset("digits").y_train.numpy()  # real labels: 10 classes, ~122 each
SKEWED = np.repeat(np.arange(5), [400, 200, 100, 50, 25])  # unbalanced classes

CASES = [("iid", 10), ("dirichlet:0.1", 10), ("dirichlet:1.0", 10), ("dirichlet:0.5", 30),
         ("silos", 10), ("classes:2", 10), ("classes:1", 10), ("classes:3", 4)]


def _split(spec, labels, n, seed):
    return parse_split(spec)(labels, n, np.random.default_rng(seed))


@pytest.mark.parametrize("spec,n", CASES)
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_disjoint_and_covering(spec, n, seed):
    parts = _split(spec, LABELS, n, seed)
    assert len(parts) == n
    joined = np.concatenate(parts)
    assert len(joined) == len(np.unique(joined)), "a sample belongs to two clients"
    assert np.array_equal(np.sort(joined), np.arange(len(LABELS))), "not every sample is used"
    assert all(len(p) > 0 for p in parts)


@pytest.mark.parametrize("spec,n", CASES)
def test_same_seed_same_split_other_seed_other_split(spec, n):
    a, b = _split(spec, LABELS, n, 3), _split(spec, LABELS, n, 3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    if spec != "silos":  # silos is deterministic by definition
        c = _split(spec, LABELS, n, 4)
        assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_dirichlet_minimum_size_and_skew():
    parts = _split("dirichlet:0.1:min_size=20", LABELS, 10, 0)
    assert min(len(p) for p in parts) >= 20
    # alpha 0.1 is strongly skewed: most clients are dominated by one or two classes
    top = [np.bincount(LABELS[p], minlength=10).max() / len(p) for p in parts]
    assert np.median(top) > 0.5


def test_dirichlet_impossible_is_a_clear_error():
    with pytest.raises(DataError, match="exceeds"):
        _split("dirichlet:0.1:min_size=200", LABELS, 10, 0)
    with pytest.raises(DataError, match="no partition"):  # feasible in count, not in draws
        _split("dirichlet:0.01:min_size=100:max_tries=5", LABELS, 12, 0)


def test_silos_one_class_per_client_all_of_it():
    parts = _split("silos", SKEWED, 5, 0)
    for k, p in enumerate(parts):
        assert set(SKEWED[p]) == {k}
        assert len(p) == (SKEWED == k).sum()
    with pytest.raises(DataError, match="one client per class"):
        _split("silos", SKEWED, 4, 0)


@pytest.mark.parametrize("k,n", [(1, 10), (2, 10), (3, 5), (2, 7)])
def test_classes_per_client_holds_k_classes(k, n):
    parts = _split(f"classes:{k}", LABELS, n, 0)
    for p in parts:
        assert len(np.unique(LABELS[p])) == k
    with pytest.raises(DataError, match="cannot cover"):
        _split("classes:1", LABELS, 5, 0)


def test_iid_sizes_balanced():
    sizes = [len(p) for p in _split("iid", LABELS, 7, 0)]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("bad,msg", [("dirichlet", "needs alpha"), ("dirichlet:abc", "float"),
                                     ("dirichlet:0", "must be > 0"), ("zipf:1", "valid choices"),
                                     ("classes:2:3", "too many"), ("iid:alpha=1", "unknown")])
def test_bad_specs(bad, msg):
    with pytest.raises(DataError, match=msg):
        _split(bad, LABELS, 10, 0)


def test_canonical_form():
    assert parse_split("dirichlet:0.1").canonical == "dirichlet:alpha=0.1"
    assert parse_split("dirichlet:alpha=0.1").canonical == "dirichlet:alpha=0.1"
    assert parse_split("silos").canonical == "silos"
