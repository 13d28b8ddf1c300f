"""Which code computed a number: fingerprints of the source that determines results.

Records, cached generators and cached sample sets carry a fingerprint of the code that computed
them, so that nothing computed by other code is presented as current (the record store
recomputes stale runs, the generator cache misses; docs/records.md).

A fingerprint hashes the abstract syntax tree of each source file, so comments, docstrings and
formatting do not count and any change to what the code does does, together with the versions
of torch and diffusers (their kernels and schedulers determine the floats). The device type
(CPU or CUDA rounding) is part of the cache keys and is kept in every record.

A method's code is its own modules (the modules of its class and of its base classes; a method
that is a sub-package, all of that sub-package) plus everything it may share: every other
module of `methods/` that holds no registered algorithm, and all of `datasets/` (loading,
resizing and splitting determine the numbers too). `registry.py` and this file are left out.
"""
from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

from ..datasets import base as _datasets_base

METHODS_DIR = Path(__file__).resolve().parent
DATASETS_DIR = Path(_datasets_base.__file__).resolve().parent
NOT_CODE = ("registry.py", "provenance.py", "__init__.py")


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
    """16 hex digits over the named files' syntax trees (a file is named by its folder and
    name, so the same code installed elsewhere has the same fingerprint)."""
    h = hashlib.sha256()
    for path in sorted({Path(p).resolve() for p in paths}):
        h.update(f"{path.parent.name}/{path.name}".encode())
        h.update(_code_digest(path.read_text()))
    return h.hexdigest()[:16]


def library_versions() -> dict:
    import diffusers
    import torch

    return {"torch": torch.__version__, "diffusers": diffusers.__version__}


def own_files(cls: type) -> set[Path]:
    """The modules of `cls` and of its base classes inside `methods/` (a sub-package whole),
    as paths relative to `methods/`."""
    files = set()
    for klass in cls.__mro__:
        module = __import__(klass.__module__, fromlist=["_"])
        path = Path(getattr(module, "__file__", "") or "").resolve()
        if METHODS_DIR not in path.parents:
            continue
        if path.parent != METHODS_DIR:  # a method that is a sub-package
            files |= {p.relative_to(METHODS_DIR) for p in path.parent.rglob("*.py")
                      if p.name not in NOT_CODE}
        else:
            files.add(path.relative_to(METHODS_DIR))
    return files


def method_fingerprint(cls: type, algorithm_classes, methods_dir: Path = METHODS_DIR,
                       datasets_dir: Path = DATASETS_DIR) -> str:
    """The fingerprint of the code that determines `cls`'s numbers, with the library versions.
    `algorithm_classes`: every registered method (their modules are not shared code). The
    folders can be other copies of the source (tests/test_provenance.py edits one)."""
    algorithms = set().union(*(own_files(c) for c in algorithm_classes))
    shared = {p.relative_to(methods_dir) for p in methods_dir.glob("*.py")
              if p.name not in NOT_CODE} - algorithms
    files = [methods_dir / r for r in own_files(cls) | shared]
    files += [p for p in datasets_dir.rglob("*.py") if p.name != "__init__.py"]
    return _combine(source_fingerprint(files), library_versions())


def files_fingerprint(names, folder: Path = METHODS_DIR) -> str:
    """The fingerprint of some modules of `folder` (e.g. a generator's network, schedule and
    loss), with the library versions: for cache keys."""
    return _combine(source_fingerprint(folder / f"{n}.py" for n in names), library_versions())


def _combine(code: str, versions: dict) -> str:
    blob = code + "".join(f"|{k}={v}" for k, v in sorted(versions.items()))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
