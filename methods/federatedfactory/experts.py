"""Local mode's test-time rule: the clients' classifiers combined as a product of experts.

FederatedFactory (arXiv 2603.16370), local mode: every client k has its own classifier p_k, and
the prediction is the normalised product of their distributions (Hinton, 2002):

    p(y | x) = softmax_y( sum_k log p_k(y | x) ).

Folded one expert at a time, so memory holds one running sum whatever the number of clients.
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

    def add(self, proba: np.ndarray) -> None:
        """Fold in one expert's class probabilities (n, C)."""
        self.log_sum += torch.from_numpy(np.log(np.clip(proba, 1e-300, None)))

    def proba(self) -> np.ndarray:
        return F.softmax(self.log_sum, dim=1).numpy()
