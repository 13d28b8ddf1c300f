"""The metrics against scikit-learn's definitions."""
import warnings

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from bench.methods.evaluation import classification_metrics


def _proba(rng, n, k, levels=None):
    p = rng.random((n, k))
    if levels:  # coarse values: many ties, which the rank form must average like sklearn
        p = np.round(p * levels) / levels + 1e-3
    return p / p.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("levels", [None, 4])
@pytest.mark.parametrize("seed", range(5))
def test_auroc_equals_scikit_learn(seed, levels):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 6, 300)
    p = _proba(rng, 300, 6, levels)
    ours = classification_metrics(p, y, 6)["auroc"]
    p_norm = p / p.sum(axis=1, keepdims=True)
    assert ours == pytest.approx(roc_auc_score(y, p_norm, multi_class="ovr", average="macro"),
                                 abs=1e-12)

    y2 = rng.integers(0, 2, 300)  # two classes: the AUROC of class 1
    p2 = _proba(rng, 300, 2, levels)
    assert classification_metrics(p2, y2, 2)["auroc"] == pytest.approx(
        roc_auc_score(y2, p2[:, 1] / p2.sum(axis=1)), abs=1e-12)

    missing = np.where(y == 5, 0, y)  # a class absent from the labels: macro over the present
    expected = np.mean([roc_auc_score(missing == c, p_norm[:, c]) for c in range(5)])
    assert classification_metrics(p, missing, 6)["auroc"] == pytest.approx(expected, abs=1e-12)


def test_auroc_undefined_with_one_class():
    p = np.full((10, 3), 1 / 3)
    assert classification_metrics(p, np.zeros(10, dtype=int), 3)["auroc"] is None


@pytest.mark.parametrize("seed", range(5))
def test_accuracy_balanced_f1_confusion_equal_scikit_learn(seed):
    from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix,
                                 f1_score)

    rng = np.random.default_rng(seed)
    y = rng.integers(0, 5, 200)
    y[y == 4] = 0  # class 4 absent from the labels (it may still be predicted)
    p = _proba(rng, 200, 5)
    pred = p.argmax(axis=1)
    m = classification_metrics(p, y, 5)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred), abs=1e-12)
    with warnings.catch_warnings():  # sklearn warns when a class is predicted, not present
        warnings.simplefilter("ignore")
        expected = balanced_accuracy_score(y, pred)
    assert m["balanced_accuracy"] == pytest.approx(expected, abs=1e-12)
    assert m["f1_macro"] == pytest.approx(
        f1_score(y, pred, labels=np.arange(5), average="macro", zero_division=0), abs=1e-12)
    assert m["confusion_matrix"] == confusion_matrix(y, pred, labels=np.arange(5)).tolist()
    assert m["per_class_accuracy"][4] is None



def test_evaluation_is_float32_even_inside_bf16_autocast():
    """Training on CUDA runs in bf16 autocast; evaluation must not: bf16 logits tie many test
    scores and lower the AUROC. Inside an enclosing bf16 autocast, predictions equal the plain
    float32 ones."""
    import torch

    from bench.datasets.registry import load_dataset
    from bench.methods.data import DeviceData
    from bench.methods.evaluation import predict_proba
    from bench.methods.models import build_model

    data = DeviceData(load_dataset("digits"), 8, torch.device("cpu"))
    torch.manual_seed(0)
    model = build_model("cnn", 1, 10, 8, "group")
    plain = predict_proba(model, data, data.x_test)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = predict_proba(model, data, data.x_test)
        with torch.no_grad():
            bf16 = model(data.to_float(data.x_test))
    assert bf16.dtype == torch.bfloat16  # the enclosing autocast is real
    np.testing.assert_array_equal(inside, plain)
