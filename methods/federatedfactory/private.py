"""FederatedFactory with differential privacy at the example level (`--set dp.epsilon=E`).

What a client sends is protected for each of its images:
- **its generative modules**: DPDM (Dockhorn, Vahdat and Kreis, "Differentially Private
  Diffusion Models", TMLR 2023, Algorithm 1): every step Poisson-samples the module's images
  (each with probability q = gen_batch_size / n), each image's loss is averaged over K noise
  draws (`dp.noise_draws`, DPDM's noise multiplicity, Sec. 3.2: less variance at no privacy
  cost, since the K draws touch one image), its gradient is clipped to L2 norm C, the
  clipped gradients are summed, N(0, sigma^2 C^2 I) is added and the sum is divided by the
  expected batch q n (modules.py). AdamW and the EMA act on the privatised gradients
  (post-processing). A module is accounted over its `training_steps` at its own q;
- **its local classifier** (local mode sends it): DP-SGD as in weight averaging
  (methods/dp.py), accounted over its `classifier_epochs` epochs.

Composition. A client's modules train on disjoint images (one class each), so over its
modules the client's epsilon is the largest module's (parallel composition). Its local
classifier trains on all its images, so in local mode every image is used by one module and
by the classifier (sequential composition): the target is split, each mechanism calibrated to
(epsilon / 2, delta / 2), and the client's epsilon is the smaller of two valid bounds, the
accountant's composition of the two mechanisms and the sum of their epsilons. A run with
`federatedfactory.modes=server` sends no classifier and gives the modules the whole target.
The run's epsilon is the largest client's. The server's classifier trains on synthetic images
only (post-processing). The sample quality's reference classifier, the memorisation
indicator and the membership audit read the real images: diagnostics outside the guarantee
(docs/privacy.md); the sample grid of a DP run shows validation images, not training ones.

Public, as every client's size is in a DP run here: each client's class counts. They decide
which modules exist (`min_class_samples`), each module's rate and noise, the synthetic
shares, the local classifiers' training-set sizes and label priors, and the record lists
them (`extra.modules`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..dp import DPConfig, DPSpent, composed, noise_multiplier, sample_rate, steps_per_epoch
from .modules import training_steps
from .params import FFParams


def budget(dp: DPConfig, local_mode: bool) -> DPConfig:
    """The target each mechanism is calibrated to: the whole target, or half of epsilon and
    of delta when a client's images also train its local classifier (local mode)."""
    return replace(dp, epsilon=dp.epsilon / 2, delta=dp.delta / 2) if local_mode else dp


@dataclass(frozen=True)
class Plan:
    """The noise of every mechanism of a DP run, chosen before training: `modules[(k, c)]`,
    `classifiers[k]` (local mode), and what the record keeps."""

    modules: dict
    classifiers: dict
    spent: DPSpent
    spent_sizes: dict  # client -> the size of its local classifier's training set, accounted


def plan(p: FFParams, dp: DPConfig, module_sizes: dict, client_sizes: dict,
         classifier_batch: int, local_mode: bool) -> Plan:
    """`module_sizes[(k, c)]`: the images of client k's module of class c; `client_sizes[k]`:
    the size of client k's local classifier's training set (its images and the synthetic
    ones it adds), each of whose images is sampled at rate classifier_batch / size."""
    part = budget(dp, local_mode)
    rows, modules, classifiers, mechanisms = [], {}, {}, {}
    for (k, c), n in sorted(module_sizes.items()):
        q, steps = min(1.0, p.gen_batch_size / n), training_steps(p)
        sigma, eps = noise_multiplier(part, q, steps)
        modules[(k, c)] = sigma
        mechanisms.setdefault(k, {})[c] = ((sigma, q, steps), eps)
        rows.append({"party": f"client {k} class {c} module", "noise_multiplier": sigma,
                     "sample_rate": q, "steps": steps, "epsilon": eps})
    classifier_eps = {}
    if local_mode:  # every member client sends a classifier, with modules or without
        for k in sorted(client_sizes):
            n = client_sizes[k]
            q = sample_rate(n, classifier_batch)
            steps = p.classifier_epochs * steps_per_epoch(n, classifier_batch)
            sigma, eps = noise_multiplier(part, q, steps)
            classifiers[k], classifier_eps[k] = (sigma, q, steps), eps
            rows.append({"party": f"client {k} classifier", "noise_multiplier": sigma,
                         "sample_rate": q, "steps": steps, "epsilon": eps})
    per_client = []
    for k in sorted(set(mechanisms) | (set(client_sizes) if local_mode else set())):
        by_class = mechanisms.get(k, {})
        if local_mode:  # each image: its class's module (if any), then the classifier
            eps = max([min(composed(dp, [mech, classifiers[k]]), e + classifier_eps[k])
                       for mech, e in by_class.values()] + [classifier_eps[k]])
        else:  # disjoint images: the largest module's
            eps = max(e for _, e in by_class.values())
        per_client.append(eps)
        rows.append({"party": f"client {k}", "noise_multiplier": None, "sample_rate": None,
                     "steps": None, "epsilon": eps})
    spent = DPSpent(dp.level, dp.epsilon, max(per_client), dp.delta, dp.accountant, dp.clip,
                    tuple(rows))
    return Plan(modules, {k: v[0] for k, v in classifiers.items()}, spent, dict(client_sizes))
