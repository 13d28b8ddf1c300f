"""The house plan: imports only go downward (datasets <- methods <- bench harness)."""
import ast

from conftest import ROOT

def _imports(folder: str) -> set[str]:
    names = set()
    for path in (ROOT / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = path.parent.relative_to(ROOT).parts
                parts = list(base[: len(base) - node.level + 1])
                names.add(".".join(parts + ([node.module] if node.module else [])))
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
    return names


def test_datasets_import_nothing_of_ours():
    ours = {n for n in _imports("datasets") if n.split(".")[0] in ("methods", "bench")}
    assert not ours, ours


def test_methods_import_only_datasets():
    bad = {n for n in _imports("methods") if n.split(".")[0] == "bench"}
    assert not bad, bad
