"""MOON, model-contrastive federated learning (Li, He and Song, CVPR 2021, Eq. 3-4).

Client k trains on  l = CE(f(x), y) + mu * l_con  with, for each image, its projected
representation z under the model being trained, z_glob under the round's global model and
z_prev under k's own model of its previous round (the global model on its first round):
    l_con = -log( exp(sim(z, z_glob) / tau) / (exp(sim(z, z_glob) / tau)
                                                + exp(sim(z, z_prev) / tau)) )      (Eq. 3)
sim is the cosine similarity; the two frozen models run without gradients. The server is
FedAvg's. Defaults mu = 5, tau = 0.5 (the paper's CIFAR-10 values).

The projection head (a 2-layer MLP, output `projection_dim` = 256 as in the paper) sits on
the classifier's penultimate features and is federated with the rest of the weights. One
deviation, so that every method of a table evaluates the same classifier: the paper feeds the
projection to the output layer; here the output layer keeps the penultimate features and the
head only serves the contrastive term. The previous local model is client state: MOON keeps a
copy of the model per client.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import Capabilities
from .cost import Cost, Phase, Workload
from .models import embed, output_layer
from .training import LocalStats, TrainHooks
from .weight_averaging import State, WeightAveraging


class WithProjection(nn.Module):
    """The table's classifier (`net`, whose logits `forward` returns) with a projection head
    on its penultimate features."""

    def __init__(self, net: nn.Module, projection_dim: int):
        super().__init__()
        width = output_layer(net)[1].in_features
        self.net = net
        self.proj = nn.Sequential(nn.Linear(width, width), nn.ReLU(inplace=True),
                                  nn.Linear(width, projection_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(embed(self.net, x))

    def project_and_classify(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = embed(self.net, x)
        return self.proj(h), output_layer(self.net)[1](h)


def contrastive_loss(z: torch.Tensor, z_glob: torch.Tensor, z_prev: torch.Tensor,
                     tau: float) -> torch.Tensor:
    """MOON's Eq. 3, averaged over the batch."""
    logits = torch.stack([F.cosine_similarity(z, z_glob, dim=1),
                          F.cosine_similarity(z, z_prev, dim=1)], dim=1) / tau
    return F.cross_entropy(logits, torch.zeros(len(z), dtype=torch.long, device=z.device))


class ContrastiveHooks(TrainHooks):
    def __init__(self, glob: WithProjection, prev: WithProjection, mu: float, tau: float):
        self.glob, self.prev, self.mu, self.tau = glob, prev, mu, tau

    def loss(self, model: WithProjection, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        z, logits = model.project_and_classify(x)
        with torch.no_grad():
            z_glob, z_prev = self.glob.project(x), self.prev.project(x)
        return F.cross_entropy(logits, y) + self.mu * contrastive_loss(z, z_glob, z_prev,
                                                                       self.tau)


def frozen_copy(model: nn.Module, state: State) -> nn.Module:
    other = copy.deepcopy(model)
    other.load_state_dict(state)
    other.eval()
    for p in other.parameters():
        p.requires_grad_(False)
    return other


class Moon(WeightAveraging):
    name = "moon"
    # its loss needs two more models' representations: clients train one at a time
    capabilities = Capabilities()

    @dataclass(frozen=True)
    class Params:
        mu: float = 5.0  # weight of the contrastive term
        tau: float = 0.5  # temperature
        projection_dim: int = 256

    def cost(self, work: Workload) -> Cost:
        """FedAvg's, plus the global and previous models' forward passes of every local step."""
        base, t = super().cost(work), work.train
        images = 2 * t.rounds * t.local_epochs * work.sizes["train"] * t.client_fraction
        return Cost(base.phases + (Phase("contrastive passes", images,
                                         work.classifier_flops(False)),))

    def build_model(self, ctx) -> WithProjection:
        net = ctx.new_model()
        with ctx.streams.global_torch("moon/projection"):
            head = WithProjection(net, self.params.projection_dim)
        return head.to(ctx.device)

    def init_client(self, global_state: State, server) -> State | None:
        return None  # no previous model before the first round: the global one stands in

    def client_hooks(self, model, global_state: State, server, client: State | None):
        return ContrastiveHooks(frozen_copy(model, global_state),
                                frozen_copy(model, client if client is not None
                                            else global_state),
                                self.params.mu, self.params.tau)

    def client_message(self, model, global_state: State, server, client, hooks: TrainHooks,
                       stats: LocalStats, lr: float):
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return state, state  # sent up, and kept as the client's previous model
