"""The README's commands, run as a user would copy them (issue 26: recipes that are tested).

Every `python -m bench ...` line of a ```bash block is parsed by the suite's own parser (every
option and value valid). A `run` is then executed with --dry-run, in a folder holding the
user data its recipe names (an npz and an image folder in the documented formats), with the
README's own example method registered for its recipe; `list`, `estimate` and `status` are
executed as they are. The others (`check`, `table`, `report`, `unlearn`) need stored runs and
are parsed only.
"""
import re
import shlex

import numpy as np
import pytest

from bench.cli import build_parser, main
from helpers import ROOT, readme_example_class

README = (ROOT / "README.md").read_text()
EXECUTED = {"run", "list", "estimate", "status"}


def commands() -> list[list[str]]:
    out = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        text = block.replace("\\\n", " ")
        for line in text.splitlines():
            line = line.split(" && ")[-1].strip()  # the set-up line installs, then runs
            line = re.sub(r"^([A-Z_]+=\S+ )+", "", line)  # PYTHONPATH=. python -m bench ...
            if line.startswith("python -m bench "):
                out.append(shlex.split(line)[3:])
    return out


COMMANDS = commands()


def test_the_readme_is_a_guide():
    assert len(README.splitlines()) <= 300
    for recipe in ("Run the default grid", "A real dataset on a GPU", "Your own data",
                   "A method of your own", "The paper's grid and its check", "A Ray cluster",
                   "Unlearning", "Reading the results"):
        assert f"**{recipe}" in README, recipe
    assert "Security:" in README and "private network" in README
    assert {c[0] for c in COMMANDS} >= {"run", "check", "unlearn", "table", "report", "status",
                                         "list", "estimate"}
    assert "HEADLINE_TABLE" not in README


def user_data(folder):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 200), ("test", 40)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = np.arange(n) % 10
    np.savez(folder / "mydata.npz", **arrays)
    from PIL import Image

    for split, n in (("train", 250), ("test", 4)):
        for c in ("cat", "dog"):
            d = folder / "myimages" / split / c
            d.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
                    d / f"{i}.png")


@pytest.fixture
def readme_method(monkeypatch):
    """The README's FedExP, registered as its recipe says."""
    import sys
    import types

    from bench.methods import registry

    cls = readme_example_class()
    module = types.ModuleType(cls.__module__, cls.aggregate.__globals__["__doc__"])
    monkeypatch.setitem(sys.modules, cls.__module__, module)  # `bench list` reads its docstring
    mine = types.ModuleType("mymethods")  # the recipe's `mymethods:FedExP`
    mine.FedExP = cls
    monkeypatch.setitem(sys.modules, "mymethods", mine)
    monkeypatch.setenv(registry.REFERENCES, "")  # the recipe adds to it; restored after
    monkeypatch.setitem(registry.METHODS, "fedexp", cls)


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(c)[:60] for c in COMMANDS])
def test_recipe(argv, tmp_path, monkeypatch, capsys, readme_method):
    build_parser(argv[0]).parse_args(argv)  # every option and value is valid
    if argv[0] not in EXECUTED:
        return
    monkeypatch.chdir(tmp_path)
    user_data(tmp_path)
    if argv[0] == "run":
        if "--config" in argv:
            argv = [a.replace("experiments/", f"{ROOT}/experiments/") for a in argv]
            if "my_study.toml" in argv:  # the file the recipe's previous line writes
                assert main(["run", "--methods", "fedavg", "--splits", "silos", "--seeds",
                             "0-4", "--dry-run", "--write-config", "my_study.toml"]) == 0
        argv = [*argv, "--dry-run"]
    rc = main(argv)
    assert rc == 0, capsys.readouterr().err


def _first_table(text: str, after: str) -> list[str]:
    """The lines of the first Markdown table after the line that starts with `after`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(after))
    table = []
    for line in lines[start + 1:]:
        if line.startswith("|"):
            table.append(line)
        elif table:
            break
    return table


def test_the_readme_headline_is_the_science_findings_table():
    """One source: the README's headline is docs/findings/science.md's accuracy table, as
    `bench table` printed it from the same records (a rerun that changes one must change
    both)."""
    science = (ROOT / "docs" / "findings" / "science.md").read_text()
    headline = _first_table(README, "## Headline")
    assert len(headline) > 5 and headline == _first_table(science, "**digits: test accuracy")
