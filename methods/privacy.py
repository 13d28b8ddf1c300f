"""Membership inference on what a method shares: how well the holder of a shared artefact (the
server, or any client that receives it) tells a client's training images from held-out images
of the same classes. Evaluation only: the method's numbers do not depend on it.

Members: a client's training images (those the artefact was trained on); non-members:
validation images of the same classes, the same number as the members (both drawn with the
run's `<purpose>/privacy` stream) from one half of the validation split. Validation images
come from the members' own source (the
test split of some datasets does not: PneumoniaMNIST's, for one), so the attack separates
membership, not sources; they also pick the best round, which makes them slightly more
member-like and the AUC a little lower, never higher. Each artefact is attacked on its own:
its AUC, and its true-positive rate at 1 % false positives (Carlini et al., S&P 2022, report
TPR at low FPR, not only AUC) at its own threshold, the lowest that keeps its FPR at or
below 1 %, with the FPR reached beside it. The headline is the mean over the artefacts
weighted by their members; no score is compared across artefacts. 95 % intervals from 1,000
bootstrap replicates that resample images (one validation image scored by several artefacts
is drawn once for all of them): the AUC's members and non-members, the TPR's members only,
each artefact's threshold held (`TPR_INTERVAL`).

Every audit carries a null control: the same images attacked with the classifier attack on
a network trained on neither set, but on the members' source (the run's recipe on the other
half of the validation split, as many epochs as the audited models, at most 20:
`null_network`). It must read 0.5 within its 95 %
interval (`Audit.null_holds`; where members and non-members are exchangeable, by chance
about one seed in twenty will not: the audits of a seed share the validation halves and the
null's network); if it does not,
members and non-members differ in something besides membership (their source, their
classes), and the audit says so. A network at its initialisation would be a weaker null: it
does not see a source (tests/test_privacy.py). Beside it, the excess over the null
(`excess_over_null`): the audit's AUC minus the null's on the same images, with a paired
interval: a comparison against one null draw. Where the null fails (PneumoniaMNIST:
docs/protocol.md), read it beside the AUC: an interval that holds 0 finds no leak beyond what
a network that never saw the members reads. It is not a clean measure of membership: the
audited models train on the training split and the null on validation images, so a
difference between the two splits need not act alike on both (it can cancel, or count twice),
and its interval leaves out the null network's own training noise. For the diffusion modules
the null is still the classifier attack (a module trained on neither set would cost as much
as the run's own): their excess compares two attacks, and says less.

The attacks, one per kind of artefact:
- Classifiers (weight averaging: each client's trained model of the last round it takes part
  in, as the server receives it, and beside it the final global model every client receives,
  both on the same images; DENSE's client models, which each client uploads;
  FederatedFactory's local classifiers, which its local mode sends to the server): the
  threshold attack of Yeom et al. (CSF 2018) on LiRA's logit-scaled confidence
  z_y - logsumexp_{j != y} z_j (Carlini et al. 2022), in float64: the cross-entropy it
  replaced saturates at 0 in float32.
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
    tpr_ci: tuple[float, float] | None = None  # given the thresholds (TPR_INTERVAL)
    fpr_reached: float | None = None  # the FPR the TPR's threshold reached (<= 1 %)
    members: int = 0
    non_members: int = 0
    per_artefact_auc: tuple[float, ...] = ()
    per_artefact_tpr: tuple[float, ...] = ()
    # the null control: the same images attacked on an artefact trained on neither set; its
    # AUC must read 0.5 within its interval, or members and non-members differ in something
    # besides membership (`null_holds`)
    null_auc: float | None = None
    null_auc_ci: tuple[float, float] | None = None
    null_artefact: str | None = None
    # the excess over the null control: the audit's AUC minus the null's on the same images,
    # with a paired 95 % interval (both attacks scored on the same resampled images in every
    # replicate); where the null control fails, the number to read (`leaks_beyond_null`)
    excess_auc: float | None = None
    excess_auc_ci: tuple[float, float] | None = None
    non_members_from: str = "validation"  # the split the non-members come from
    bootstrap: int = 0  # replicates behind the intervals
    settings: dict = field(default_factory=dict)  # the attack's own (noise levels, ...)
    not_audited: str | None = None  # why not

    TUPLES = ("auc_ci", "tpr_ci", "per_artefact_auc", "per_artefact_tpr", "null_auc_ci",
              "excess_auc_ci")

    @classmethod
    def of(cls, attack: str, artefact: str, metrics: dict, settings: dict | None = None,
           **control) -> "Audit":
        """An audit from `attack_metrics`' result and the null control's numbers."""
        return cls(attack, artefact, **{**metrics, **control,
                                        **{k: tuple(metrics[k]) for k in cls.TUPLES
                                           if k in metrics}},
                   bootstrap=BOOTSTRAP, settings={**(settings or {}),
                                                  "tpr_interval": TPR_INTERVAL})

    @property
    def null_holds(self) -> bool | None:
        """Whether the null control reads 0.5 within its interval (None: no control)."""
        if self.null_auc_ci is None:
            return None
        return self.null_auc_ci[0] <= 0.5 <= self.null_auc_ci[1]

    @property
    def leaks_beyond_null(self) -> bool | None:
        """Whether the audit's AUC exceeds the null control's on the same images, its paired
        interval above 0 (None: no excess measured, as in audits before 2026-12-05). One null
        draw: the interval leaves out the null network's training noise (docs/protocol.md)."""
        if self.excess_auc_ci is None:
            return None
        return self.excess_auc_ci[0] > 0

    def to_dict(self) -> dict:
        """Its fields (tuples as lists), those left empty omitted but `attack` (None: not
        audited, and then only why)."""
        if self.attack is None:
            return {"attack": None, "not_audited": self.not_audited}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()
                if k == "attack" or v not in (None, (), {})}

    @classmethod
    def from_dict(cls, d: dict) -> "Audit":
        known = set(cls.__dataclass_fields__)
        settings = {k: v for k, v in d.items() if k not in known}  # schema 2 kept them flat
        old = {} if "non_members_from" in d or d.get("attack") is None else \
            {"non_members_from": "test"}  # audits before the validation split was used
        return cls(**old, **{k: tuple(v) if k in cls.TUPLES else v for k, v in d.items()
                             if k in known and k != "settings"},
                   settings={**d.get("settings", {}), **settings})


MAX_MEMBERS = 256  # per artefact: members (and as many non-members) attacked at most
BOOTSTRAP = 1000  # replicates: about 25 in each 2.5 % tail
FPR = 0.01
# how the TPR's interval is drawn, in every audit's settings (audits without it, before
# 2026-12-05 evening, resampled the non-members too, and their TPR intervals lean up)
TPR_INTERVAL = "members resampled, each artefact's threshold held"


def attack_metrics(members: list[np.ndarray], non_members: list[np.ndarray],
                   rng: np.random.Generator, member_ids: list[np.ndarray] | None = None,
                   non_member_ids: list[np.ndarray] | None = None) -> dict:
    """The attack's numbers from its scores (higher: more member-like), one array pair per
    artefact. Each artefact is attacked on its own: its AUC, and its TPR at the lowest
    threshold that keeps its FPR at or below 1 % (`_tpr_at`), so no score is compared across
    artefacts and none needs calibrating. The headline is their mean weighted by the members
    attacked. 95 % intervals from BOOTSTRAP replicates that resample images: for the AUC,
    members among the members and non-members among the non-members, an image drawn k times
    counting k times in every artefact that scored it (`*_ids` name the images, e.g. a
    validation image that several artefacts score as a non-member; by default no two artefacts
    share one); for the TPR, the members only, each artefact's threshold held where the point
    estimate put it: an interval given the thresholds, which leaves out their own sampling
    error (a bootstrap cannot estimate it from so few non-members), so it is narrower than
    the whole uncertainty and claims no coverage of the TPR at 1 % FPR of the population."""
    member_ids = member_ids or _distinct(members)
    non_member_ids = non_member_ids or _distinct(non_members)
    ones = [(np.ones((1, len(a))), np.ones((1, len(b)))) for a, b in zip(members, non_members)]
    point = _headline(members, non_members, ones)
    drawn = _counts(member_ids, rng)
    boot = _headline(members, non_members, list(zip(drawn, _counts(non_member_ids, rng))))
    # the TPR's replicates keep every non-member once (each artefact's threshold where the
    # point estimate put it) and resample the members: a threshold set by the top non-member
    # scores does not bootstrap. Below 100 non-members it is the largest one and a replicate
    # can only lower it; above, it moves both ways but falls more often, so the TPR still
    # leans up; the old interval could miss its own estimate (tests/test_privacy.py)
    held = _headline(members, non_members,
                     [(w, np.ones((len(w), len(b)))) for w, b in zip(drawn, non_members)])
    lo, hi = np.nanpercentile(np.stack([boot[0], held[1]], axis=1), [2.5, 97.5], axis=0)
    return {"auc": float(point[0][0]), "auc_ci": [float(lo[0]), float(hi[0])],
            "tpr_at_1pct_fpr": float(point[1][0]), "tpr_ci": [float(lo[1]), float(hi[1])],
            "fpr_reached": float(point[2][0]),
            "members": int(sum(map(len, members))),
            "non_members": int(sum(map(len, non_members))),
            "per_artefact_auc": [float(_auc(a, b)) for a, b in zip(members, non_members)],
            "per_artefact_tpr": [_tpr_at(a, b, FPR)[0] for a, b in zip(members, non_members)]}


def _distinct(scores: list[np.ndarray]) -> list[np.ndarray]:
    """Image ids when no two artefacts share an image: consecutive numbers."""
    ends = np.cumsum([0, *map(len, scores)])
    return [np.arange(a, b) for a, b in zip(ends[:-1], ends[1:])]


def _counts(ids: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """For each artefact, how many times each of its images is drawn in each of BOOTSTRAP
    replicates (BOOTSTRAP, its images): the distinct images of all artefacts resampled with
    replacement, as many draws as there are distinct images."""
    unique, inverse = np.unique(np.concatenate(ids), return_inverse=True)
    drawn = rng.multinomial(len(unique), np.full(len(unique), 1 / len(unique)), BOOTSTRAP)
    ends = np.cumsum([0, *map(len, ids)])
    return [drawn[:, inverse[a:b]].astype(float) for a, b in zip(ends[:-1], ends[1:])]


def _headline(members, non_members, weights) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(AUC, TPR, FPR reached) per replicate: each artefact's, weighted by its members' count
    in that replicate (an artefact whose members or non-members were all left out of a
    replicate does not count in it)."""
    per = [(*_weighted(a, b, w, v), w.sum(1) * (v.sum(1) > 0))
           for a, b, (w, v) in zip(members, non_members, weights)]
    total = sum(p[3] for p in per)
    with np.errstate(invalid="ignore"):
        return tuple(sum(np.nan_to_num(p[i]) * p[3] for p in per) / total for i in range(3))


def _weighted(members: np.ndarray, non_members: np.ndarray, w: np.ndarray, v: np.ndarray,
              fpr: float = FPR) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(AUC, TPR, FPR reached) of one artefact per row of the image weights `w` (members) and
    `v` (non-members): the Mann-Whitney AUC, ties counting 1/2, and `_tpr_at` with each image
    counted as often as its weight."""
    with np.errstate(invalid="ignore", divide="ignore"):
        order = np.argsort(non_members, kind="stable")
        sorted_n = non_members[order]
        cum = np.concatenate([np.zeros((len(v), 1)), np.cumsum(v[:, order], axis=1)], axis=1)
        lo = np.searchsorted(sorted_n, members, "left")
        hi = np.searchsorted(sorted_n, members, "right")
        wins = cum[:, lo] + 0.5 * (cum[:, hi] - cum[:, lo])  # (replicates, members)
        total_w, total_v = w.sum(1), v.sum(1)
        auc = (w * wins).sum(1) / (total_w * total_v)
        threshold = _thresholds(non_members, v, fpr, order)
        tpr = (w * (members[None, :] > threshold[:, None])).sum(1) / total_w
        reached = (v * (non_members[None, :] > threshold[:, None])).sum(1) / total_v
    return auc, tpr, reached


def _auc(members: np.ndarray, non_members: np.ndarray) -> float:
    """P(member score > non-member score) + P(tie) / 2 (Mann-Whitney)."""
    return float(_weighted(members, non_members, np.ones((1, len(members))),
                           np.ones((1, len(non_members))))[0][0])


def _thresholds(non_members: np.ndarray, v: np.ndarray, fpr: float,
                order: np.ndarray | None = None) -> np.ndarray:
    """The attack's threshold per row of the non-member weights `v`: the first non-member from
    the top at which more than floor(fpr x their weight) has been passed (scores above it are
    called members; ties with it stay below it); -inf when none is. `order`: the non-members'
    ascending argsort, when the caller has it."""
    if v.shape[1] == 0:  # no non-member: nothing bounds the threshold
        return np.full(len(v), -np.inf)
    order = np.argsort(non_members, kind="stable") if order is None else order
    desc = order[::-1]
    passed = np.cumsum(v[:, desc], axis=1)
    allowed = np.floor(fpr * v.sum(1) + 1e-9)[:, None]
    over = passed > allowed
    at = np.where(over.any(1), over.argmax(1), -1)
    return np.where(at >= 0, non_members[desc][np.maximum(at, 0)], -np.inf)


def _tpr_at(members: np.ndarray, non_members: np.ndarray, fpr: float) -> tuple[float, float]:
    """(TPR, the FPR reached) at the lowest threshold whose false positives stay at or below
    `fpr`: with n non-members, floor(fpr n) of them may score above it (100 non-members at 1 %:
    one). Ties at the threshold count as below it, so the FPR reached can be lower than `fpr`
    (and is reported beside the TPR). The quantile rule this replaces, `quantile(1 - fpr,
    method="higher")`, let none of 100 through: a TPR at 0 % FPR (tests/test_privacy.py)."""
    _, tpr, reached = _weighted(members, non_members, np.ones((1, len(members))),
                                np.ones((1, len(non_members))), fpr)
    return float(tpr[0]), float(reached[0])


def epsilon_lower_bound(members: np.ndarray, non_members: np.ndarray, calibration: np.ndarray,
                        delta: float, confidence: float = 0.95, fpr: float = FPR) -> float:
    """The epsilon an attack proves a (epsilon, delta)-DP claim must reach (Jagielski et al.,
    NeurIPS 2020): every attack on an (epsilon, delta)-DP mechanism has TPR <= e^epsilon FPR
    + delta, so epsilon >= ln((TPR - delta) / FPR). The threshold is fitted on `calibration`
    (non-member scores apart from those judged: `_tpr_at`'s rule at `fpr`), then TPR's lower
    and FPR's upper Clopper-Pearson ends, each at (1 + confidence) / 2, hold together at
    `confidence`. -inf when the attack proves nothing."""
    from scipy.stats import beta

    threshold = _thresholds(calibration, np.ones((1, len(calibration))), fpr)[0]
    tail = (1 - confidence) / 2
    k, n = int(np.sum(members > threshold)), len(members)
    tpr_low = beta.ppf(tail, k, n - k + 1) if k > 0 else 0.0
    k, n = int(np.sum(non_members > threshold)), len(non_members)
    fpr_high = beta.ppf(1 - tail, k + 1, n - k) if k < n else 1.0
    return float(np.log((tpr_low - delta) / fpr_high)) if tpr_low > delta else -np.inf


def balanced(member_idx: torch.Tensor, y_train: torch.Tensor, y_held: torch.Tensor,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices of at most MAX_MEMBERS members (into the training set) and, for each, a held-out
    image of the same class (into the validation set), class by class; members beyond the
    held-out images of their class are left out, so both sides have the same classes and
    size."""
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


CLASSIFIER_ATTACK = ("threshold on the logit-scaled confidence (Yeom et al. 2018; "
                     "Carlini et al. 2022)")
# the null control's network trains on its half of the validation split for as many epochs as
# the audited models trained (rounds x local epochs, or a one-shot classifier's epochs), at most
# NULL_EPOCHS: a run of a few epochs (a test's) is audited beside a null of as few, not of 20
# (which cost a one-round ResNet-50 run 70 % of its time)
NULL_EPOCHS = 20
NULL_CONTROL = ("the classifier attack on a network trained on the other half of the validation "
                "split (neither set) for as many epochs as the audited models (at most "
                f"{NULL_EPOCHS}, `null_epochs` in the settings)")


def validation_halves(ctx) -> tuple[np.ndarray, np.ndarray]:
    """The validation split cut in two by the run's `privacy/halves` stream: the audits'
    non-members come from the first half, the null control's network trains on the second."""
    order = ctx.streams.numpy("privacy/halves").permutation(len(ctx.data.y_val))
    return np.sort(order[:len(order) // 2]), np.sort(order[len(order) // 2:])


def member_pairs(ctx, member_idx: torch.Tensor, pool: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`balanced` members (into the training set) and non-members from `pool` (into the
    validation set)."""
    m, n = balanced(member_idx, ctx.data.y_train,
                    ctx.data.y_val[torch.as_tensor(pool, device=ctx.device)], rng)
    return m, pool[n]


def null_epochs(ctx, trained_epochs: int | None = None) -> int:
    """The null network's epochs: those of the audited models (default: the run's rounds x
    local epochs), at most NULL_EPOCHS."""
    if trained_epochs is None:
        trained_epochs = ctx.train.rounds * ctx.train.local_epochs
    return max(1, min(NULL_EPOCHS, trained_epochs))


def null_network(ctx, pool: np.ndarray, epochs: int) -> torch.nn.Module:
    """The null control's network: the table's classifier trained with the run's recipe for
    `epochs` (`null_epochs`) on the validation images of `pool` (members of no audit,
    non-members of none), from the run's `privacy/null` streams. It has seen the members'
    source but neither set, so the attack on it reads 0.5 unless the sets differ in more than
    membership."""
    from .training import fit  # here: base imports this module, training imports base

    idx = torch.as_tensor(pool, device=ctx.device)
    data = ctx.data.with_train(ctx.data.x_val[idx], ctx.data.y_val[idx])
    model = ctx.new_model("privacy/null")
    fit(model, data, torch.arange(len(idx), device=ctx.device), ctx.train, epochs,
        ctx.streams, "privacy/null", lambda epoch, stats: None)
    return model


class ClassifierAudit:
    """The loss attack on classifiers, one artefact per client: each client's members and
    non-members are drawn when the audit is made (in client order, from the run's
    `<purpose>/privacy` stream); `observe(k, model)` scores client k's images on the model that
    holds what k shared, at the moment it is shared (and keeps the model's train/eval mode);
    `result(artefact)` attacks the clients observed, beside the null control. `same_images()`
    is a second audit of the same images (another view of the same run: its numbers differ by
    the models alone). `trained_epochs`: the audited models' (`null_epochs`)."""

    def __init__(self, ctx, clients, purpose: str, shared_with: "ClassifierAudit | None" = None,
                 trained_epochs: int | None = None):
        self.ctx, self.purpose = ctx, purpose
        self.rng = ctx.streams.numpy(f"{purpose}/privacy")
        self.null_epochs = null_epochs(ctx, trained_epochs)
        if shared_with is None:
            self.halves = validation_halves(ctx)
            self.pairs = {k: member_pairs(ctx, ctx.clients[k], self.halves[0], self.rng)
                          for k in clients}
            self.null: dict | None = None  # the null control's scores, made by a first result
        else:
            self.halves, self.pairs, self.null = (shared_with.halves, shared_with.pairs,
                                                  shared_with.null)
            self.null_epochs = shared_with.null_epochs
        self.scores: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def same_images(self, purpose: str) -> "ClassifierAudit":
        return ClassifierAudit(self.ctx, (), purpose, shared_with=self)

    def observe(self, k: int, model: torch.nn.Module) -> None:
        if not len(self.pairs[k][0]):
            return
        was_training = model.training
        self.scores[k] = pair_scores(self.ctx, model, *self.pairs[k])
        model.train(was_training)

    def result(self, artefact: str) -> Audit:
        ks = sorted(self.scores)
        observed = [self.scores[k] for k in ks]
        if not all(np.isfinite(a).all() and np.isfinite(b).all() for a, b in observed):
            return not_audited("the model's outputs are not finite (the run diverged)")
        if not observed:
            return not_audited("no client has held-out images of its classes")
        if self.null is None:
            network = null_network(self.ctx, self.halves[1], self.null_epochs)
            self.null = {k: pair_scores(self.ctx, network, *self.pairs[k])
                         for k in self.pairs if len(self.pairs[k][0])}
        ids = ([self.pairs[k][0] for k in ks], [self.pairs[k][1] for k in ks])
        return audit_of(CLASSIFIER_ATTACK, artefact, observed, [self.null[k] for k in ks], ids,
                        self.rng, null_epochs=self.null_epochs)


def pair_scores(ctx, model: torch.nn.Module, members: np.ndarray,
                non_members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The classifier attack's scores of members (training images) and non-members
    (validation images) on `model`."""
    data, device = ctx.data, ctx.device
    mi = torch.as_tensor(members, device=device)
    ni = torch.as_tensor(non_members, device=device)
    return (classifier_scores(model, data, data.x_train[mi], data.y_train[mi]),
            classifier_scores(model, data, data.x_val[ni], data.y_val[ni]))


def audit_of(attack: str, artefact: str, scores: list, null: list, ids: tuple,
             rng: np.random.Generator, **settings) -> Audit:
    """The audit of (member, non-member) score pairs per artefact, with the null control's
    pairs (the same images, `pair_scores` on `null_network`); `ids`: the images' indices
    (members into the training set, non-members into the validation set)."""
    metrics = attack_metrics([a for a, _ in scores], [b for _, b in scores], rng, *ids)
    control = attack_metrics([a for a, _ in null], [b for _, b in null], rng, *ids)
    excess, excess_ci = excess_over_null(scores, null, rng, *ids)
    return Audit.of(attack, artefact, metrics, settings, null_auc=control["auc"],
                    null_auc_ci=tuple(control["auc_ci"]), null_artefact=NULL_CONTROL,
                    excess_auc=excess, excess_auc_ci=excess_ci)


def excess_over_null(scores: list, null: list, rng: np.random.Generator,
                     member_ids: list[np.ndarray] | None = None,
                     non_member_ids: list[np.ndarray] | None = None
                     ) -> tuple[float, tuple[float, float]]:
    """The audit's headline AUC minus the null control's, on the same (member, non-member)
    score pairs per artefact, and its paired 95 % bootstrap interval: each replicate draws the
    images once (as `attack_metrics` does) and weighs both attacks' scores of them alike, so
    what both see (a difference of source between members and non-members, a split's harder
    images) cancels as far as both see it alike. Drawn after the audit's and the null's own
    intervals, which stay as they were. Beating the null is necessary for a membership claim,
    not sufficient: Das, Zhang and Tramer (2024, "Blind baselines beat membership inference
    attacks for foundation models") show attacks that never query the model separating
    members from shifted non-members; comparing with a reference model's view of the same
    images is the idea of difficulty calibration (Watson et al., ICLR 2022), here on the
    AUC, not per image."""
    member_ids = member_ids or _distinct([a for a, _ in scores])
    non_member_ids = non_member_ids or _distinct([b for _, b in scores])
    weights = list(zip(_counts(member_ids, rng), _counts(non_member_ids, rng)))
    ones = [(np.ones((1, len(a))), np.ones((1, len(b)))) for a, b in scores]

    def auc(pairs, w):
        return _headline([a for a, _ in pairs], [b for _, b in pairs], w)[0]

    point = float(auc(scores, ones)[0] - auc(null, ones)[0])
    lo, hi = np.nanpercentile(auc(scores, weights) - auc(null, weights), [2.5, 97.5])
    return point, (float(lo), float(hi))


def audit_classifiers(ctx, models: dict[int, torch.nn.Module], artefact: str,
                      purpose: str, trained_epochs: int | None = None) -> Audit:
    """The loss attack on classifiers at hand: `models[k]` is what client k's images trained
    (for `trained_epochs`, default the run's rounds x local epochs) and what is shared (one
    model for all: the same object under every k)."""
    audit = ClassifierAudit(ctx, list(models), purpose, trained_epochs=trained_epochs)
    for k, model in models.items():
        audit.observe(k, model)
    return audit.result(artefact)


def not_audited(reason: str) -> Audit:
    return Audit(None, not_audited=reason)
