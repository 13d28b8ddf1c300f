"""Which code computed a number: fingerprints of the source that determines results.

Records, cached generators and cached sample sets carry a fingerprint of the code that computed
them, so that nothing computed by other code is presented as current (the record store
recomputes stale runs, the generator cache misses; docs/records.md).

A fingerprint hashes the abstract syntax tree of each source file, so comments, docstrings and
formatting do not count and any change to what the code does does, together with the versions
of torch and diffusers (their kernels and schedulers determine the floats). The device type
(CPU or CUDA rounding) is part of the cache keys and is kept in every record.

A run's code is its method's own modules (the modules of its class and of its base classes; a
method that is a sub-package, all of that sub-package; a method of the user's own, its module
wherever it lies) plus everything it may share: every other module of `methods/` that holds no
registered algorithm, and of `datasets/` the module that loads the run's dataset with every
module of `datasets/` it imports, and the splits (loading, resizing and splitting determine
the numbers too), not the other datasets' loaders: adding a dataset leaves every stored run
current. The registries and this file are left out.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import sys
from pathlib import Path

from ..datasets import base as _datasets_base

METHODS_DIR = Path(__file__).resolve().parent
DATASETS_DIR = Path(_datasets_base.__file__).resolve().parent
NOT_CODE = ("registry.py", "provenance.py", "__init__.py")
# the dataset modules every run uses whatever its dataset (the client split)
EVERY_RUN = ("splits.py",)


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                and body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return tree


@functools.lru_cache(maxsize=256)
def _code_digest(text: str) -> bytes:
    tree = _without_docstrings(ast.parse(text))
    return hashlib.sha256(ast.dump(tree, include_attributes=False).encode()).digest()


def source_fingerprint(paths) -> str:
    """16 hex digits over the named files' syntax trees. A file is named by its folder and
    name, and the files are taken in the order of those names (then of their code), so the
    same code installed elsewhere has the same fingerprint: ordering by absolute path made a
    fingerprint depend on where each folder lay (a user's module beside the installed suite, a
    copy of datasets/ in another folder)."""
    named = {(f"{p.parent.name}/{p.name}", _code_digest(p.read_text()))
             for p in {Path(q).resolve() for q in paths}}
    h = hashlib.sha256()
    for name, digest in sorted(named):
        h.update(name.encode())
        h.update(digest)
    return h.hexdigest()[:16]


def library_versions() -> dict:
    """torch's and diffusers' versions. diffusers' is read from its installed metadata (the
    same string as `diffusers.__version__`), not by importing it: the import takes about half
    a second, and a run of a method that uses no diffusers (FedAvg, say) would pay it."""
    from importlib.metadata import version

    import torch

    return {"torch": torch.__version__, "diffusers": version("diffusers")}


def own_files(cls: type) -> set[Path]:
    """The modules of `cls` and of its base classes inside `methods/` (a sub-package whole),
    as paths relative to `methods/`."""
    files = set()
    for klass in cls.__mro__:
        path = Path(getattr(sys.modules.get(klass.__module__), "__file__", "") or "").resolve()
        if METHODS_DIR not in path.parents:
            continue
        if path.parent != METHODS_DIR:  # a method that is a sub-package
            files |= {p.relative_to(METHODS_DIR) for p in path.parent.rglob("*.py")
                      if p.name not in NOT_CODE}
        else:
            files.add(path.relative_to(METHODS_DIR))
    return files


def outside_files(cls: type) -> set[Path]:
    """The modules of `cls` and its base classes that lie outside `methods/`: a method of the
    user's own (methods/registry.py), and any base class of theirs."""
    from .base import Method

    files = set()
    for klass in cls.__mro__:
        if not (isinstance(klass, type) and issubclass(klass, Method)):
            continue
        path = Path(getattr(sys.modules.get(klass.__module__), "__file__", "") or "").resolve()
        if path.suffix == ".py" and METHODS_DIR not in path.parents:
            files.add(path)
    return files


def method_fingerprint(cls: type, algorithm_classes, methods_dir: Path = METHODS_DIR,
                       datasets_dir: Path = DATASETS_DIR, loader: str | None = None) -> str:
    """The fingerprint of the code that determines `cls`'s numbers on the dataset that
    `loader` (a file name of `datasets/`) loads, with the library versions; every loader when
    None. `algorithm_classes`: every registered method (their modules are not shared code).
    The folders can be other copies of the source (tests/test_provenance.py edits one)."""
    files = method_files(cls, algorithm_classes, methods_dir, datasets_dir, loader)
    return _combine(source_fingerprint(files), library_versions())


def method_files(cls: type, algorithm_classes, methods_dir: Path = METHODS_DIR,
                 datasets_dir: Path = DATASETS_DIR, loader: str | None = None) -> list[Path]:
    """The source files `method_fingerprint` hashes."""
    algorithms = set().union(*(own_files(c) for c in algorithm_classes))
    shared = {p.relative_to(methods_dir) for p in methods_dir.glob("*.py")
              if p.name not in NOT_CODE} - algorithms
    files = [methods_dir / r for r in own_files(cls) | shared] + sorted(outside_files(cls))
    if loader is None:
        files += [p for p in datasets_dir.glob("*.py") if p.name not in NOT_CODE]
    else:
        files += sorted(set().union(*(_imported(datasets_dir / name, datasets_dir)
                                      for name in (loader, *EVERY_RUN))))
    return files


def _imported(path: Path, folder: Path) -> set[Path]:
    """`path` and every module of `folder` it imports, transitively (relative imports:
    `from .base import X`, `from . import files`)."""
    found, todo = set(), [path]
    while todo:
        p = todo.pop()
        if p in found or not p.exists() or p.name in NOT_CODE:
            continue
        found.add(p)
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names = [node.module] if node.module else [a.name for a in node.names]
                todo += [folder / f"{n.split('.')[0]}.py" for n in names]
    return found


def files_fingerprint(names, folder: Path = METHODS_DIR) -> str:
    """The fingerprint of some modules of `folder` (e.g. a generator's network, schedule and
    loss), with the library versions: for cache keys."""
    return _combine(source_fingerprint(folder / f"{n}.py" for n in names), library_versions())


def _combine(code: str, versions: dict) -> str:
    blob = code + "".join(f"|{k}={v}" for k, v in sorted(versions.items()))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
