"""Per-dataset protocols and the named grids.

A protocol fixes, for every method of a dataset's table, one resolution, one classifier and one
training budget (never compare methods run at different resolutions). Two scales:

- `paper`: the FederatedFactory paper's settings (arXiv 2603.16370 and its public code): ResNet-50 from scratch
  (3x3 stem, batch norm), SGD lr 0.1, momentum 0.9, weight decay 1e-4, cosine, batch 128;
  baselines 200 rounds of 5 local epochs with full participation; centralized 300 epochs;
  FederatedFactory's `paper` preset; 10 clients under Dirichlet, one per class under silos.
  MedMNIST runs at 28 px for every method (the generators at 32, resized), ISIC2019 at 128 px
  for every method (the paper ran FederatedFactory at 128 and the baselines at 224).
- `cpu`: a reduced protocol that finishes on a CPU: the small GroupNorm CNN, 10 rounds of 2
  local epochs, batch 64, lr 0.01, FederatedFactory's `cpu` preset (`cpu_colour`, generators
  at 16 px, for colour data).

digits is CPU-sized at both scales: NIID-Bench's conventional settings (E = 10 local epochs of
batch 64, SGD lr 0.01 with momentum 0.9), a cosine schedule over 15 rounds, 10 clients, the
small GroupNorm CNN at the native 8x8 resolution. Of lr 0.01 / 0.05 / 0.1, 0.01 gave every
weight-averaging method the best mean validation accuracy over IID, Dirichlet 0.1 and silos
(docs/findings/main_table.md, "Tuning").
"""
from __future__ import annotations

from dataclasses import dataclass

from .datasets.registry import get_entry
from .methods.base import TrainConfig
from .methods.registry import METHODS

SCALES = ("paper", "cpu")

DIGITS = {
    "resolution": 8,
    "n_clients": 10,
    "train": TrainConfig(model="cnn", norm="group", rounds=15, local_epochs=10, batch_size=64,
                         lr=0.01, momentum=0.9, weight_decay=1e-4, lr_schedule="cosine",
                         client_fraction=1.0),
    "method_params": {},
}
PAPER_TRAIN = TrainConfig(model="resnet50", norm="batch", rounds=200, local_epochs=5,
                          batch_size=128, lr=0.1, momentum=0.9, weight_decay=1e-4,
                          lr_schedule="cosine", client_fraction=1.0)
CPU_TRAIN = TrainConfig(model="cnn", norm="group", rounds=10, local_epochs=2, batch_size=64,
                        lr=0.01, momentum=0.9, weight_decay=1e-4, lr_schedule="cosine",
                        client_fraction=1.0)


def protocol_for(dataset: str, scale: str = "paper") -> dict:
    """{resolution, n_clients, train, method_params} of `dataset` at `scale`."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; valid choices: {', '.join(SCALES)}")
    if dataset == "digits":
        return DIGITS
    info = get_entry(dataset).info
    resolution = info.resolution
    if scale == "paper":
        return {"resolution": resolution, "n_clients": 10, "train": PAPER_TRAIN,
                "method_params": {"centralized": {"epochs": 300},
                                  "federatedfactory": {"preset": "paper"}}}
    # the small CNN halves the resolution twice: use a multiple of 4 no larger than native;
    # colour images get FederatedFactory's colour preset (docs/findings/colour.md)
    colour = {"federatedfactory": {"preset": "cpu_colour"}} if info.channels == 3 else {}
    return {"resolution": max(4, resolution - resolution % 4), "n_clients": 10,
            "train": CPU_TRAIN, "method_params": colour}


@dataclass(frozen=True)
class Grid:
    """A named grid: datasets x blocks of (methods, splits) x seeds, with the --set values
    and the scale it runs at. `python -m bench run --grid NAME`; a reference names its grid."""

    description: str
    datasets: tuple
    blocks: tuple  # ((methods, splits), ...)
    seeds: tuple = (0,)
    overrides: tuple = ()  # KEY=VALUE, as with --set (the command line's --set wins)
    scale: str = "paper"
    needs: str = ""  # what the grid needs beyond an installed suite (shown when it is absent)
    # torch CPU threads per run without --threads (any executor): the references' count, since
    # CPU float reductions (and so the tripwire's numbers) depend on it; None: torch's default
    # (sequential) or cores / workers (parallel)
    threads: int | None = None
    # the executor without --executor: the default grid runs on joblib, one thread per worker
    # and a worker per core, its generators as parts beside the baselines (docs/findings/science.md)
    executor: str = "sequential"
    # one-at-a-time sweeps: ((METHOD.PARAM, factors), ...); every run of the grid is run once
    # more per factor with PARAM set to its resolved value times the factor (rounded, >= 1), so
    # that the sweep follows the preset (`--set federatedfactory.preset=paper`) it is run with
    sweep: tuple = ()
    # privacy against utility: every run once without DP and once per target epsilon, at the
    # level `overrides` set with dp.level (methods/dp.py)
    epsilons: tuple = ()


# The baselines run under every split; FederatedFactory under silos, the paper's setting: it
# trains one generator per (client, class held), so IID or Dirichlet splits of 10 clients
# cost up to 10x more generators (ask for them with --methods federatedfactory --splits ...).
BASELINES = ("centralized", "local_only", "fedavg", "fedprox", "scaffold")
# The first command's splits: none, strong and extreme label skew. Dirichlet 1.0 (mild skew:
# FedAvg, FedProx and SCAFFOLD within 0.1 points of iid over seeds 0-2) joins them in the
# science and peers grids; leaving it out of the first command took 4 of its 19 runs away
# without changing a bit of the 15 it keeps (docs/findings/measurements.md).
DEFAULT_SPLITS = ("iid", "dirichlet:0.1", "silos")
STUDY_SPLITS = ("iid", "dirichlet:0.1", "dirichlet:1.0", "silos")
# FedCVAE-Ens, FederatedFactory's closest rival (its generators are VAE decoders), joins the
# default grid under silos: 20 s of work on 2 cores. The other peers (docs/methods.md, "The
# peers") have a grid of their own: over three splits each multi-round peer costs 40-75 s and
# DENSE 150 s, which the default grid's four-minute budget cannot hold.
ONE_SHOT = (("federatedfactory", "fedcvae"), ("silos",))
DEFAULT_BLOCKS = ((BASELINES, DEFAULT_SPLITS), ONE_SHOT)
PEERS = ("feddyn", "fednova", "moon", "fedaws", "fedavgm", "fedadam", "fedyogi", "fedadagrad",
         "fedcvae", "dense")
# The paper's datasets; `--all` (`--grid paper`) runs them under silos for every method and
# Dirichlet 0.1 for the baselines and, new here, FederatedFactory too, over five seeds.
PAPER_DATASETS = ("cifar10", "isic2019", "bloodmnist", "pathmnist", "retinamnist")

GRIDS: dict[str, Grid] = {
    "default": Grid("`python -m bench run`: the baselines (centralized, local-only, FedAvg, "
                    "FedProx, SCAFFOLD) under iid, Dirichlet 0.1 and silos, "
                    "FederatedFactory and FedCVAE-Ens under silos, on the embedded digits, "
                    "seed 0 (15 runs)",
                    ("digits",), DEFAULT_BLOCKS, threads=1, executor="joblib"),
    # The smallest grid in which each regression that tests/test_check_sensitivity.py plants
    # moves a number beyond the tripwire's tolerance (docs/checks.md): FedAvg under a
    # Dirichlet split (clients of unequal size, so unweighted averaging shows), FedProx with a
    # proximal weight large enough to matter, SCAFFOLD under silos (its correction matters
    # most there), a constant learning rate of 0.1 (curves that oscillate, so selecting on
    # the test set picks other rounds) and a tiny FederatedFactory under silos and Dirichlet
    # 0.1 (its generators learn little, but its labels and its product of experts determine
    # the numbers; under Dirichlet the clients' label priors differ, so dropping the prior
    # correction shows). About four minutes at two threads (2026-12-04).
    # The peers: FedDyn, FedNova and DENSE under Dirichlet 0.1 (unequal clients: FedNova's
    # normalisation and FedDyn's state act), MOON, FedAwS and FedCVAE-Ens under silos (the
    # contrastive term, the spreadout and the synthetic labels matter most there).
    "sensitivity": Grid(
        "planted-regression grid of the CI tripwire: 11 fast runs on digits",
        ("digits",), ((("fedavg", "federatedfactory", "feddyn", "fednova", "dense"),
                       ("dirichlet:0.1",)),
                      (("fedprox", "scaffold", "federatedfactory", "moon", "fedaws", "fedcvae"),
                       ("silos",))),
        overrides=("rounds=12", "local_epochs=1", "lr=0.1", "lr_schedule=constant",
                   "fedprox.mu=1", "federatedfactory.gen_images_seen=1280",
                   "federatedfactory.samples_per_class=32", "federatedfactory.sampler_steps=5",
                   "federatedfactory.classifier_epochs=4", "fedcvae.samples_per_class=32",
                   "fedcvae.classifier_epochs=4", "dense.epochs=8"), threads=2),
    "science": Grid("the default grid with Dirichlet 1.0 too, over seeds 0-2: what the paper's "
                    "claims are checked on", ("digits",), ((BASELINES, STUDY_SPLITS), ONE_SHOT),
                    seeds=(0, 1, 2), threads=1,
                    executor="joblib"),
    # the peers beside the runs their claims compare with (the science grid's, the same runs)
    "peers": Grid("the peers (FedDyn, FedNova, MOON, FedAwS, FedAvgM, FedAdam, FedYogi, "
                  "FedAdagrad, FedCVAE-Ens, DENSE) on digits, "
                  "iid, Dirichlet 0.1 and 1.0 and silos, seeds 0-2, with centralized, FedAvg and "
                  "FederatedFactory", ("digits",), ((("centralized", "fedavg") + PEERS, STUDY_SPLITS),
                                (("federatedfactory",), ("silos",))), seeds=(0, 1, 2),
                  threads=2),
    # privacy against utility (docs/findings/privacy.md): DP-SGD in every client at three
    # targets beside the same runs without DP
    "privacy": Grid("FedAvg, FedProx and SCAFFOLD on digits under silos and Dirichlet 0.1, "
                    "without DP and with DP-SGD at epsilon 8, 4 and 1, seeds 0-2",
                    ("digits",), ((("fedavg", "fedprox", "scaffold"),
                                   ("silos", "dirichlet:0.1")),),
                    seeds=(0, 1, 2), overrides=("dp.level=example",), epsilons=(8, 4, 1),
                    threads=1, executor="joblib"),
    # the one-shot methods under DP (docs/findings/privacy.md): DPDM for FederatedFactory's
    # modules (server mode, so the modules get the whole target), DP-SGD for DENSE's uploaded
    # classifiers; under Dirichlet 0.1 FederatedFactory trains a module per class a client
    # holds (about 2.6x silos' modules on digits, most of them small)
    "privacy-oneshot": Grid("FederatedFactory (server mode) and DENSE on digits under silos "
                            "and Dirichlet 0.1, without DP and with DP at epsilon 8, 4 and 1, "
                            "seeds 0-2",
                            ("digits",), ((("federatedfactory", "dense"),
                                           ("silos", "dirichlet:0.1")),),
                            seeds=(0, 1, 2),
                            overrides=("dp.level=example", "federatedfactory.modes=server"),
                            epsilons=(8, 4, 1), threads=1, executor="joblib"),
    # the label-skew view (docs/findings/label_skew.md): who is served (per-client accuracy)
    # and what the shared artefacts leak (membership inference), every method
    "label-skew": Grid("every method on digits under silos and Dirichlet 0.1, seeds 0-2: "
                       "per-client accuracy and the membership audit side by side",
                       ("digits",), ((tuple(METHODS), ("silos", "dirichlet:0.1")),),
                       seeds=(0, 1, 2), threads=1, executor="joblib"),
    "pneumonia": Grid("the real PneumoniaMNIST file under silos at CPU scale",
                      ("pneumoniamnist",), ((("centralized", "local_only", "fedavg"),
                                             ("silos",)),), scale="cpu", threads=2,
                      needs="medmnist/pneumoniamnist.npz under the data root (--data-root)"),
    # Colour natural images on a CPU (docs/findings/colour.md): the photographs
    # scikit-image ships, under silos, FederatedFactory with the `cpu_colour` preset beside
    # the baselines
    "colour": Grid("the photos set (colour crops of 8 photographs, no download) under silos at "
                   "CPU scale, seeds 0-2", ("photos",),
                   ((BASELINES + ("federatedfactory",), ("silos",)),), seeds=(0, 1, 2),
                   scale="cpu", threads=2),
    # What a generator needs (docs/findings/generator.md): FederatedFactory's accuracy
    # against its generators' training length and its sampler's steps, each relative to the
    # preset's value; on a GPU `--datasets cifar10` (the paper scale: the `paper` preset and
    # its classifier) finds the knee before the paper's 25M images per generator are spent
    "generator": Grid("FederatedFactory on digits silos, seeds 0-2, at 1/8-2x the preset's "
                      "generator training length and 1/4-2x its sampler steps",
                      ("digits",), ((("federatedfactory",), ("silos",)),), seeds=(0, 1, 2),
                      sweep=(("federatedfactory.gen_images_seen", (0.125, 0.25, 0.5, 1, 2)),
                             ("federatedfactory.sampler_steps", (0.25, 0.5, 1, 2)))),
    "paper": Grid("the paper's grid (--all): its datasets x every method x silos and "
                  "Dirichlet 0.1 x 5 seeds", PAPER_DATASETS,
                  ((tuple(METHODS), ("silos", "dirichlet:0.1")),), seeds=(0, 1, 2, 3, 4)),
}
