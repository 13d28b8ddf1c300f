"""Test metrics and validation-based selection.

Metrics, as scikit-learn defines them (tests/test_metrics.py checks equality) but computed
from one confusion matrix and one ranking, as they run after every round: accuracy, balanced
accuracy, macro one-vs-rest AUROC (for two classes, the AUROC of the positive class), macro
F1, per-class accuracy (recall) and the confusion matrix. The round whose test metrics are reported is the one with the best validation
accuracy (ties: lower validation loss, then the earlier round); the test set never takes part
in that choice.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import DeviceData
from .results import Evaluation, Metrics

CURVE_METRICS = ("accuracy", "balanced_accuracy", "auroc", "f1_macro", "loss")


@torch.no_grad()
def _log_softmax(model: nn.Module, data: DeviceData, x: torch.Tensor,
                 batch_size: int) -> torch.Tensor:
    """float32 log-softmax of the model's logits for uint8 images `x` already on the device.

    Evaluation runs in float32 on every device, autocast switched off even where training
    uses bf16 (CUDA) and even inside an enclosing autocast: bf16 logits keep 8 bits of
    mantissa, so many test images would tie and the AUROC would drop."""
    model.eval()
    out = []
    with torch.autocast(data.device.type, enabled=False):
        for chunk in torch.split(x, batch_size):
            logits = model(data.to_float(chunk))
            out.append(F.log_softmax(logits.float(), dim=1))
    return torch.cat(out)


def predict_proba(model: nn.Module, data: DeviceData, x: torch.Tensor,
                  batch_size: int = 1024) -> np.ndarray:
    """Class probabilities (float64, on the CPU) for uint8 images `x` on the device."""
    return _log_softmax(model, data, x, batch_size).exp().double().cpu().numpy()


def predict_log_proba(model: nn.Module, data: DeviceData, x: torch.Tensor,
                      batch_size: int = 1024) -> np.ndarray:
    """Log class probabilities (float64, on the CPU): finite however confident the model is,
    where exponentiating in float32 underflows to 0 below about e^-103 (a product of experts
    needs the logs: methods/federatedfactory/experts.py)."""
    return _log_softmax(model, data, x, batch_size).double().cpu().numpy()


def classification_metrics(proba: np.ndarray, labels: np.ndarray, n_classes: int,
                           detail: bool = True) -> dict:
    """Accuracy, balanced accuracy (mean recall over the classes present), macro F1 over all
    classes (0 for a class never predicted nor present), log loss and AUROC, from one confusion
    matrix; equal to scikit-learn's functions of the same names (tests/test_metrics.py)."""
    labels = np.asarray(labels)
    proba = proba / proba.sum(axis=1, keepdims=True)
    pred = proba.argmax(axis=1)
    cm = np.bincount(labels * n_classes + pred, minlength=n_classes ** 2)
    cm = cm.reshape(n_classes, n_classes)
    tp, support, predicted = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    f1_denominator = support + predicted  # 2 tp + fp + fn
    m = {
        "accuracy": float(tp.sum() / len(labels)),
        "balanced_accuracy": float(np.mean(tp[support > 0] / support[support > 0])),
        "f1_macro": float(np.mean(np.divide(2 * tp, f1_denominator, where=f1_denominator > 0,
                                            out=np.zeros(n_classes)))),
        "loss": float(-np.log(np.clip(proba[np.arange(len(labels)), labels], 1e-12, None)).mean()),
        "auroc": _auroc(proba, labels, n_classes),
    }
    # what each client's own label distribution makes of the model (per_client, below)
    m["per_class_accuracy"] = [float(cm[c, c] / support[c]) if support[c] else None
                               for c in range(n_classes)]
    if detail:
        m["confusion_matrix"] = cm.tolist()
    return m


def per_client(entry: dict, client_class_counts: list[list[int]]) -> dict | None:
    """Each client served on its own label distribution. Personalised-FL papers test each
    client on data of its own label distribution (e.g. the label-skew experiments of
    LG-FedAvg, Liang et al., 2020, and FedRep, Collins et al., ICML 2021, where a client's test
    images come from its training classes); with one global test set the usual form is the
    test set reweighted by the client's training label proportions, exactly:

        accuracy_k          = sum_c (n_kc / n_k) recall_c
        balanced_accuracy_k = mean of recall_c over the classes c that client k holds

    where recall_c is the model's accuracy on the test images of class c (a class without
    test images is left out and the weights renormalised). `entry`: test (or validation)
    metrics with `per_class_accuracy`; where it holds `clients` (local-only: each client's own
    model), client k's own recalls are used. Returns per-client values and their summary
    (mean, worst, 10th percentile, std over clients), or None without clients or recalls."""
    counts = np.asarray(client_class_counts, dtype=float)
    own = entry.get("clients")
    if counts.ndim != 2 or not len(counts) or (own is None and "per_class_accuracy" not in entry):
        return None
    acc, bal = [], []
    for k, row in enumerate(counts):
        source = own[k] if own is not None else entry
        recall = None if source is None else source.get("per_class_accuracy")
        if recall is None:  # a local model that diverged before any finite round
            acc.append(None)
            bal.append(None)
            continue
        recall = np.array([np.nan if r is None else r for r in recall], dtype=float)
        held = (row > 0) & ~np.isnan(recall)
        if not held.any():
            acc.append(None)
            bal.append(None)
            continue
        acc.append(float(np.sum(row[held] * recall[held]) / row[held].sum()))
        bal.append(float(recall[held].mean()))
    return {"accuracy": _over_clients(acc), "balanced_accuracy": _over_clients(bal)}


def with_per_client(metrics: Metrics, client_class_counts: list[list[int]]) -> Metrics:
    """`metrics` with `per_client` (above) added to every test and validation entry."""
    def add(entry: dict | None) -> dict | None:
        if entry is None:
            return None
        out = {**entry, "per_client": per_client(entry, client_class_counts)}
        if "val" in entry:
            out["val"] = {**entry["val"],
                          "per_client": per_client(entry["val"], client_class_counts)}
        return out
    return Metrics({v: Evaluation(add(e.selected), add(e.final), e.diverged_at)
                    for v, e in metrics.variants.items()}, metrics.headline_variant)


def _over_clients(values: list) -> dict:
    present = np.array([v for v in values if v is not None], dtype=float)
    summary = {"mean": None, "worst": None, "p10": None, "std": None}
    if len(present):
        summary = {"mean": float(present.mean()), "worst": float(present.min()),
                   "p10": float(np.percentile(present, 10)), "std": float(present.std())}
    return {"clients": values, **summary}


def _auroc(proba: np.ndarray, labels: np.ndarray, n_classes: int) -> float | None:
    """Macro one-vs-rest AUROC over the classes present in `labels` (two classes: the AUROC
    of class 1), equal to scikit-learn's roc_auc_score (tests/test_metrics.py) in its
    Mann-Whitney form, AUROC_c = (sum of the positives' ranks
    - n_pos (n_pos + 1) / 2) / (n_pos n_neg), with average ranks for ties, for every class in
    one vectorised ranking. It runs after every round, where scikit-learn's per-class ROC
    curves cost as much as 5 % of a small FedAvg round."""
    present = np.unique(labels)
    if len(present) < 2:
        return None  # undefined with one class in the labels
    classes = np.array([1]) if n_classes == 2 else present
    from scipy.stats import rankdata  # here: scipy.stats takes a second to import

    ranks = rankdata(proba[:, classes], axis=0)
    positive = labels[:, None] == classes[None, :]
    n_pos = positive.sum(axis=0)
    n_neg = len(labels) - n_pos
    auc = ((ranks * positive).sum(axis=0) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return float(auc.mean())


class Diverged(Exception):
    """The model's outputs are no longer finite (NaN or inf weights)."""


class Selection:
    """Per-round validation and test curves, and the validation-selected round."""

    def __init__(self, data: DeviceData):
        self.data = data
        self.curves: dict[str, list] = {"round": []}
        self.best: dict | None = None
        self.last: dict | None = None
        self._best_key: tuple | None = None
        self.diverged_at: int | None = None

    def evaluate(self, model: nn.Module, step: int, **extra: float) -> dict:
        """Evaluate `model` on val and test after round (or epoch) `step` and record it."""
        d = self.data
        n = d.info.n_classes
        p_val, p_test = predict_proba(model, d, d.x_val), predict_proba(model, d, d.x_test)
        self.check_finite(step, p_val, p_test)
        val = classification_metrics(p_val, d.y_val.cpu().numpy(), n, detail=False)
        test = classification_metrics(p_test, d.y_test.cpu().numpy(), n)
        return self.record(step, val, test, **extra)

    def observe(self, model: nn.Module, step: int, bar, context: dict | None = None,
                **extra: float) -> dict:
        """`evaluate`, then show it: the progress bar moves one step, the live log gets the
        step (with `context`, e.g. the client), and the validation accuracy is shown. Raises
        Diverged as `evaluate` does, before anything is shown."""
        entry = self.evaluate(model, step, **extra)
        bar.update(1)
        bar.log(self.last_step(), **(context or {}))
        bar.set_postfix_str(f"val acc {entry['val']['accuracy']:.3f}")
        return entry

    def check_finite(self, step: int, *probas: np.ndarray) -> None:
        """Raise Diverged (and remember the step) if any prediction is NaN or inf: training
        stops there and the run keeps its best finite round."""
        if not all(np.isfinite(p).all() for p in probas):
            self.diverged_at = step
            raise Diverged(f"non-finite outputs after step {step}")

    def record(self, step: int, val: dict, test: dict, **extra: float) -> dict:
        self.curves["round"].append(step)
        for split, m in (("val", val), ("test", test)):
            for k in CURVE_METRICS:
                self.curves.setdefault(f"{split}_{k}", []).append(m[k])
        for k, v in extra.items():
            self.curves.setdefault(k, []).append(v)
        entry = {**test, "round": step, "val": val}
        key = (val["accuracy"], -val["loss"])
        if self._best_key is None or key > self._best_key:
            self.best, self._best_key = entry, key
        self.last = entry
        return entry

    def last_step(self) -> dict:
        """The latest recorded step as one flat dict of its curves' values (round, val_* and
        test_* metrics, and the extras: train_loss, lr, bytes_cumulative): what a live log
        records (bench/monitor.py)."""
        return {k: v[-1] for k, v in self.curves.items() if v}

    def state(self) -> dict:
        """What a checkpoint keeps of it (everything but the data); `restore` puts it back."""
        return {k: v for k, v in vars(self).items() if k != "data"}

    def restore(self, state: dict) -> "Selection":
        vars(self).update(state)
        return self

    def evaluation(self) -> Evaluation:
        """Selected and final entries (None if the model diverged before any finite round),
        and the step at which it diverged (None if it did not)."""
        return Evaluation(self.best, self.last, self.diverged_at)
