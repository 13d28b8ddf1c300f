"""Client partitions as pure functions.

Every split has the signature `(labels, n_clients, params, rng) -> list of index arrays` and
uses only the `numpy.random.Generator` it is given: the same labels, parameters and seed give
the same partition. Each index array is sorted; together they are disjoint and cover every
training index.

A split is named on the command line by a spec string: `iid`, `dirichlet:0.1`, `silos`,
`classes:2`, `shards:2`. `parse_split` turns it into a `SplitSpec`, whose `canonical` string is
what the run config stores. The field's "pathological" non-IID splits are three: `silos` (one
class per client, the FederatedFactory paper's), `classes:K` (K classes per client,
NIID-Bench's #C=K, also named `pathological:K`) and `shards:S` (McMahan et al.'s label-sorted
shards).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .base import DataError

Split = Callable[[np.ndarray, int, dict, np.random.Generator], list]


def iid(labels: np.ndarray, n_clients: int, params: dict, rng: np.random.Generator) -> list:
    """Shuffle and cut into `n_clients` parts whose sizes differ by at most one."""
    _check_clients(labels, n_clients)
    perm = rng.permutation(len(labels))
    return [np.sort(p) for p in np.array_split(perm, n_clients)]


def dirichlet(labels: np.ndarray, n_clients: int, params: dict, rng: np.random.Generator) -> list:
    """Label-skewed partition of NIID-Bench (Li et al., ICDE 2022, Sec. IV-B).

    For each class c, client shares p_c ~ Dir(alpha * 1_n) split the samples of c; a client that
    already holds more than N / n_clients samples gets no share of the next classes (the
    reference implementation's balancing). Draws are repeated until every client holds at least
    `min_size` samples, at most `max_tries` times; then a clear error says what to change.
    params: alpha (> 0), min_size (default 10, as in the paper), max_tries (default 1000).
    """
    _check_clients(labels, n_clients)
    alpha = float(params["alpha"])
    min_size = int(params.get("min_size", 10))
    max_tries = int(params.get("max_tries", 1000))
    if alpha <= 0:
        raise DataError(f"dirichlet alpha must be > 0, got {alpha}")
    n = len(labels)
    if n_clients * min_size > n:
        raise DataError(
            f"dirichlet: {n_clients} clients x min_size {min_size} exceeds the {n} training "
            f"samples; use fewer clients or a smaller min_size"
        )
    classes = np.unique(labels)
    by_class = [np.flatnonzero(labels == c) for c in classes]
    for _ in range(max_tries):
        parts: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
        sizes = np.zeros(n_clients, dtype=np.int64)
        for idx in by_class:
            idx = idx[rng.permutation(len(idx))]
            p = rng.dirichlet(np.full(n_clients, alpha))
            p = p * (sizes < n / n_clients)
            p = p / p.sum()
            cuts = (np.cumsum(p) * len(idx)).astype(np.int64)[:-1]
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].append(chunk)
                sizes[k] += len(chunk)
        if sizes.min() >= min_size:
            return [np.sort(np.concatenate(p)) for p in parts]
    raise DataError(
        f"dirichlet(alpha={alpha}): no partition with >= {min_size} samples per client in "
        f"{max_tries} draws; raise alpha, lower min_size (dirichlet:{alpha}:min_size=K) or use "
        f"fewer clients"
    )


def silos(labels: np.ndarray, n_clients: int, params: dict, rng: np.random.Generator) -> list:
    """The pathological split of the FederatedFactory paper: one client per class, holding every
    training sample of that class (mutually exclusive labels). `n_clients` must equal the number
    of classes present. Client k holds the k-th smallest class label. `rng` is unused."""
    classes = np.unique(labels)
    if n_clients != len(classes):
        raise DataError(
            f"silos needs one client per class: {len(classes)} clients, got {n_clients}"
        )
    return [np.flatnonzero(labels == c) for c in classes]


def classes_per_client(
    labels: np.ndarray, n_clients: int, params: dict, rng: np.random.Generator
) -> list:
    """NIID-Bench's #C=k: every client holds k distinct classes; each class's samples are shared
    equally among the clients holding it.

    Classes are first dealt round-robin from a random permutation so that every class has a
    holder (this needs n_clients * k >= number of classes), then each client is topped up to k
    with distinct random classes. params: k.
    """
    _check_clients(labels, n_clients)
    k = int(params["k"])
    classes = np.unique(labels)
    if not 1 <= k <= len(classes):
        raise DataError(f"classes:{k}: k must be between 1 and {len(classes)}")
    if n_clients * k < len(classes):
        raise DataError(
            f"classes:{k}: {n_clients} clients x {k} classes cannot cover {len(classes)} classes; "
            f"use more clients or a larger k"
        )
    perm = classes[rng.permutation(len(classes))]
    held = [list(perm[j::n_clients]) for j in range(n_clients)]
    for h in held:
        missing = np.setdiff1d(classes, h)
        h.extend(rng.choice(missing, size=k - len(h), replace=False).tolist())
    parts: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
    for c in classes:
        holders = [j for j in range(n_clients) if c in held[j]]
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        for j, chunk in zip(holders, np.array_split(idx, len(holders))):
            parts[j].append(chunk)
    out = [np.sort(np.concatenate(p)) for p in parts]
    if min(len(p) for p in out) == 0:
        raise DataError(f"classes:{k}: some client got no sample; use fewer clients")
    return out


def shards(labels: np.ndarray, n_clients: int, params: dict, rng: np.random.Generator) -> list:
    """McMahan et al. (AISTATS 2017, Sec. 3) pathological non-IID: sort the training samples by
    label, cut them into n_clients x S shards of equal size (sizes differ by at most one) and
    give each client S shards drawn at random without replacement; with S = 2 most clients
    hold two classes. Samples of one label are shuffled before the sort (a stable sort keeps
    the shuffle), so a shard is a random draw of its label's samples. params: s."""
    _check_clients(labels, n_clients)
    s = int(params["s"])
    count = n_clients * s
    if s < 1:
        raise DataError(f"shards:{s}: shards per client must be >= 1")
    if count > len(labels):
        raise DataError(f"shards:{s}: {n_clients} clients x {s} shards exceed the {len(labels)} "
                        f"training samples; use fewer clients or shards")
    order = rng.permutation(len(labels))
    order = order[np.argsort(labels[order], kind="stable")]
    pieces = np.array_split(order, count)
    dealt = rng.permutation(count)
    return [np.sort(np.concatenate([pieces[j] for j in dealt[k * s:(k + 1) * s]]))
            for k in range(n_clients)]


def natural(labels: np.ndarray, n_clients: int, params: dict, rng: np.random.Generator) -> list:
    """The dataset's own clients (e.g. Fed-ISIC2019's 6 centers): client k holds the training
    images of group k. The harness passes the groups in params["groups"]; `rng` is unused."""
    groups = np.asarray(params["groups"])
    found = len(np.unique(groups))
    if n_clients != found:
        raise DataError(f"natural split: the data has {found} groups, got {n_clients} clients")
    return [np.flatnonzero(groups == g) for g in np.unique(groups)]


def _check_clients(labels: np.ndarray, n_clients: int) -> None:
    if n_clients < 1:
        raise DataError(f"n_clients must be >= 1, got {n_clients}")
    if n_clients > len(labels):
        raise DataError(f"{n_clients} clients but only {len(labels)} training samples")


@dataclass(frozen=True)
class SplitKind:
    fn: Split
    positional: tuple[str, ...]  # parameter names given positionally in the spec
    types: dict = field(default_factory=dict)  # name -> type for every accepted parameter
    needs_classes_clients: bool = False  # the client count is the class count
    needs_groups: bool = False  # the client count and membership come from the dataset
    doc: str = ""  # one line for `bench list` and --help


SPLITS: dict[str, SplitKind] = {
    "iid": SplitKind(iid, (), doc="uniform random parts"),
    "dirichlet": SplitKind(
        dirichlet, ("alpha",), {"alpha": float, "min_size": int, "max_tries": int},
        doc="each class over the clients by Dir(alpha) (NIID-Bench); small alpha: strong skew"),
    "silos": SplitKind(silos, (), needs_classes_clients=True,
                       doc="pathological, one class per client, one client per class "
                           "(FederatedFactory's mutually exclusive labels)"),
    "classes": SplitKind(classes_per_client, ("k",), {"k": int},
                         doc="pathological, k classes per client (NIID-Bench's #C=k); also "
                             "pathological:<k>"),
    "shards": SplitKind(shards, ("s",), {"s": int},
                        doc="pathological, McMahan et al.'s: label-sorted data in n x s shards, "
                            "s per client"),
    "natural": SplitKind(natural, (), needs_groups=True,
                         doc="the dataset's own clients (Fed-ISIC2019's centers)"),
}
# the field's other names for a split: the same runs (the canonical name is stored)
ALIASES = {"pathological": "classes"}


@dataclass(frozen=True)
class SplitSpec:
    name: str
    params: tuple[tuple[str, object], ...] = ()

    @property
    def kind(self) -> SplitKind:
        return SPLITS[self.name]

    @property
    def canonical(self) -> str:
        return ":".join([self.name, *(f"{k}={v}" for k, v in self.params)])

    def __call__(self, labels: np.ndarray, n_clients: int, rng: np.random.Generator,
                 groups: np.ndarray | None = None) -> list:
        params = dict(self.params)
        if self.kind.needs_groups:
            if groups is None:
                raise DataError(f"split {self.name!r} needs a dataset with natural clients")
            params["groups"] = groups
        return self.kind.fn(np.asarray(labels), n_clients, params, rng)


def parse_split(spec: str) -> SplitSpec:
    """'dirichlet:0.1' -> SplitSpec('dirichlet', (('alpha', 0.1),)); also 'dirichlet:alpha=0.1'
    and 'dirichlet:0.1:min_size=5'."""
    typed, *args = spec.strip().split(":")
    name = ALIASES.get(typed.lower(), typed.lower())
    if name not in SPLITS:
        raise DataError(f"unknown split {typed!r}; valid choices: {', '.join(SPLITS)} "
                        f"(pathological:<k> is classes:<k>)")
    kind = SPLITS[name]
    params: dict[str, object] = {}
    for i, arg in enumerate(args):
        key, sep, value = arg.partition("=")
        if not sep:
            if i >= len(kind.positional):
                raise DataError(f"split {spec!r}: too many values; {_usage(name)}")
            key, value = kind.positional[i], arg
        if key not in kind.types:
            raise DataError(f"split {spec!r}: unknown parameter {key!r}; {_usage(name)}")
        try:
            params[key] = kind.types[key](value)
        except ValueError:
            raise DataError(f"split {spec!r}: {key} must be a {kind.types[key].__name__}") from None
    missing = [p for p in kind.positional if p not in params]
    if missing:
        raise DataError(f"split {spec!r} needs {', '.join(missing)}; {_usage(name)}")
    return SplitSpec(name, tuple(sorted(params.items())))


def _usage(name: str) -> str:
    kind = SPLITS[name]
    extra = [k for k in kind.types if k not in kind.positional]
    return f"usage: {':'.join([name, *(f'<{p}>' for p in kind.positional)])}" + (
        f"[:{'|'.join(f'{k}=<v>' for k in extra)}]" if extra else ""
    )
