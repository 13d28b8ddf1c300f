"""Local mode's test-time rule: the clients' classifiers combined as a product of experts.

The paper's rule (FederatedFactory, arXiv 2603.16370, local mode; Hinton, 2002): every client k
has its own classifier p_k, and the prediction is their normalised product,

    p_plain(y | x) = softmax_y( sum_k log p_k(y | x) ).

It ignores that each expert was trained under its own label prior pi_k (client k's real images
of its own classes plus `samples_per_class` synthetic images of every other class), so the
classes with the most extreme priors win. The corrected rule follows from Bayes' rule with the
experts' evidence conditionally independent given y: p_k(y | x) is proportional to
p_k(x | y) pi_k(y), hence prod_k p_k(x | y) is proportional to prod_k p_k(y | x) / pi_k(y), and

    p(y | x) = softmax_y( log pi(y) + sum_k [log p_k(y | x) - log pi_k(y)] ),

the product rule of Kittler et al. (1998, "On combining classifiers", Eq. 6) generalised to
experts with different priors, each posterior re-based as in Saerens et al. (2002). pi is the
target prior, applied once: uniform (the class-balanced synthetic set's, as server mode) or the
clients' pooled training prior, in both cases 0 for a class no client holds (after an
unlearning): the experts' smoothed priors would otherwise divide its tiny scores by tiny priors
and predict it everywhere (tests/test_federatedfactory.py, the unlearning test).

Folded one expert at a time, so memory holds two running sums whatever the number of clients.
Experts give their log-softmax outputs directly (`evaluation.predict_log_proba`); until
2026-11-30 they gave float32 probabilities that were logged again, so log p below about -103
became log(1e-300) for every such class and very confident experts tied.
A plain mean of the p_k (a mixture) is a different rule: tests/test_check_sensitivity.py plants
it and shows the regression check notices.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


class ProductOfExperts:
    def __init__(self, n: int, n_classes: int):
        self.log_sum = torch.zeros(n, n_classes, dtype=torch.float64)
        self.log_prior_sum = torch.zeros(n_classes, dtype=torch.float64)

    def add(self, log_proba: np.ndarray, prior: np.ndarray) -> None:
        """Fold in one expert's log class probabilities (n, C; its log-softmax, never
        probabilities exponentiated and logged again: a confident expert's small probabilities
        underflow to 0 in float32 and every such class would tie at the clip) and its training
        label prior (C; Laplace-smoothed, so positive)."""
        self.log_sum += torch.from_numpy(log_proba)
        self.log_prior_sum += torch.from_numpy(np.log(prior))

    def proba(self) -> np.ndarray:
        """The paper's plain product."""
        return F.softmax(self.log_sum, dim=1).numpy()

    def corrected(self, target_prior: np.ndarray) -> np.ndarray:
        """Each expert's prior divided out, `target_prior` (C,) applied once."""
        log_target = torch.from_numpy(np.log(np.clip(target_prior, 1e-300, None)))
        return F.softmax(self.log_sum - self.log_prior_sum + log_target, dim=1).numpy()


def label_prior(labels: torch.Tensor, n_classes: int) -> np.ndarray:
    """The label distribution of a training set, with add-one (Laplace) smoothing: a class an
    expert never saw gets a small finite prior, not a zero that would divide its score by 0."""
    counts = torch.bincount(labels.cpu(), minlength=n_classes).double() + 1
    return (counts / counts.sum()).numpy()
