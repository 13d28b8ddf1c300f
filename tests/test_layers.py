"""The house plan: imports only go downward (datasets <- methods <- bench harness).

The folders are installed as `bench` (harness), `bench.methods` and `bench.datasets`
(pyproject.toml), so a relative import is resolved against those names: inside `methods/`,
`from ..runner import x` is `bench.runner`, the harness. Pitfall: resolving it against the
repository's folders reads it as a top-level `runner` and lets it through.
"""
import ast
from pathlib import Path

from helpers import ROOT

PACKAGES = {"bench": "bench", "methods": "bench.methods", "datasets": "bench.datasets"}


def _floor(module: str) -> str | None:
    """'datasets', 'methods' or 'bench' (the harness) for a module of ours, else None."""
    for floor in ("datasets", "methods"):
        if module == f"bench.{floor}" or module.startswith(f"bench.{floor}.") \
                or module.split(".")[0] == floor:
            return floor
    return "bench" if module.split(".")[0] == "bench" else None


def _imports(folder: str, root: Path = ROOT) -> set[str]:
    """Every module the files of `folder` import, relative imports resolved to their installed
    names."""
    names = set()
    for path in (root / folder).rglob("*.py"):
        package = [PACKAGES[folder], *path.parent.relative_to(root / folder).parts]
        package = ".".join(package).split(".")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package[: len(package) - node.level + 1]
                names.add(".".join(base + ([node.module] if node.module else [])))
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
    return names


def _upward(folder: str, root: Path = ROOT) -> set[str]:
    allowed = {"datasets": {"datasets"}, "methods": {"datasets", "methods"}}[folder]
    return {n for n in _imports(folder, root) if _floor(n) not in (None, *allowed)}


def test_datasets_import_nothing_of_ours():
    assert not _upward("datasets")


def test_methods_import_only_datasets():
    assert not _upward("methods")


def test_an_upward_import_is_caught_however_it_is_written(tmp_path):
    """Planted imports from `methods/` into the harness, each way Python allows."""
    for i, line in enumerate(("from ..runner import execute", "from .. import runner",
                              "from bench.store import RecordStore", "import bench.cli",
                              "from ...report import tables")):
        folder = tmp_path / str(i)
        depth = "federatedfactory/" if line.startswith("from ...") else ""
        (folder / "methods" / depth).mkdir(parents=True)
        (folder / "methods" / depth / "planted.py").write_text(line + "\n")
        (folder / "methods" / "fine.py").write_text("from ..datasets.base import DataError\n"
                                                    "from . import models\nimport torch\n")
        assert _upward("methods", folder), line
    (tmp_path / "ok" / "methods").mkdir(parents=True)
    (tmp_path / "ok" / "methods" / "fine.py").write_text("from ..datasets import base\n")
    assert not _upward("methods", tmp_path / "ok")
