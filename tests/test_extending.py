"""A method that lives in the user's own repository (methods/registry.py): registered by an
entry point of an installed package, or named as module:Class, it runs like the suite's own,
in joblib workers too, and its records' fingerprint covers its source (an edit makes them
stale). Run as a user would: `python -m bench` in a process of its own."""
import json
import os
import subprocess
import sys

import pytest

from helpers import ROOT

pytestmark = pytest.mark.slow

TINY = ["--splits", "silos", "--seeds", "0", "--set", "rounds=2", "--set", "local_epochs=1",
        "--executor", "joblib", "--workers", "2", "--threads", "1"]


def _block() -> str:
    import re

    text = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(.*?class FedExP.*?)```", text, re.S).group(1)
    return "\n".join(line[2:] for line in block.splitlines())


def bench(*args, path, cwd):
    env = {**os.environ, "PYTHONPATH": str(path), "PYTHONUNBUFFERED": "1"}
    env.pop("FLBENCH_METHODS", None)
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=600, check=False)


def records(out):
    return {json.loads(p.read_text())["config"]["method"]: json.loads(p.read_text())
            for p in (out / "runs").rglob("*.json")}


def test_an_entry_point_method_runs_by_name_and_its_edits_stale_its_records(tmp_path):
    site = tmp_path / "site"
    (site / "mymethods").mkdir(parents=True)
    (site / "mymethods" / "__init__.py").write_text(_block())
    info = site / "mymethods-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: mymethods\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[flbench.methods]\nfedexp = mymethods:FedExP\n")

    listed = bench("list", path=site, cwd=tmp_path)
    assert listed.returncode == 0 and "fedexp" in listed.stdout, listed.stderr
    out = tmp_path / "results"
    done = bench("run", "--methods", "fedavg,fedexp", "--set", "fedexp.eps=0.01",
                 "--out", str(out), *TINY, path=site, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    stored = records(out)
    assert set(stored) == {"fedavg", "fedexp"}
    assert stored["fedexp"]["config"]["method_params"] == {"eps": 0.01}
    assert stored["fedexp"]["metrics"] != stored["fedavg"]["metrics"]
    # an edit to what the method computes makes its record stale, not FedAvg's
    module = site / "mymethods" / "__init__.py"
    module.write_text(module.read_text().replace("2 * (spread", "2.0 * (spread"))
    again = bench("run", "--methods", "fedavg,fedexp", "--set", "fedexp.eps=0.01",
                  "--out", str(out), *TINY, path=site, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "1 stored runs were computed by other code" in again.stderr
    assert "1 already stored, 1 to run" in again.stderr


def test_a_module_class_method_runs_in_joblib_workers(tmp_path):
    (tmp_path / "mymethods.py").write_text(_block())
    out = tmp_path / "results"
    done = bench("run", "--methods", "mymethods:FedExP,fedavg", "--out", str(out), *TINY,
                 path=tmp_path, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert set(records(out)) == {"fedavg", "fedexp"}


@pytest.mark.parametrize("ref, says", [
    ("nosuchmodule:X", "No module named 'nosuchmodule'"),
    ("mymethods:Missing", "has no attribute 'Missing'"),
    ("mymethods:NotAMethod", "is not a subclass of bench.methods.base.Method"),
])
def test_a_bad_reference_is_one_line_and_exit_2(ref, says, tmp_path):
    (tmp_path / "mymethods.py").write_text("class NotAMethod:\n    pass\n")
    done = bench("run", "--methods", ref, "--dry-run", path=tmp_path, cwd=tmp_path)
    assert done.returncode == 2 and says in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_the_readme_method_keeps_the_contract(tmp_path, monkeypatch):
    import importlib

    from bench.conformance import check_method

    (tmp_path / "readme_methods.py").write_text(_block())
    monkeypatch.syspath_prepend(str(tmp_path))
    cls = importlib.import_module("readme_methods").FedExP
    checks = check_method(cls, workdir=tmp_path / "check")
    assert all(c.passed for c in checks) and "vectorises_clients" in {c.name for c in checks}


def test_a_broken_entry_point_is_one_line_and_exit_2(tmp_path):
    site = tmp_path / "site"
    info = site / "broken-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[flbench.methods]\nbroken = nosuchpkg:Method\n")
    done = bench("list", path=site, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "entry point broken" in done.stderr and "fix or uninstall" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
