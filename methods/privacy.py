"""Membership inference on what a method shares: how well the holder of a shared artefact (the
server, or any client that receives it) tells a client's training images from held-out images
of the same classes. Evaluation only: the method's numbers do not depend on it.

Members: a client's training images (those the artefact was trained on); non-members: test
images of the same classes, the same number as the members (both drawn with the run's
`<purpose>/privacy` stream). Each artefact is attacked on its own (its loss threshold is its
own), then the scores are pooled over the artefacts after subtracting each artefact's median
non-member score, and the pooled scores give one AUC and one true-positive rate at 1 % false
positives (Carlini et al., S&P 2022, report TPR at low FPR, not only AUC), with the FPR the
threshold actually reached beside it, each with a 95 % bootstrap interval over the images.

The attacks, one per kind of artefact:
- Classifiers (weight averaging: each client's trained model of the last round it takes part
  in, as the server receives it, and beside it the final global model every client receives;
  DENSE's client models, which each client uploads): the threshold attack of Yeom et al.
  (CSF 2018) on LiRA's logit-scaled confidence z_y - logsumexp_{j != y} z_j (Carlini et al.
  2022), in float64: the cross-entropy it replaced saturates at 0 in float32.
- Diffusion modules (FederatedFactory): the denoising loss at fixed noise levels, the
  loss-threshold attack on diffusion models (Matsumoto et al. 2023; Carlini et al., USENIX
  Security 2023, found low noise levels the most revealing): score = -mean over three fixed
  noise levels x two draws of the formulation's training loss
  (methods/federatedfactory/audit.py).

What the numbers mean: an attack's AUC is a lower bound on what the artefact leaks (a
stronger attack, LiRA's shadow models or SecMI's step-wise errors, may find more); 0.5 is the
attack failing, not a proof of privacy. Not audited (each record says why): FedCVAE-Ens's
decoders (without the encoder, which the client keeps, a decoder gives no per-image
likelihood the loss attack needs), centralized (it shares the images themselves),
local-only (it shares nothing).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

SHARED, RECEIVED = "shared", "received"  # the keys of a record's `audit`


@dataclass(frozen=True)
class Audit:
    """The membership audit of what a method shares, as one party holds it, or why it was not
    audited (`not_audited`; then `attack` is None). A record keeps one under `audit["shared"]`
    (what the server holds of each client) and, for weight averaging, `audit["received"]` (the
    final global model every client receives)."""

    attack: str | None  # the attack, with its papers
    artefact: str | None = None  # what was attacked, in words
    auc: float | None = None
    auc_ci: tuple[float, float] | None = None  # 95 % bootstrap interval
    tpr_at_1pct_fpr: float | None = None
    tpr_ci: tuple[float, float] | None = None
    fpr_reached: float | None = None  # the FPR the TPR's threshold reached (<= 1 %)
    members: int = 0
    non_members: int = 0
    per_artefact_auc: tuple[float, ...] = ()
    settings: dict = field(default_factory=dict)  # the attack's own (noise levels, ...)
    not_audited: str | None = None  # why not

    @classmethod
    def of(cls, attack: str, artefact: str, metrics: dict, **settings) -> "Audit":
        """An audit from `attack_metrics`' result."""
        return cls(attack, artefact, **{**metrics,
                                        **{k: tuple(metrics[k]) for k in
                                           ("auc_ci", "tpr_ci", "per_artefact_auc")}},
                   settings=settings)

    def to_dict(self) -> dict:
        """Its fields (tuples as lists), those left empty omitted but `attack` (None: not
        audited)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()
                if k == "attack" or v not in (None, (), {})}

    @classmethod
    def from_dict(cls, d: dict) -> "Audit":
        tuples = ("auc_ci", "tpr_ci", "per_artefact_auc")
        known = set(cls.__dataclass_fields__)
        settings = {k: v for k, v in d.items() if k not in known}  # schema 2 kept them flat
        return cls(**{k: tuple(v) if k in tuples else v for k, v in d.items()
                      if k in known and k != "settings"},
                   settings={**d.get("settings", {}), **settings})


MAX_MEMBERS = 256  # per artefact: members (and as many non-members) attacked at most
BOOTSTRAP = 200
FPR = 0.01


def attack_metrics(members: list[np.ndarray], non_members: list[np.ndarray],
                   rng: np.random.Generator) -> dict:
    """AUC and TPR at 1 % FPR of the scores (higher: more member-like), one array pair per
    artefact, calibrated per artefact by its median non-member score and pooled; with 95 %
    bootstrap intervals (images resampled within each artefact)."""
    def pooled(ms, ns):
        m = np.concatenate([a - np.median(b) for a, b in zip(ms, ns)])
        n = np.concatenate([b - np.median(b) for b in ns])
        return (_auc(m, n), *_tpr_at(m, n, FPR))

    auc, tpr, fpr_reached = pooled(members, non_members)
    boot = []
    for _ in range(BOOTSTRAP):
        ms = [a[rng.integers(0, len(a), len(a))] for a in members]
        ns = [b[rng.integers(0, len(b), len(b))] for b in non_members]
        boot.append(pooled(ms, ns))
    boot = np.array(boot)[:, :2]
    lo, hi = np.percentile(boot, [2.5, 97.5], axis=0)
    return {"auc": auc, "auc_ci": [float(lo[0]), float(hi[0])],
            "tpr_at_1pct_fpr": tpr, "tpr_ci": [float(lo[1]), float(hi[1])],
            "fpr_reached": fpr_reached,
            "members": int(sum(map(len, members))),
            "non_members": int(sum(map(len, non_members))),
            "per_artefact_auc": [_auc(a, b) for a, b in zip(members, non_members)]}


def _auc(members: np.ndarray, non_members: np.ndarray) -> float:
    """P(member score > non-member score) + P(tie) / 2 (Mann-Whitney)."""
    from scipy.stats import rankdata  # here: scipy.stats takes a second to import

    ranks = rankdata(np.concatenate([members, non_members]))
    m, n = len(members), len(non_members)
    return float((ranks[:m].sum() - m * (m + 1) / 2) / (m * n))


def _tpr_at(members: np.ndarray, non_members: np.ndarray, fpr: float) -> tuple[float, float]:
    """(TPR, the FPR reached) at the lowest threshold whose false positives stay at or below
    `fpr`: with n non-members, floor(fpr n) of them may score above it (100 non-members at 1 %:
    one). Ties at the threshold count as below it, so the FPR reached can be lower than `fpr`
    (and is reported beside the TPR). The quantile rule this replaces, `quantile(1 - fpr,
    method="higher")`, let none of 100 through: a TPR at 0 % FPR (tests/test_privacy.py)."""
    allowed = int(np.floor(fpr * len(non_members) + 1e-9))
    ranked = np.sort(non_members)[::-1]
    threshold = ranked[allowed] if allowed < len(ranked) else -np.inf
    return float(np.mean(members > threshold)), float(np.mean(non_members > threshold))


def balanced(member_idx: torch.Tensor, y_train: torch.Tensor, y_held: torch.Tensor,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices of at most MAX_MEMBERS members (into the training set) and, for each, a held-out
    image of the same class (into the test set), class by class; members beyond the held-out
    images of their class are left out, so both sides have the same classes and size."""
    members = member_idx.cpu().numpy()
    labels, held = y_train.cpu().numpy()[members], y_held.cpu().numpy()
    if len(members) > MAX_MEMBERS:
        members = np.sort(rng.choice(members, MAX_MEMBERS, replace=False))
        labels = y_train.cpu().numpy()[members]
    out_m, out_n = [], []
    for c in np.unique(labels):
        mine = members[labels == c]
        pool = np.flatnonzero(held == c)
        k = min(len(mine), len(pool))
        out_m.append(rng.choice(mine, k, replace=False))
        out_n.append(rng.choice(pool, k, replace=False))
    return np.sort(np.concatenate(out_m)), np.sort(np.concatenate(out_n))


def logit_scaled_confidence(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """log(p_y) - log(1 - p_y) = z_y - logsumexp_{j != y} z_j per row, in float64 (LiRA's
    score, Carlini et al. S&P 2022, Sec. IV). Unlike -cross-entropy, which is exactly 0 in
    float32 once the true logit leads by about 17 (every confident member and non-member then
    tie), it keeps growing with the margin."""
    z = logits.double()
    true = z.gather(1, y[:, None]).squeeze(1)
    others = z.scatter(1, y[:, None], float("-inf"))
    return true - torch.logsumexp(others, dim=1)


@torch.no_grad()
def classifier_scores(model: torch.nn.Module, data, x: torch.Tensor,
                      y: torch.Tensor) -> np.ndarray:
    """LiRA's logit-scaled confidence of the true label per image (`logit_scaled_confidence`;
    the loss-threshold attack of Yeom et al. 2018 with a score that does not saturate); uint8
    images on the device, the network evaluated in float32 as every evaluation of the suite."""
    model.eval()
    out = []
    with torch.autocast(data.device.type, enabled=False):
        for xb, yb in zip(torch.split(x, 512), torch.split(y, 512)):
            logits = model(data.to_float(xb)).float()
            out.append(logit_scaled_confidence(logits, yb).cpu())
    return torch.cat(out).numpy()


class ClassifierAudit:
    """The loss attack on classifiers, one per client: each client's members and non-members
    are drawn when the audit is made (in client order, from the run's `<purpose>/privacy`
    stream); `observe(k, model)` scores client k's images on the model that holds what k
    shared, at the moment it is shared (and keeps the model's train/eval mode);
    `result(artefact)` pools the clients observed."""

    def __init__(self, ctx, clients, purpose: str):
        data = ctx.data
        self.ctx, self.purpose = ctx, purpose
        self.rng = ctx.streams.numpy(f"{purpose}/privacy")
        self.pairs = {k: balanced(ctx.clients[k], data.y_train, data.y_test, self.rng)
                      for k in clients}
        self.scores: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def observe(self, k: int, model: torch.nn.Module) -> None:
        m, n = self.pairs[k]
        if not len(m):
            return
        data, device, was_training = self.ctx.data, self.ctx.device, model.training
        mi, ni = torch.as_tensor(m, device=device), torch.as_tensor(n, device=device)
        self.scores[k] = (classifier_scores(model, data, data.x_train[mi], data.y_train[mi]),
                          classifier_scores(model, data, data.x_test[ni], data.y_test[ni]))
        model.train(was_training)

    def result(self, artefact: str) -> Audit:
        observed = [self.scores[k] for k in sorted(self.scores)]
        if not all(np.isfinite(a).all() and np.isfinite(b).all() for a, b in observed):
            return not_audited("the model's outputs are not finite (the run diverged)")
        if not observed:
            return not_audited("no client has held-out images of its classes")
        return Audit.of("threshold on the logit-scaled confidence (Yeom et al. 2018; "
                        "Carlini et al. 2022)", artefact,
                        attack_metrics([a for a, _ in observed], [b for _, b in observed],
                                       self.rng))


def audit_classifiers(ctx, models: dict[int, torch.nn.Module], artefact: str,
                      purpose: str) -> Audit:
    """The loss attack on classifiers at hand: `models[k]` is what client k's images trained
    and what is shared (one model for all: the same object under every k)."""
    audit = ClassifierAudit(ctx, list(models), purpose)
    for k, model in models.items():
        audit.observe(k, model)
    return audit.result(artefact)


def not_audited(reason: str) -> Audit:
    return Audit(None, not_audited=reason)
