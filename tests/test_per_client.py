"""Per-client accuracy: each client served on its own label distribution (the global test set
reweighted by its training label proportions, methods/evaluation.py `per_client`)."""
import numpy as np
import pytest

from bench.cli import main
from bench.methods.evaluation import classification_metrics, per_client
from helpers import stored_records, tiny_overrides


def test_a_tiny_analytic_case():
    """Recalls 1, 0.5, 0. Client 0 holds classes 0 and 1 (3:1), client 1 only class 2:
    accuracy (3 x 1 + 1 x 0.5) / 4 = 0.875 and 0; balanced accuracy 0.75 and 0."""
    out = per_client({"per_class_accuracy": [1.0, 0.5, 0.0]}, [[3, 1, 0], [0, 0, 5]])
    acc, bal = out["accuracy"], out["balanced_accuracy"]
    assert acc["clients"] == [0.875, 0.0] and bal["clients"] == [0.75, 0.0]
    assert acc["worst"] == 0.0 and acc["mean"] == pytest.approx(0.4375)
    assert acc["p10"] == pytest.approx(0.0875)  # linear interpolation between the two
    assert acc["std"] == pytest.approx(0.4375)


def test_reweighting_equals_a_test_set_with_the_clients_label_proportions():
    """The definition: a test set drawn with the client's proportions. With equal test
    images per class, repeating class c's images n_kc times builds it exactly."""
    rng = np.random.default_rng(0)
    n_classes, per_class = 4, 25
    labels = np.repeat(np.arange(n_classes), per_class)
    proba = rng.dirichlet(np.ones(n_classes), size=len(labels))
    proba[labels == 1, 1] += 0.5  # class 1 is recognised better than the others
    entry = classification_metrics(proba, labels, n_classes)
    counts = [[5, 1, 0, 2], [0, 7, 7, 0]]
    out = per_client(entry, counts)
    for k, row in enumerate(counts):
        idx = np.concatenate([np.tile(np.flatnonzero(labels == c), n) for c, n in enumerate(row)])
        direct = classification_metrics(proba[idx], labels[idx], n_classes)
        assert out["accuracy"]["clients"][k] == pytest.approx(direct["accuracy"])
        assert out["balanced_accuracy"]["clients"][k] == pytest.approx(
            direct["balanced_accuracy"])
    # pitfall: the global test accuracy for every client (no reweighting) hides who is served
    assert len({round(a, 6) for a in out["accuracy"]["clients"]}) == 2
    assert entry["accuracy"] not in out["accuracy"]["clients"]


def test_local_models_use_their_own_recalls_and_unknown_classes_drop_out():
    entry = {"per_class_accuracy": [0.5, 0.5, None],
             "clients": [{"per_class_accuracy": [1.0, 0.0, None]}, None]}
    out = per_client(entry, [[1, 1, 8], [1, 0, 0]])
    # class 2 has no test images: left out and the weights renormalised; client 1 diverged
    assert out["accuracy"]["clients"] == [0.5, None]
    assert out["accuracy"]["worst"] == 0.5 and out["accuracy"]["mean"] == 0.5
    assert per_client({"accuracy": 0.5}, [[1, 2]]) is None  # nothing to reweight


def test_records_carry_per_client_numbers_and_the_table_a_worst_client_column(tmp_path,
                                                                              capsys):
    assert main(["run", "--methods", "fedavg,local_only,centralized", "--splits", "silos",
                 "--out", str(tmp_path), *tiny_overrides(rounds=2)]) == 0
    records = {r.method: r for r in stored_records(tmp_path)}
    fed = records["fedavg"].metrics.selected
    clients = fed["per_client"]["accuracy"]["clients"]
    # silos: client k holds class k only, so it is served as well as class k is recognised
    assert clients == pytest.approx(fed["per_class_accuracy"])
    assert fed["per_client"]["accuracy"]["worst"] == min(clients)
    assert fed["val"]["per_client"]["accuracy"]["worst"] is not None
    local = records["local_only"].metrics.selected
    own = [c["per_class_accuracy"][k] for k, c in enumerate(local["clients"])]
    assert local["per_client"]["accuracy"]["clients"] == pytest.approx(own)
    assert records["centralized"].metrics.selected.get("per_client") is None  # no clients
    capsys.readouterr()
    assert main(["table", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "worst-client accuracy" in out
    worst = out.split("worst-client accuracy")[1]
    assert f"{100 * min(clients):.1f} (n=1)" in worst and "| centralized |" not in worst
    assert main(["table", "--out", str(tmp_path), "--on", "val"]) == 0
    assert "worst-client accuracy" in capsys.readouterr().out
