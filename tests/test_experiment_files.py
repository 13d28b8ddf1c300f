"""Experiment files (`bench run --config` / `--write-config`): round trip, precedence, errors,
and the example files under experiments/."""
import json

import pytest

from bench.cli import main
from bench.protocol import GRIDS
from helpers import ROOT

EXAMPLES = sorted((ROOT / "experiments").glob("*.toml"))


def dry_run(capsys, *args) -> list[dict]:
    assert main(["run", *args, "--dry-run"]) == 0, capsys.readouterr().err
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_write_config_round_trips(tmp_path, capsys):
    args = ["--methods", "fedavg,fedprox,federatedfactory", "--splits", "silos,dirichlet:0.3",
            "--seeds", "1-2", "--set", "rounds=3", "--set", "fedprox.mu=0.5",
            "--set", "federatedfactory.exclude_clients=2,3", "--set", "lr_schedule=constant",
            "--threads", "2", "--keep-stale"]
    path = tmp_path / "exp.toml"
    direct = dry_run(capsys, *args, "--write-config", str(path))
    text = path.read_text()
    assert 'methods = [' in text and '"fedprox.mu" = 0.5' in text and "keep-stale = true" in text
    assert dry_run(capsys, "--config", str(path)) == direct
    assert len(direct) == 12  # 3 methods x 2 splits x 2 seeds


def test_command_line_overrides_the_file(tmp_path, capsys):
    path = tmp_path / "exp.toml"
    path.write_text('methods = ["fedavg"]\nsplits = ["silos"]\nseeds = [0, 1]\n'
                    '[set]\nrounds = 3\n[set.fedprox]\nmu = 0.2\n')
    runs = dry_run(capsys, "--config", str(path))
    assert [(r["method"], r["seed"], r["train"]["rounds"]) for r in runs] == \
        [("fedavg", 0, 3), ("fedavg", 1, 3)]
    runs = dry_run(capsys, "--config", str(path), "--seeds", "4", "--set", "rounds=5",
                   "--methods", "fedprox")
    assert [(r["method"], r["seed"], r["train"]["rounds"], r["method_params"]["mu"])
            for r in runs] == [("fedprox", 4, 5, 0.2)]


@pytest.mark.parametrize("text,needle", [
    ('metods = ["fedavg"]\n', "unknown key 'metods'; valid keys: grid, all, methods"),
    ('methods = \n', "not valid TOML"),
    ('[set]\nbogus = 1\n', "--set bogus: unknown key; valid keys:"),
    ('set = 3\n', "`set` must be a table"),
    ('dry-run = true\n', "unknown key 'dry-run'"),  # flags of the moment stay on the line
    ('yes = true\n', "unknown key 'yes'"),
    ('force = "yes"\n', "force must be true or false"),
])
def test_bad_files_one_line_exit_2(tmp_path, capsys, text, needle):
    path = tmp_path / "exp.toml"
    path.write_text(text)
    assert main(["run", "--config", str(path), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("bench: error:") and needle in err, err
    assert not (tmp_path / "runs").exists()


def test_missing_file_and_existing_target(tmp_path, capsys):
    assert main(["run", "--config", str(tmp_path / "none.toml")]) == 2
    assert "cannot read it" in capsys.readouterr().err
    target = tmp_path / "kept.toml"
    target.write_text("mine\n")
    assert main(["run", "--dry-run", "--write-config", str(target)]) == 2
    assert "the file exists" in capsys.readouterr().err
    assert target.read_text() == "mine\n"  # never overwritten


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_files_select_what_they_say(path, capsys):
    runs = dry_run(capsys, "--config", str(path))
    assert runs
    if path.stem in GRIDS:  # a named grid's file selects exactly that grid
        assert [r["run_id"] for r in runs] == \
            [r["run_id"] for r in dry_run(capsys, "--grid", path.stem)]


def test_examples_cover_the_named_grids_and_a_gpu_study():
    assert {p.stem for p in EXAMPLES} >= {*GRIDS, "cifar10_gpu"}
