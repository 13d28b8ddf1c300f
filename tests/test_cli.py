"""The command line as a user runs it: errors, dry runs, a small grid end to end, resume."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from bench.cli import main
from helpers import ROOT, run_cli, stored_records, tiny_overrides


@pytest.mark.parametrize("args,needle", [
    (["run", "--methods", "fedavgg"], "valid choices: centralized, local_only, fedavg"),
    (["run", "--datasets", "nope"], "valid choices: digits"),
    (["run", "--splits", "dirichlet:abc"], "alpha must be a float"),
    (["run", "--splits", "zipf"], "valid choices: iid, dirichlet, silos, classes"),
    (["run", "--set", "rounds=many"], "expected a int"),
    (["run", "--set", "bogus=1"], "valid keys:"),
    (["run", "--set", "fedprox.nu=1"], "valid: mu"),
    (["run", "--set", "lr_schedule=step"], "valid choices: cosine, constant"),
    (["run", "--seeds", "a-b"], "expected integers"),
    (["run", "--device", "tpu"], "valid choices: auto, cpu, cuda"),
    (["run", "--splits", "silos", "--set", "n_clients=3", "--methods", "fedavg"],
     "one client per class"),
    (["run", "--nonsense"], "unrecognized arguments"),
    # clients left out must exist, and one must remain (before anything trains)
    (["run", "--methods", "federatedfactory", "--set", "federatedfactory.exclude_clients=99"],
     "clients [99] do not exist; digits federatedfactory silos seed 0 has clients 0..9"),
    (["run", "--methods", "federatedfactory",
      "--set", "federatedfactory.exclude_clients=0,1,2,3,4,5,6,7,8,9"],
     "leaves out all 10 clients"),
    (["run", "--methods", "fedcvae", "--set", "fedcvae.exclude_clients=-1"],
     "clients [-1] do not exist"),
    (["frobnicate"], "invalid choice"),
    # as users typed them (each gave a misleading line or a traceback before)
    (["run", "--seeds", "2-0"], "a range goes from low to high, e.g. 0-2"),
    (["run", "--methods", "fedprox", "--set", "fedprox.mu=-1"], "fedprox.mu must be >= 0"),
    (["run", "--set", "mu=0.1"], "set as METHOD.mu: fedprox.mu or moon.mu"),
    (["run", "--set", "fedexq.beta=0.5"], "unknown method 'fedexq'; valid methods:"),
    (["run", "--methods", "federatedfactory", "--set", "federatedfactory.exclude_clients=[99]"],
     "clients [99] do not exist"),
    # a dry run and --write-config refuse what a real run refuses
    (["run", "--methods", "fedavg", "--splits", "silos", "--set", "n_clients=5", "--dry-run"],
     "silos needs one client per class: 10 clients, got 5"),
    (["run", "--methods", "fedavg", "--splits", "classes:20", "--dry-run"],
     "k must be between 1 and 10"),
])
def test_bad_input_one_line_exit_2(tmp_path, capsys, args, needle):
    rc = main([*args, "--out", str(tmp_path)] if args[0] == "run" else args)
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith("bench: error:"), err
    assert needle in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_dry_run_lists_resolved_configs(capsys):
    assert main(["run", "--dry-run"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    configs = [json.loads(line) for line in out]
    # 4 split-dependent baselines x 3 splits (iid, Dirichlet 0.1, silos) + one pooled
    # centralized run + FF and FedCVAE-Ens under silos
    assert len(configs) == 15
    assert {c["split"] for c in configs} == {"pooled", "iid", "dirichlet:alpha=0.1", "silos"}
    assert {c["method"] for c in configs} == {"centralized", "local_only", "fedavg", "fedprox",
                                             "scaffold", "federatedfactory", "fedcvae"}
    assert [c["split"] for c in configs if c["method"] in ("federatedfactory", "fedcvae")] \
        == ["silos", "silos"]
    assert all(c["train"]["local_epochs"] == 10 and c["resolution"] == 8 for c in configs)


def test_a_method_alone_runs_under_its_default_splits(capsys):
    """FederatedFactory runs under silos in the default grid (README): asked for alone, it
    stays there rather than training ~100 generators under IID and Dirichlet."""
    assert main(["run", "--dry-run", "--methods", "federatedfactory,fedavg"]) == 0
    configs = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    by_method = {m: sorted(c["split"] for c in configs if c["method"] == m)
                 for m in ("federatedfactory", "fedavg")}
    assert by_method["federatedfactory"] == ["silos"]
    assert len(by_method["fedavg"]) == 3


@pytest.mark.slow
def test_two_processes_share_one_grid(tmp_path):
    """Two `bench run` on one folder: each run is computed once, by one of them (claims), and
    both end with the whole grid's tables."""
    args = ["run", "--methods", "fedavg,fedprox,scaffold,local_only", "--splits", "iid,silos",
            "--out", str(tmp_path), *tiny_overrides(rounds=4)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "bench", *args, "--threads", "1"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    computed = [sum(line.startswith("[") and "another process" not in line
                    for line in err.splitlines()) for _, err in outs]
    assert sum(computed) == 8, computed  # every run once, none twice
    # the whole grid, both: accuracy, AUROC, worst-client accuracy and membership AUC
    assert all(out.count("| fedavg |") == 4 for out, _ in outs)
    assert len(list((tmp_path / "runs").rglob("*.json"))) == 8
    assert not list((tmp_path / "runs").rglob("*.claim"))


@pytest.mark.slow
def test_local_only_has_validation_metrics(tmp_path, capsys):
    args = ["run", "--methods", "local_only", "--splits", "iid", "--out", str(tmp_path),
            *tiny_overrides()]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["table", "--on", "val", "--out", str(tmp_path)]) == 0
    assert "| local_only |" in capsys.readouterr().out


@pytest.mark.slow
def test_grid_end_to_end_then_skip_then_force(tmp_path, capsys):
    args = ["run", "--methods", "centralized,fedavg,local_only", "--splits", "silos,iid",
            "--out", str(tmp_path), *tiny_overrides()]
    assert main(args) == 0
    cap = capsys.readouterr()
    assert "| fedavg |" in cap.out and "silos" in cap.out
    files = sorted((tmp_path / "runs").rglob("*.json"))
    assert len(files) == 5  # centralized once, two splits for the others
    record = json.loads(files[0].read_text())
    for key in ("config", "metrics", "curves", "communication", "timings", "environment",
                "split", "checksum", "schema"):
        assert key in record
    mtimes = {f: f.stat().st_mtime_ns for f in files}
    assert main(args) == 0
    assert "5 already stored, 0 to run" in capsys.readouterr().err
    assert {f: f.stat().st_mtime_ns for f in files} == mtimes
    assert main([*args, "--force", "--methods", "fedavg", "--splits", "silos"]) == 0
    assert "0 already stored, 1 to run" in capsys.readouterr().err
    assert (tmp_path / "tables" / "last_run_selected.csv").exists()
    assert main(["table", "--out", str(tmp_path)]) == 0
    assert "| centralized |" in capsys.readouterr().out


def test_table_without_runs_is_a_clear_error(tmp_path, capsys):
    assert main(["table", "--out", str(tmp_path)]) == 2
    assert "run `python -m bench run` first" in capsys.readouterr().err


@pytest.mark.slow
def test_kill_mid_grid_then_resume(tmp_path):
    """A grid killed with SIGKILL keeps its finished records and resumes from them (one
    process: joblib's workers, orphaned by the kill, could still finish a run)."""
    args = ["run", "--methods", "fedavg,fedprox,scaffold", "--splits", "iid,silos",
            "--executor", "sequential", "--out", str(tmp_path), *tiny_overrides(rounds=3)]
    proc = subprocess.Popen([sys.executable, "-m", "bench", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "runs").rglob("*.json")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stored = len(list((tmp_path / "runs").rglob("*.json")))
    assert 1 <= stored < 6
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    assert f"{stored} already stored, {6 - stored} to run" in done.stderr
    assert len(list((tmp_path / "runs").rglob("*.json"))) == 6
    assert not list((tmp_path / "runs").rglob("*.tmp"))


@pytest.mark.slow
def test_ctrl_c_reports_and_resumes(tmp_path):
    # runs long enough (~2 s each) that three are left when the first is stored
    args = ["run", "--methods", "fedavg,fedprox", "--splits", "iid,silos",
            "--out", str(tmp_path), *tiny_overrides(rounds=15)]
    proc = subprocess.Popen([sys.executable, "-m", "bench", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "runs").rglob("*.json")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the grid finished before the interrupt arrived")
    assert proc.returncode == 130
    assert "rerun the same command to resume" in err


@pytest.mark.slow
def test_python_m_bench_from_another_folder(tmp_path):
    """The installed suite runs from anywhere and does not take the name `datasets`."""
    out = run_cli("list", cwd=tmp_path)
    assert out.returncode == 0 and "digits" in out.stdout
    probe = subprocess.run([sys.executable, "-c",
                            "import importlib.util as u; s = u.find_spec('datasets'); "
                            "print(s.origin if s else None)"],
                           capture_output=True, text=True, cwd=tmp_path)
    assert str(ROOT) not in probe.stdout


def test_divergence_is_recorded_not_a_crash(tmp_path, capsys):
    """A learning rate far too large makes weights NaN: the run stops, keeps its best finite
    round (if any) and says where it diverged; the grid goes on."""
    args = ["run", "--methods", "scaffold,local_only,centralized", "--splits", "silos",
            "--set", "lr=1e4", "--out", str(tmp_path), *tiny_overrides(rounds=3)]
    assert main(args) == 0
    records = stored_records(tmp_path)
    assert len(records) == 3
    assert all(r.metrics.headline.diverged_at for r in records), [r.metrics for r in records]
    assert "diverged at" in capsys.readouterr().err


def test_generator_grid_sweeps_relative_to_the_preset(capsys):
    """`--grid generator`: each seed's FederatedFactory run at 1/8-2x the preset's images seen
    and 1/4-2x its sampler steps, one setting at a time; with the paper preset the same
    factors apply to the paper's values (the knee, before 25M images per generator)."""
    def swept(*extra):
        assert main(["run", "--grid", "generator", "--seeds", "0", "--dry-run", *extra]) == 0
        configs = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
        return sorted((c["method_params"]["gen_images_seen"], c["method_params"]["sampler_steps"])
                      for c in configs)

    assert swept() == [(1600, 7), (3200, 7), (6400, 7), (12800, 2), (12800, 4), (12800, 7),
                       (12800, 14), (25600, 7)]
    paper = swept("--set", "federatedfactory.preset=paper")
    assert (25_000_000, 50) in paper and (3_125_000, 50) in paper and (25_000_000, 13) in paper
    assert len(paper) == 8


def test_cpu_scale_gives_colour_data_the_colour_preset(capsys):
    """At `--scale cpu` FederatedFactory's generators of colour data (the `colour` grid's
    photos) learn at 16 px, those of grey data at the table's resolution."""
    assert main(["run", "--grid", "colour", "--seeds", "0", "--methods", "federatedfactory",
                 "--dry-run"]) == 0
    colour = json.loads(capsys.readouterr().out.strip())
    assert colour["method_params"]["preset"] == "cpu_colour"
    assert colour["method_params"]["gen_resolution"] == 16 and "at 16 px" in colour["summary"]
    assert colour["method_params"]["sampler_steps"] == 13  # as measured on colour images
    assert colour["n_clients"] == 8 and colour["resolution"] == 32
    assert main(["run", "--datasets", "pneumoniamnist", "--scale", "cpu", "--methods",
                 "federatedfactory", "--dry-run"]) == 0
    grey = json.loads(capsys.readouterr().out.strip())
    assert grey["method_params"]["preset"] == "cpu" and grey["method_params"]["gen_resolution"] == 0


def test_list_shows_whole_descriptions_and_a_methods_set_keys(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    fednova = next(line for line in out.splitlines() if line.strip().startswith("fednova"))
    assert fednova.rstrip().endswith("with momentum).")  # its first sentence, not cut
    assert main(["list", "--params", "federatedfactory"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "--set federatedfactory.KEY=VALUE; defaults of preset 'cpu'" in lines[0]
    keys = {line.split("=")[0].strip(): line for line in lines[1:]}
    assert "12800" in keys["gen_images_seen"] and "named settings: cpu" in keys["preset"]
    assert "left out (unlearning)" in keys["exclude_clients"]
    assert main(["list", "--params", "fedprox"]) == 0
    assert "mu=0.01  weight of the proximal term" in capsys.readouterr().out
    assert main(["list", "--params", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "valid choices: centralized" in err


def test_help_imports_no_torch_and_commands_import_no_optional_extras(tmp_path):
    """`python -m bench --help` lists the commands from their one-line help alone (torch takes
    seconds to import); `list` and `status` import torch but no Ray, TensorBoard, seaborn or
    diffusers (benchmarks/test_budget.py times the import), and neither does a FedAvg run,
    whose record names diffusers' version (read from its metadata: importing diffusers to
    read it cost every run half a second)."""
    code = ("import sys\nfrom bench.cli import main\ntry:\n    main(sys.argv[1:])\n"
            "except SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'ray', 'tensorboard', 'seaborn', 'diffusers')"
            " if m in sys.modules))")
    fedavg = ["run", "--methods", "fedavg", "--splits", "iid", "--set", "rounds=1", "--set",
              "local_epochs=1", "--executor", "sequential", "--out", str(tmp_path)]
    for argv, loaded in ((["--help"], "[]"), (["list"], "['torch']"), (["status"], "['torch']"),
                         (fedavg, "['torch']")):
        out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True,
                             text=True, cwd=ROOT, check=True)
        assert out.stdout.strip().splitlines()[-1] == loaded, (argv, out.stdout[-300:])


def test_the_fields_names_are_understood(capsys, tmp_path):
    """`--methods all`, names in any case, `bench check --help` naming every reference, and
    --write-config onto a folder saying so (each seen failing as a newcomer typed it)."""
    def runs(*args):
        capsys.readouterr()
        assert main(["run", *args, "--dry-run"]) == 0
        return [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    from bench.methods.registry import METHODS

    assert {c["method"] for c in runs("--methods", "all", "--splits", "silos")} == set(METHODS)
    assert [c["method"] for c in runs("--methods", "FedAvg", "--datasets", "Digits",
                                      "--splits", "silos")] == ["fedavg"]
    # the pathological splits by the field's names: McMahan's shards, and pathological:K for
    # NIID-Bench's #C=K (stored under its canonical name, so the same runs as classes:K)
    named = runs("--methods", "fedavg", "--splits", "pathological:2,shards:2,Silos")
    assert [c["split"] for c in named] == ["classes:k=2", "shards:s=2", "silos"]
    assert named[0]["run_id"] == runs("--methods", "fedavg", "--splits", "classes:2")[0]["run_id"]
    with pytest.raises(SystemExit):
        main(["check", "--help"])
    assert "peers" in capsys.readouterr().out
    assert main(["run", "--write-config", str(tmp_path), "--dry-run"]) == 2
    assert "is a folder; give a file name" in capsys.readouterr().err


def test_a_fresh_clone_has_a_table_to_show(tmp_path, capsys):
    """Before anything has run, `bench table` says where a table is, and `bench table
    --reference smoke` shows the numbers the committed reference expects of the default grid
    (the rough edge: a fresh clone's `bench table` had nothing to show)."""
    assert main(["table", "--out", str(tmp_path / "results")]) == 2
    assert "`python -m bench table --reference smoke`" in capsys.readouterr().err
    assert main(["table", "--reference", "smoke"]) == 0
    out = capsys.readouterr().out
    cells = json.loads((ROOT / "bench" / "references" / "smoke.json").read_text())["cells"]
    fedavg = next(c for c in cells if c["method"] == "fedavg" and c["split"] == "silos"
                  and c["metric"] == "accuracy")
    row = next(line for line in out.splitlines() if line.startswith("| fedavg |"))
    assert f"{fedavg['expected']:.1f}" in row and "digits: test accuracy" in out
    for args, needle in ((["science"], "is a science reference"),
                         (["paper"], "is a published reference"), (["nope"], "no reference"),
                         (["smoke", "--on", "val"], "apply to stored runs"),
                         (["smoke", "--also", "elsewhere"], "apply to stored runs")):
        assert main(["table", "--reference", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err
    assert main(["table", "--reference", "smoke", "--methods", "FedAvg"]) == 0  # any case
    assert "| fedavg |" in capsys.readouterr().out
