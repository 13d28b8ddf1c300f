"""Sample quality: would a classifier trained on real images recognise the synthetic ones?

Evaluation only, like FederatedFactory's memorisation indicator: it reads the member clients'
real training images (which the method itself never moves) and nothing it computes reaches
the method's classifiers. It answers the question a sample grid answers by eye, with numbers
that a record keeps and a table compares.

The instrument: a reference classifier, the small GroupNorm CNN (methods/models.py) at the
table's resolution, whatever the table's classifier (a fixed instrument, so its numbers compare
across scales, and cheap), trained on the member clients' real training images pooled for
`REFERENCE_EPOCHS` epochs (SGD lr 0.01, momentum 0.9, cosine, batch 64), the epoch chosen on
validation accuracy. Its own class-balanced test accuracy is stored beside what it measures.

Per class c:
- `recognised`: the share of c's synthetic images the reference classifies as c, beside
  `real_recognised`, the same share of c's real test images;
- a Frechet distance (Heusel et al., NeurIPS 2017: FID's formula, on the reference's
  penultimate features instead of Inception's):

      d^2 = |mu_s - mu_r|^2 + tr(S_s) + tr(S_r) - 2 tr((S_s^1/2 S_r S_s^1/2)^1/2)

  from c's synthetic images to c's real training images (`frechet`), beside the same from c's
  real test images (`frechet_real`: what fresh real images of c score). Both sides use the same
  number of images, the smaller of c's synthetic and test counts (`n`), evenly spread over
  each, since the estimate's bias grows as the sample shrinks: a class with fewer synthetic
  than test images would otherwise look worse than it is.

- the spread of c's synthetic features (`spread`, tr(cov): their mean squared distance to
  their centroid) beside that of c's real test features (`spread_real`), from the same `n`.

Summary: `recognisability`, the mean over classes of `recognised`; `relative` = (recognisability
- chance) / (reference test accuracy - chance): 0 is chance, 1 as recognisable as real test
images; `frechet_ratio`, the median over classes of frechet / frechet_real; `diversity`, the
median over classes of spread / spread_real: 1 as varied as real images, 0 every image of a
class the same. `useless` when relative < USELESS_BELOW (the generators did not learn the
classes) or diversity < COLLAPSED_BELOW (they collapsed to a few prototypes per class:
recognisable, often more than real images, and useless: a classifier trained on them learns
the prototypes), and the run then says so at its end; `prototypes` (a warning, not useless)
when diversity < PROTOTYPES_BELOW.
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from .base import TrainConfig
from .data import DeviceData
from .evaluation import predict_proba
from .models import build_model, embed
from .rng import Streams
from .training import fit

REFERENCE_EPOCHS = 20
REFERENCE_TRAIN = TrainConfig(model="cnn", norm="group", batch_size=64, lr=0.01, momentum=0.9,
                              weight_decay=1e-4, lr_schedule="cosine")
USELESS_BELOW = 1 / 3  # relative recognisability under which the samples are called useless
# diversity (within-class spread, synthetic / real) under which the samples are called
# collapsed, and so useless however recognisable, and under which they are near-prototypes,
# a warning (chosen on measured cases, docs/findings/fidelity.md: a planted collapse 0;
# FedCVAE-Ens on digits 0.16-0.18, near-prototypes that still matched FedAvg; FedCVAE-Ens on
# photos 0.65-1.0; FederatedFactory on digits 1.1-1.15)
COLLAPSED_BELOW = 0.1
PROTOTYPES_BELOW = 0.25


def frechet_from_moments(mu_a, cov_a, mu_b, cov_b) -> float:
    """d^2 between N(mu_a, cov_a) and N(mu_b, cov_b), float64. tr((A^1/2 B A^1/2)^1/2) equals
    tr((A B)^1/2) and is computed from symmetric eigendecompositions, so it stays real and finite
    for the singular covariances of few samples (where a general matrix square root of A B
    returns complex parts that implementations must discard)."""
    mu_a, mu_b, cov_a, cov_b = (torch.as_tensor(t, dtype=torch.float64)
                                for t in (mu_a, mu_b, cov_a, cov_b))
    w, v = torch.linalg.eigh(cov_a)
    root = (v * w.clamp_min(0).sqrt()) @ v.T
    inner = root @ cov_b @ root
    cross = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp_min(0).sqrt().sum()
    diff = mu_a - mu_b
    return float(diff @ diff + cov_a.trace() + cov_b.trace() - 2 * cross)


def frechet(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """d^2 between the Gaussians fitted to feature rows `a` and `b` (None under 2 rows)."""
    if len(a) < 2 or len(b) < 2:
        return None
    a, b = a.double(), b.double()
    return frechet_from_moments(a.mean(0), torch.cov(a.T), b.mean(0), torch.cov(b.T))


def _evenly(x: torch.Tensor, n: int) -> torch.Tensor:
    """`n` rows of `x` spread evenly over it (synthetic images are stored holder by holder)."""
    return x[torch.arange(n) * len(x) // n] if len(x) > n else x


def spread(x: torch.Tensor) -> float | None:
    """tr(cov(x)): the mean squared distance of feature rows to their centroid (times
    n / (n - 1)); 0 when every row is the same (None under 2 rows)."""
    return float(torch.cov(x.double().T).trace()) if len(x) >= 2 else None


def class_frechet(synth: torch.Tensor, test: torch.Tensor, train: torch.Tensor) -> dict:
    """One class's Frechet distances to its real training features, of its synthetic and of
    its real test features, and the spread of each of those two sets, all from the same
    number of rows `n` (module docstring)."""
    n = min(len(synth), len(test))
    s, t = _evenly(synth, n), _evenly(test, n)
    return {"frechet": frechet(s, train), "frechet_real": frechet(t, train),
            "spread": spread(s), "spread_real": spread(t), "n": n}


def reference_classifier(data: DeviceData, indices: torch.Tensor, streams: Streams,
                         purpose: str, progress) -> torch.nn.Module:
    """The small CNN trained on `data`'s training images at `indices`, at its best validation
    epoch."""
    with streams.global_torch(f"{purpose}/init"):
        model = build_model("cnn", data.info.channels, data.info.n_classes, data.resolution,
                            "group")
    model = data.place(model)
    y_val = data.y_val.cpu().numpy()
    best = {"accuracy": -1.0, "state": None}
    with progress(REFERENCE_EPOCHS, "reference classifier epochs") as bar:
        def on_epoch(epoch, stats):
            acc = float((predict_proba(model, data, data.x_val).argmax(1) == y_val).mean())
            if acc > best["accuracy"]:
                best.update(accuracy=acc, state=copy.deepcopy(model.state_dict()))
            bar.update(1)
        fit(model, data, indices, REFERENCE_TRAIN, REFERENCE_EPOCHS, streams, purpose, on_epoch)
    model.load_state_dict(best["state"])
    return model.eval()


def _per_class_recall(pred: np.ndarray, labels: np.ndarray, n_classes: int) -> list:
    return [float((pred[labels == c] == c).mean()) if (labels == c).any() else None
            for c in range(n_classes)]


@torch.no_grad()
def _features(model, data: DeviceData, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([embed(model, data.to_float(part.to(data.device))).cpu()
                      for part in torch.split(x, 1024)]) if len(x) else torch.zeros(0, 1)


def sample_quality(data: DeviceData, real_indices: torch.Tensor, synth_x: torch.Tensor,
                   synth_y: torch.Tensor, streams: Streams, purpose: str, progress) -> dict:
    """The diagnostic (module docstring) of the synthetic set (uint8 images at the data's
    resolution, labels) against the real training images at `real_indices`."""
    n_classes = data.info.n_classes
    if data.resolution % 4:
        return {"skipped": f"the reference CNN needs a resolution divisible by 4, got "
                           f"{data.resolution}"}
    model = reference_classifier(data, real_indices, streams, purpose, progress)
    y_test, y_synth = data.y_test.cpu().numpy(), synth_y.cpu().numpy()
    real = _per_class_recall(predict_proba(model, data, data.x_test).argmax(1), y_test,
                             n_classes)
    synth = _per_class_recall(
        predict_proba(model, data, synth_x.to(data.device)).argmax(1) if len(synth_x)
        else np.zeros(0, dtype=np.int64), y_synth, n_classes)
    f_train = _features(model, data, data.x_train[real_indices])
    y_train = data.y_train[real_indices].cpu()
    f_test, f_synth = _features(model, data, data.x_test), _features(model, data, synth_x)
    classes = {}
    for c in range(n_classes):
        classes[str(c)] = {"recognised": synth[c], "real_recognised": real[c],
                           **class_frechet(f_synth[torch.from_numpy(y_synth == c)],
                                           f_test[torch.from_numpy(y_test == c)],
                                           f_train[y_train == c])}
    chance = 1.0 / n_classes
    known = [c for c in range(n_classes) if synth[c] is not None and real[c] is not None]
    recognisability = float(np.mean([synth[c] for c in known])) if known else None
    real_accuracy = float(np.mean([real[c] for c in known])) if known else None
    relative = None
    if known and real_accuracy > chance:
        relative = (recognisability - chance) / (real_accuracy - chance)
    ratios = [v["frechet"] / v["frechet_real"] for v in classes.values()
              if v["frechet"] is not None and v["frechet_real"]]
    spreads = [v["spread"] / v["spread_real"] for v in classes.values()
               if v["spread"] is not None and v["spread_real"]]
    diversity = float(np.median(spreads)) if spreads else None
    return {"reference": {"model": "cnn", "epochs": REFERENCE_EPOCHS,
                          "test_balanced_accuracy": real_accuracy},
            "recognisability": recognisability, "chance": chance, "relative": relative,
            "frechet_ratio": float(np.median(ratios)) if ratios else None,
            "diversity": diversity,
            "useless": bool((relative is not None and relative < USELESS_BELOW)
                            or (diversity is not None and diversity < COLLAPSED_BELOW)),
            "prototypes": bool(diversity is not None and diversity < PROTOTYPES_BELOW),
            "classes": classes}


def verdict(quality: dict) -> str:
    """One line on a useless synthetic set (close to chance, or collapsed) or on one of
    near-prototypes ('' otherwise)."""
    if not quality:
        return ""
    relative, diversity = quality.get("relative"), quality.get("diversity")
    if not quality.get("useless"):
        if not quality.get("prototypes"):
            return ""
        return (f"its synthetic images are near-prototypes: within a class they vary "
                f"{diversity:.0%} as much as real test images do (reference classifier's "
                f"features); a classifier trained on them learns little of each class's "
                f"variation: compare it with FedAvg before trusting it (docs/methods.md, "
                f"\"Sample quality\")")
    if relative is not None and relative < USELESS_BELOW:
        return (f"its synthetic images are close to chance for a reference classifier trained "
                f"on the real images: {quality['recognisability']:.0%} recognised (chance "
                f"{quality['chance']:.0%}, real test images "
                f"{quality['reference']['test_balanced_accuracy']:.0%}); the models that drew "
                f"them did not learn the classes (docs/methods.md, \"Sample quality\")")
    return (f"its synthetic images have collapsed: within a class they vary {diversity:.0%} as "
            f"much as real test images do (in the reference classifier's features; "
            f"{quality['recognisability']:.0%} recognised), near-copies of a few prototypes "
            f"that teach a classifier little (docs/methods.md, \"Sample quality\")")
