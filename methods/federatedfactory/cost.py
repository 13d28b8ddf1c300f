"""What a FederatedFactory run costs (`FederatedFactory.cost`, methods/cost.py): its generators'
training and sampling FLOPs counted on the meta device, its downstream classifiers', the
generators' training memory, and the unit costs the authors' public job logs time.
"""
from __future__ import annotations

import functools

import torch

from ..cost import Cost, Network, Phase, UnitCost, Workload, per_image_flops, training_bytes
from .network import build_unet, generator_resolution
from .params import FFParams
from .sampler import network_evaluations

# The authors' logged costs on one H100 (Fed-ISIC2019 at 128 px, local mode, their public job
# logs), seconds: what the unit costs are checked against (docs/scaling.md, "The paper grid on
# paper").
LOGGED_ON = "one H100"
LOGGED = {"isic2019": {"synthesis": 16.7 * 60,  # 10,000 images of one class, Heun 50 steps
                       "classifier epoch": 2.5 * 60}}  # ResNet-50 over a client's ~74k images


def _call(m, x):
    return m(x, torch.zeros(x.shape[0], dtype=torch.long, device=x.device))


@functools.cache
def unet_flops(p: FFParams, channels: int, resolution: int, train: bool) -> float:
    """FLOPs per image of one generator network evaluation (forward, or forward + backward)."""
    return per_image_flops(lambda: build_unet(p, channels, resolution),
                           lambda m, x: _call(m, x).sample, (channels, resolution, resolution),
                           train)


@functools.cache
def unet_bytes(p: FFParams, channels: int, resolution: int) -> int:
    """Training memory of a generator with AdamW and EMA (three copies), once per shape."""
    return training_bytes(lambda: build_unet(p, channels, resolution), _call,
                          (channels, resolution, resolution), p.gen_batch_size, 3)


def ff_cost(p: FFParams, work: Workload) -> Cost:
    res = generator_resolution(p, work.resolution)
    counts = work.class_counts
    members = [k for k in range(len(counts)) if k not in set(p.exclude_clients)]
    modules = int((counts[members] >= p.min_class_samples).sum())
    synth = p.samples_per_class * work.n_classes
    fwd, step = work.classifier_flops(False), work.classifier_flops(True)
    phases = [Phase("generator training", modules * p.gen_images_seen,
                    unet_flops(p, work.channels, res, True), tasks=max(modules, 1)),
              Phase("sampling", synth * network_evaluations(p),
                    unet_flops(p, work.channels, res, False))]
    if "server" in p.modes:
        phases += [Phase("server classifier", p.classifier_epochs * synth, step),
                   Phase("server evaluation", p.classifier_epochs * work.eval_images, fwd)]
    if "local" in p.modes:  # each client: its real images + the synthetic ones of other classes
        n = len(members)
        held = modules / max(n, 1)
        per_client = work.sizes["train"] / work.n_clients + synth * (1 - held / work.n_classes)
        phases += [Phase("local classifiers", p.classifier_epochs * n * per_client, step),
                   Phase("local evaluation", p.classifier_epochs * n * work.eval_images, fwd)]
    network = Network(unet_bytes(p, work.channels, res),
                      f"a generator at {res} px, batch {p.gen_batch_size}")
    return Cost(tuple(phases), (network,), tuple(unit_costs(p, work)))


def unit_costs(p: FFParams, work: Workload) -> list[UnitCost]:
    """The units the authors' logs time: synthesis of 10,000 images of one class, one
    local-mode classifier epoch over one client's real and synthetic images (under silos: its
    own class real, every other synthetic), and the training of one generator."""
    res = generator_resolution(p, work.resolution)
    t, logged = work.train, LOGGED.get(work.dataset, {})
    client = work.sizes["train"] / work.n_classes + p.samples_per_class * (work.n_classes - 1)
    units = [
        ("synthesis", f"10,000 images of one class, {p.sampler} {p.sampler_steps} steps at "
                      f"{res} px",
         10_000 * network_evaluations(p) * unet_flops(p, work.channels, res, False)),
        ("classifier epoch", f"{t.model} over one client's {client:,.0f} images at "
                             f"{work.resolution} px", client * work.classifier_flops(True)),
        ("generator training", f"{p.gen_images_seen:,} images at {res} px",
         p.gen_images_seen * unet_flops(p, work.channels, res, True)),
    ]
    return [UnitCost(unit, what, flops, logged.get(unit), LOGGED_ON if unit in logged else "")
            for unit, what, flops in units]
