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


def _method_names_in(path: Path, names: set[str], modules: set[str],
                     package: list[str] | None = None) -> list[str]:
    """Where a module of bench/ names a registered method: a string (not a docstring) that is
    a method's name or spells one of its keys or models (`name.param`, `name[variant]`), or an
    import of a method's own module."""
    import re

    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    spelled = re.compile(r"\b(%s)[.\[]\w" % "|".join(map(re.escape, sorted(names))))
    package = package or ["bench", *path.parent.relative_to(ROOT / "bench").parts]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and id(node) not in docstrings:
            if node.value in names or spelled.search(node.value):
                found.append(f"{path.name}:{node.lineno} {node.value[:60]!r}")
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            imported = {module} | {f"{module}.{a.name}" for a in node.names}
            if any(m == own or m.startswith(own + ".") for m in imported for own in modules):
                found.append(f"{path.name}:{node.lineno} imports {module}")
    return found


def test_outside_the_named_grids_no_module_of_bench_names_a_method(tmp_path):
    """The harness knows methods through their contract (methods/base.py) only: the estimate,
    records, figures and commands ask a method's class, never its name. The named grids
    (bench/protocol.py) are data and name the methods they run."""
    from bench.methods.registry import METHODS

    names = set(METHODS)
    # a method's own module; for a method that is a sub-package, the sub-package
    modules = {c.__module__.rsplit(".", 1)[0] if c.__module__.count(".") > 2 else c.__module__
               for c in METHODS.values()}
    found = [hit for path in sorted((ROOT / "bench").rglob("*.py"))
             if path.name != "protocol.py" for hit in _method_names_in(path, names, modules)]
    assert found == []
    # the check itself: a planted name, key and import are found
    planted = tmp_path / "planted.py"  # as if in bench/report/
    planted.write_text('from ..methods.federatedfactory.params import FFParams\n'
                       'if method == "fedavg":\n    key = "moon.mu"\n')
    hits = _method_names_in(planted, names, modules, ["bench", "report"])
    assert len(hits) == 3, hits
