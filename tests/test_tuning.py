"""Sweeps and tuning on validation: a comma list in --set (or a [sweep] table) runs every
setting; `bench table --tune` / `bench report --tune` keep, per dataset, method and split, the
setting whose mean validation score is best, and test numbers take no part (bench/config.py,
bench/report/tables.py)."""
import json

import pytest

from bench.cli import main
from bench.config import ConfigError, parse_overrides, resolve, sweep_settings
from bench.methods import numerics
from bench.methods.results import Evaluation, Metrics
from bench.provenance import provenance
from bench.report.tables import tune_on_validation
from bench.store import RecordStore
from helpers import make_record


def test_a_comma_list_sweeps_its_key_and_several_give_every_combination():
    assert sweep_settings(["rounds=3", "lr=0.01,0.1", "fedprox.mu=0.1, 1"]) == [
        ["rounds=3", "lr=0.01", "fedprox.mu=0.1"], ["rounds=3", "lr=0.01", "fedprox.mu=1"],
        ["rounds=3", "lr=0.1", "fedprox.mu=0.1"], ["rounds=3", "lr=0.1", "fedprox.mu=1"]]
    # a key that holds a list takes the comma list as its one value
    assert sweep_settings(["federatedfactory.exclude_clients=1,2"]) == [
        ["federatedfactory.exclude_clients=1,2"]]
    assert sweep_settings(["lr=[0.01, 0.1, 0.01]"]) == [["lr=0.01"], ["lr=0.1"]]
    with pytest.raises(ConfigError, match="an empty value in the comma list"):
        sweep_settings(["lr=0.1,,0.2"])
    with pytest.raises(ConfigError, match="unknown key"):
        sweep_settings(["nosuchkey=1,2"])


def _ids(capsys, *argv) -> list[str]:
    assert main(["run", *argv, "--dry-run"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    return [x["run_id"] for x in lines]


def test_a_sweep_runs_each_setting_and_its_file_selects_the_same_runs(tmp_path, capsys,
                                                                       monkeypatch):
    """As the user types it: `--set lr=0.01,0.1` doubles FedAvg's runs (not FedAvg-free
    methods' settings); `--write-config` writes it as a [sweep] table that reads back to the
    same runs; the command line's single value wins over the file's sweep."""
    monkeypatch.chdir(tmp_path)
    base = ["--methods", "fedavg,fedprox", "--splits", "silos", "--seeds", "0"]
    one = _ids(capsys, *base)
    swept = _ids(capsys, *base, "--set", "lr=0.01,0.1", "--set", "fedprox.mu=0.01,0.1")
    assert len(one) == 2 and len(swept) == 2 + 4 and set(one) <= set(swept)
    assert main(["run", *base, "--set", "lr=0.01,0.1", "--set", "fedprox.mu=0.01,0.1",
                 "--dry-run", "--write-config", "sweep.toml"]) == 0
    capsys.readouterr()
    text = (tmp_path / "sweep.toml").read_text()
    assert "[sweep]" in text and "[set]" not in text
    assert _ids(capsys, "--config", "sweep.toml") == swept
    assert len(_ids(capsys, "--config", "sweep.toml", "--set", "lr=0.01")) == 3
    # a [sweep] key that holds a list is refused in one line, exit 2
    (tmp_path / "bad.toml").write_text('[sweep]\n"federatedfactory.exclude_clients" = [1, 2]\n')
    assert main(["run", "--config", "bad.toml", "--dry-run"]) == 2
    assert "cannot be swept" in capsys.readouterr().err
    # a list under [set] for a key of one value is refused, pointing to [sweep]
    (tmp_path / "set.toml").write_text('[set]\nlr = [0.01, 0.1]\n')
    assert main(["run", "--config", "set.toml", "--dry-run"]) == 2
    assert "goes in [sweep]" in capsys.readouterr().err


def _evaluation(val: float, test: float) -> Evaluation:
    m = {"accuracy": test, "balanced_accuracy": test, "auroc": test, "f1_macro": test,
         "val": {"accuracy": val, "balanced_accuracy": val, "auroc": val, "f1_macro": val}}
    return Evaluation(m, m)


def _store(tmp_path, runs, metric="accuracy") -> RecordStore:
    """runs: (method, split, [--set items], seed, val, test)."""
    store = RecordStore(tmp_path / "results")
    for method, split, sets, seed, val, test in runs:
        c = resolve("digits", method, split, seed, parse_overrides(sets))
        store.write(make_record(c, Metrics.single(_evaluation(val, test)),
                                dataset_info={"n_classes": 10, "metric": metric,
                                              "class_names": [str(i) for i in range(10)]},
                                provenance=provenance(method, c.dataset,
                                                      numerics.current("cpu")),
                                split={"client_class_counts": [[5] * 10] * 10},
                                curves={"round": [1, 2], "bytes_cumulative": [1e6, 2e6],
                                        **{f"{part}_accuracy": [0.5, 0.6]
                                           for part in ("val", "test")}}))
    return store


# the planted case: lr=0.1 has the best test accuracy, lr=0.01 the best validation one
PLANTED = [("fedavg", "silos", ["lr=0.01"], s, 0.90 - 0.01 * s, 0.70) for s in range(3)] + \
          [("fedavg", "silos", ["lr=0.1"], s, 0.80, 0.95 + 0.01 * s) for s in range(3)] + \
          [("fedavg", "iid", ["lr=0.01"], 0, 0.95, 0.96), ("fedavg", "iid", ["lr=0.1"], 0, 0.97,
                                                            0.90)]


def test_tuning_picks_on_validation_never_on_test(tmp_path):
    records = list(_store(tmp_path, PLANTED).all_records())
    rows, choices = tune_on_validation(records)
    silos = rows[rows["split"] == "silos"]
    assert set(silos["accuracy"]) == {0.70} and len(silos) == 3  # all seeds of lr=0.01
    assert set(rows["method"]) == {"fedavg (tuned)"}
    assert set(rows.loc[rows["split"] == "iid", "accuracy"]) == {0.90}  # lr=0.1 there
    chosen = {c["split"]: c["setting"] for c in choices.to_dict("records")}
    assert chosen == {"silos": "lr=0.01", "iid": "lr=0.1"}
    assert choices.set_index("split").loc["silos", "val"] == pytest.approx(89.0)


def test_tuning_uses_the_datasets_metric_and_keeps_dp_targets_apart(tmp_path):
    # balanced accuracy decides where the dataset says so (ISIC2019's)
    runs = [("fedavg", "silos", ["lr=0.01"], 0, 0.9, 0.5), ("fedavg", "silos", ["lr=0.1"], 0,
                                                            0.8, 0.6)]
    records = list(_store(tmp_path, runs, metric="balanced_accuracy").all_records())
    for r in records:  # validation accuracy disagrees with validation balanced accuracy
        v = r.metrics.variants["model"].selected["val"]
        v["accuracy"] = 1.7 - v["balanced_accuracy"]
    rows, _ = tune_on_validation(records)
    assert list(rows["accuracy"]) == [0.5]
    # runs at two DP targets are two methods, never one tuned against the other
    dp = [("fedavg", "silos", ["lr=0.01", "dp.epsilon=1"], 0, 0.5, 0.5),
          ("fedavg", "silos", ["lr=0.01", "dp.epsilon=8"], 0, 0.9, 0.9)]
    records = list(_store(tmp_path / "dp", dp).all_records())
    rows, choices = tune_on_validation(records)
    assert len(rows) == 2 and choices.empty


def test_bench_table_tune_says_which_setting_won(tmp_path, capsys):
    store = _store(tmp_path, PLANTED)
    assert main(["table", "--out", str(store.root)]) == 0
    captured = capsys.readouterr()
    assert "| fedavg (lr=0.1) |" in captured.out and "--tune" in captured.err
    assert main(["table", "--tune", "--out", str(store.root)]) == 0
    out = capsys.readouterr().out
    assert "| fedavg (tuned) | 90.0 (n=1) | 70.0 ± 0.0 (n=3) |" in out
    assert "| digits | fedavg | silos | lr=0.01 (89.0) | lr=0.01: 89.0 (n=3); lr=0.1: 80.0 (n=3) |" \
        in out
    assert main(["report", "--tune", "--out", str(store.root)]) == 0
    assert "lr=0.01 (89.0)" in (store.root / "report" / "tuning.md").read_text()
    assert "fedavg (tuned)" in (store.root / "report" / "tables.md").read_text()


def test_a_partial_or_failed_setting_never_wins_on_its_luckiest_seed(tmp_path):
    """lr=0.1 run on one seed of three (val 0.99) and lr=1 diverged on two (NaN) are not
    candidates: lr=0.01, complete, is chosen and the choices say why the others were not."""
    runs = [("fedavg", "silos", ["lr=0.01"], s, 0.85, 0.8) for s in range(3)] + \
        [("fedavg", "silos", ["lr=0.1"], 0, 0.99, 0.9)] + \
        [("fedavg", "silos", ["lr=1"], s, v, 0.5) for s, v in ((0, 0.95), (1, None),
                                                                  (2, None))]
    records = list(_store(tmp_path, runs).all_records())
    rows, choices = tune_on_validation(records)
    assert set(rows["accuracy"]) == {0.8} and len(rows) == 3
    text = choices.iloc[0]["candidates"]
    assert "lr=0.1: 1 of 3 seeds, not a candidate" in text
    assert "lr=1.0: 1 of 3 seeds, not a candidate" in text


def test_a_tuned_method_is_labelled_in_every_split_and_a_qualifier_does_not_split_it(tmp_path):
    runs = [("fedavg", "silos", ["lr=0.01"], 0, 0.9, 0.7), ("fedavg", "silos", ["lr=0.1"], 0,
                                                            0.8, 0.9),
            ("fedavg", "iid", ["lr=0.01"], 0, 0.95, 0.96)]
    records = list(_store(tmp_path, runs).all_records())
    records = [r.replace(extra={"qualifier": "note"}) for r in records]
    rows, choices = tune_on_validation(records)
    assert set(rows["method"]) == {"fedavg (note) (tuned)"}
    only = choices[choices["split"] == "iid"].iloc[0]
    assert only["setting"] == "lr=0.01" and only["candidates"] == "the only setting run"


def test_personalised_methods_are_tuned_on_each_clients_own_accuracy(tmp_path):
    """Ditto's lam=0.1 has the better global validation accuracy, lam=1 the better accuracy
    of the clients on their own labels: lam=1 is chosen."""
    runs = [("ditto", "silos", ["ditto.lam=0.1"], 0, 0.5, 0.5),
            ("ditto", "silos", ["ditto.lam=1"], 0, 0.2, 0.2)]
    # what run_personalised writes in its records (tests/test_personalised.py checks it)
    records = [r.replace(extra={"tuned_on": "client_accuracy"})
               for r in _store(tmp_path, runs).all_records()]
    own = {0.1: 0.7, 1.0: 0.95}
    for r in records:
        v = r.metrics.variants["model"].selected["val"]
        v["per_client"] = {"accuracy": {"mean": own[r.config.method_params["lam"]]}}
    rows, choices = tune_on_validation(records)
    assert list(rows["accuracy"]) == [0.2]
    assert choices.iloc[0]["setting"] == "lam=1.0" and choices.iloc[0]["val"] == 95.0


def test_runs_of_two_client_counts_are_two_settings(tmp_path):
    runs = [("fedavg", "dirichlet:0.1", ["n_clients=5"], 0, 0.9, 0.8),
            ("fedavg", "dirichlet:0.1", ["n_clients=10"], 0, 0.8, 0.9)]
    records = list(_store(tmp_path, runs).all_records())
    rows, choices = tune_on_validation(records)
    assert list(rows["n_clients"]) == [5] and choices.iloc[0]["setting"] == "n_clients=5"
