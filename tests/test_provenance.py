"""Results know the code that computed them: a change to a method's code makes its stored runs
and its cached generators stale; comments and docstrings do not."""
import json
import shutil

import pytest

import bench.methods.federatedfactory.method as ff_method
import bench.provenance as provenance
from bench.cli import main
from bench.methods.provenance import (DATASETS_DIR, METHODS_DIR, files_fingerprint,
                                      method_fingerprint, source_fingerprint)
from bench.datasets.registry import loader_file
from bench.methods.registry import METHODS
from helpers import tiny_overrides


def test_fingerprint_ignores_comments_and_docstrings_not_code(tmp_path):
    f = tmp_path / "m.py"
    f.write_text('"""Doc."""\ndef g(x):\n    """Doc."""\n    return x + 1  # note\n')
    before = source_fingerprint([f])
    f.write_text('"""Other doc."""\n\n\ndef g(x):\n    # a comment\n    return x + 1\n')
    assert source_fingerprint([f]) == before
    f.write_text('"""Doc."""\ndef g(x):\n    return x + 2\n')
    assert source_fingerprint([f]) != before


def test_fingerprint_does_not_depend_on_where_the_folders_lie(tmp_path):
    """The same files under other roots, in the other order of their absolute paths, give the
    same fingerprint (a CI clone under /tmp with its test copies under /tmp/pytest-* sorted
    otherwise than a checkout under /work did)."""
    def place(first: str, second: str):
        a, b = tmp_path / first / "datasets" / "x.py", tmp_path / second / "methods" / "y.py"
        for path, code in ((a, "X = 1\n"), (b, "Y = 2\n")):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(code)
        return [a, b]
    assert source_fingerprint(place("a", "z")) == source_fingerprint(place("zz", "aa"))


def _copy_source(tmp_path):
    methods, datasets = tmp_path / "methods", tmp_path / "datasets"
    shutil.copytree(METHODS_DIR, methods, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(DATASETS_DIR, datasets, ignore=shutil.ignore_patterns("__pycache__"))
    return methods, datasets


def _edit(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


@pytest.fixture
def edited_source(tmp_path):
    """A copy of methods/ and datasets/ in which the weight-averaging base averages
    unweighted."""
    methods, datasets = _copy_source(tmp_path)
    _edit(methods / "weight_averaging.py", "self.weight += n_samples", "self.weight += 1")
    return methods, datasets


def _changed(methods, datasets) -> set:
    return {n for n, c in METHODS.items() if method_fingerprint(c, METHODS.values())
            != method_fingerprint(c, METHODS.values(), methods, datasets)}


def test_a_change_to_a_method_stales_it_and_its_subclasses_only(edited_source, tmp_path):
    # the weight-averaging base's family, and no other method
    assert _changed(*edited_source) == {"fedavg", "fedprox", "scaffold", "feddyn", "fednova",
                                        "moon", "fedaws", "fedavgm", "fedadam", "fedyogi",
                                        "fedadagrad"}
    methods, datasets = _copy_source(tmp_path / "other")
    _edit(methods / "fedprox.py", "g.add_(p - w0, alpha=self.mu)", "g.add_(p - w0)")
    assert _changed(methods, datasets) == {"fedprox"}
    # the adaptive servers' shared base stales the three, and only them
    methods, datasets = _copy_source(tmp_path / "third")
    _edit(methods / "fedopt.py", "v[n].sqrt() + p.tau", "v[n].sqrt() + 2 * p.tau")
    assert _changed(methods, datasets) == {"fedadam", "fedyogi", "fedadagrad"}


def test_a_shared_module_change_stales_every_method(edited_source):
    methods, datasets = edited_source
    splits = datasets / "splits.py"
    splits.write_text(splits.read_text() + "\nEXTRA = 1\n")
    assert all(method_fingerprint(c, METHODS.values(), METHODS_DIR, datasets, "digits.py")
               != method_fingerprint(c, METHODS.values(), loader="digits.py")
               for c in METHODS.values())


def test_a_dataset_module_stales_its_own_runs_only(tmp_path):
    """Fingerprints per run: a change to one dataset's loader (or a new dataset beside it)
    leaves the runs on other datasets current."""
    from bench.methods.registry import code_fingerprint

    assert loader_file("digits").name == "digits.py"
    assert loader_file("bloodmnist_64").name == "medmnist.py"
    assert loader_file("npz:x.npz").name == "userdata.py"
    methods, datasets = _copy_source(tmp_path)
    _edit(datasets / "cifar10.py", "def ", "def _added():\n    return 1\n\n\ndef ")
    (datasets / "mynewdata.py").write_text("def load(root):\n    return None\n")
    fedavg = METHODS["fedavg"]
    for loader in ("digits.py", "medmnist.py"):
        assert method_fingerprint(fedavg, METHODS.values(), METHODS_DIR, datasets, loader) \
            == method_fingerprint(fedavg, METHODS.values(), loader=loader)
    assert method_fingerprint(fedavg, METHODS.values(), METHODS_DIR, datasets, "cifar10.py") \
        != method_fingerprint(fedavg, METHODS.values(), loader="cifar10.py")
    assert code_fingerprint("fedavg", "digits") != code_fingerprint("fedavg", "cifar10")


def test_run_recomputes_stale_records_and_tables_mark_kept_ones(tmp_path, edited_source,
                                                                monkeypatch, capsys):
    methods, datasets = edited_source
    out = tmp_path / "results"
    # in this process: the edited fingerprint below is a monkeypatch, which workers lack
    args = ["run", "--methods", "fedavg,centralized", "--splits", "silos", "--executor",
            "sequential", "--out", str(out), *tiny_overrides()]
    assert main(args) == 0
    capsys.readouterr()
    # the code changes: FedAvg's numbers now come from the edited module
    monkeypatch.setattr(provenance, "code_fingerprint",
                        lambda name, dataset: method_fingerprint(
                            METHODS[name], METHODS.values(), methods, datasets,
                            loader_file(dataset).name))
    assert main(["table", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    fedavg_row = next(line for line in table.splitlines() if line.startswith("| fedavg |"))
    assert provenance.STALE_MARK in fedavg_row and "computed by other code" in table
    assert main([*args, "--keep-stale"]) == 0
    assert "2 already stored, 0 to run" in capsys.readouterr().err
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "1 stored runs were computed by other code" in err
    assert "1 already stored, 1 to run" in err  # centralized is still current
    kept = list((out / "runs/digits/fedavg").glob("*.json.stale"))
    assert len(kept) == 1 and json.loads(kept[0].read_text())["config"]["method"] == "fedavg"
    assert main(["table", "--out", str(out)]) == 0
    assert provenance.STALE_MARK not in capsys.readouterr().out


# a FederatedFactory run with two generator modules and its server mode only: the cache tests
# need modules, not the whole pipeline
TWO_MODULES = ["federatedfactory.modes=server",
               "federatedfactory.exclude_clients=" + ",".join(map(str, range(2, 10)))]


@pytest.mark.slow
def test_a_change_to_the_generator_code_misses_the_generator_cache(tmp_path, monkeypatch):
    import torch
    from helpers import ff_config

    from bench.runner import execute

    execute(ff_config(extra=TWO_MODULES), torch.device("cpu"), cache_dir=tmp_path)
    again, _ = execute(ff_config(extra=TWO_MODULES), torch.device("cpu"), cache_dir=tmp_path)
    assert {e["cache"] for e in again.extra["modules"]} == {"hit"}
    copy = tmp_path / "source" / "federatedfactory"
    shutil.copytree(METHODS_DIR / "federatedfactory", copy,
                    ignore=shutil.ignore_patterns("__pycache__"))
    net = copy / "network.py"
    net.write_text(net.read_text().replace("layers_per_block=p.gen_layers_per_block",
                                           "layers_per_block=p.gen_layers_per_block + 0"))
    monkeypatch.setattr(ff_method, "files_fingerprint",
                        lambda names, folder: files_fingerprint(names, copy))
    edited, _ = execute(ff_config(extra=TWO_MODULES), torch.device("cpu"), cache_dir=tmp_path)
    assert {e["cache"] for e in edited.extra["modules"]} == {"miss"}


@pytest.mark.slow
def test_generators_trained_with_other_cpu_threads_are_not_reused(tmp_path):
    """CPU float rounding depends on torch's thread count (a generator trained with 2 threads
    differs from one trained with 1 by about 1e-5 after ten steps), so the generator and sample
    caches key on it: a run at 1 thread does not take what a 2-thread run left in the cache,
    and its record is the one an empty cache gives. Pitfall: a cache keyed on the settings and
    the code alone makes a record depend on what the cache happened to hold."""
    import torch
    from helpers import ff_config

    from bench.runner import execute

    cpu, before = torch.device("cpu"), torch.get_num_threads()
    try:
        config = ff_config(extra=TWO_MODULES)
        torch.set_num_threads(1)
        fresh, _ = execute(config, cpu, cache_dir=tmp_path / "empty")
        torch.set_num_threads(2)
        execute(config, cpu, cache_dir=tmp_path / "shared")
        torch.set_num_threads(1)
        after, _ = execute(config, cpu, cache_dir=tmp_path / "shared")
        again, _ = execute(config, cpu, cache_dir=tmp_path / "shared")
    finally:
        torch.set_num_threads(before)
    assert {e["cache"] for e in after.extra["modules"]} == {"miss"}
    assert {e["cache"] for e in again.extra["modules"]} == {"hit"}  # same threads: reused
    assert after.metrics == fresh.metrics
    assert after.extra["classifier_sha256"] == fresh.extra["classifier_sha256"]
