import numpy as np
import pytest

from bench.datasets.base import DataError
from bench.datasets.registry import load_dataset
from bench.datasets.splits import parse_split

LABELS = load_dataset("digits").y_train.numpy()  # real labels: 10 classes, ~122 each
SKEWED = np.repeat(np.arange(5), [400, 200, 100, 50, 25])  # unbalanced classes

CASES = [("iid", 10), ("dirichlet:0.1", 10), ("dirichlet:1.0", 10), ("dirichlet:0.5", 30),
         ("silos", 10), ("classes:2", 10), ("classes:1", 10), ("classes:3", 4), ("shards:2", 10),
         ("shards:1", 7), ("shards:5", 3)]


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


def test_shards_are_mcmahans_label_sorted_pieces():
    """McMahan et al. 2017's pathological split on 10 classes of 20 samples, 10 clients x 2
    shards: 20 shards of exactly 10 samples, each inside one class (the sort by label), each
    class in exactly two shards, every client 20 samples of one or two classes; the shards are
    dealt at random (another seed, other pairs), and the samples of a shard are a random draw
    of its class (not the first 10 indices)."""
    labels = np.repeat(np.arange(10), 20)
    parts = _split("shards:2", labels, 10, 0)
    assert all(len(p) == 20 for p in parts)
    held = [sorted(set(labels[p].tolist())) for p in parts]
    assert all(1 <= len(h) <= 2 for h in held)
    shards_per_class = np.zeros(10, int)
    for p, h in zip(parts, held):
        for c in h:
            shards_per_class[c] += int((labels[p] == c).sum()) // 10
    assert shards_per_class.tolist() == [2] * 10
    assert held != [sorted(set(labels[p].tolist())) for p in _split("shards:2", labels, 10, 1)]
    first = next(p for p in parts if len(set(labels[p].tolist())) == 2)
    assert not np.array_equal(np.sort(first[labels[first] == labels[first][0]]),
                              np.arange(labels[first][0] * 20, labels[first][0] * 20 + 10))
    with pytest.raises(DataError, match="shards per client must be >= 1"):
        _split("shards:0", labels, 10, 0)
    with pytest.raises(DataError, match="exceed the 200 training samples"):
        _split("shards:30", labels, 10, 0)


def test_the_fields_names_for_the_pathological_splits():
    """`pathological:K` is NIID-Bench's #C=K under the field's name: the same canonical split
    (so the same runs) as `classes:K`; names in any case; an unknown name lists the choices."""
    assert parse_split("pathological:2") == parse_split("classes:2") == parse_split("Classes:2")
    assert parse_split("pathological:2").canonical == "classes:k=2"
    assert parse_split("SILOS").canonical == "silos"
    with pytest.raises(DataError, match="pathological:<k> is classes:<k>"):
        parse_split("pathologic:2")
