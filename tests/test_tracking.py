"""`bench run --mlflow`: every run of the selection logged to MLflow and read back
(bench/tracking.py)."""
import importlib.util

import pytest

from bench.cli import main
from helpers import stored_records

mlflow = pytest.importorskip("mlflow", reason="mlflow-skinny is the optional .[mlflow] extra")


def _runs(uri):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("flbench")
    return client, client.search_runs([experiment.experiment_id])


def test_mlflow_logs_config_rounds_and_final_metrics_once(tmp_path, capsys):
    out = tmp_path / "results"
    argv = ["run", "--methods", "fedavg", "--splits", "iid,silos", "--seeds", "0", "--set",
            "rounds=3", "--set", "local_epochs=1", "--out", str(out), "--mlflow"]
    assert main(argv) == 0
    assert "mlflow: 2 runs logged" in capsys.readouterr().err
    uri = f"sqlite:///{out.resolve() / 'mlflow.db'}"
    client, runs = _runs(uri)
    records = {r.run_id: r for r in stored_records(out)}
    assert len(runs) == 2
    for run in runs:
        record = records[run.data.tags["flbench.run_id"]]
        assert run.data.params["method"] == "fedavg" and run.data.params["train.rounds"] == "3"
        assert run.data.params["split"] == record.config.split
        history = client.get_metric_history(run.info.run_id, "val_accuracy")
        assert [m.step for m in history] == [1, 2, 3]
        assert [m.value for m in history] == record.curves["val_accuracy"]
        assert run.data.metrics["test/accuracy"] == record.metrics.selected["accuracy"]
        assert run.data.metrics["val/accuracy"] == record.metrics.selected["val"]["accuracy"]
        assert "test/worst_client_accuracy" in run.data.metrics
        assert run.data.metrics["membership_auc"] == record.audit["shared"].auc
    # stored runs are logged once, whatever the reruns
    assert main(argv) == 0
    assert "mlflow: 0 runs logged" in capsys.readouterr().err
    assert len(_runs(uri)[1]) == 2


@pytest.mark.parametrize("absent", ["mlflow", "sqlalchemy"])
def test_mlflow_without_its_packages_is_one_line_and_exit_2(absent, tmp_path, capsys,
                                                           monkeypatch):
    """mlflow-skinny alone cannot open the default SQLite store (CI found it: a fresh
    environment has no SQLAlchemy unless the extra names it)."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == absent else real(name, *a))
    assert main(["run", "--methods", "fedavg", "--splits", "silos", "--seeds", "0",
                 "--out", str(tmp_path), "--mlflow"]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install mlflow-skinny sqlalchemy alembic" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists()  # nothing ran
