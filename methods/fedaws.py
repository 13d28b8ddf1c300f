"""FedAwS, Federated Averaging with Spreadout (Yu, Rawat, Menon and Kumar, "Federated
Learning with Only Positive Labels", ICML 2020, Eq. 5-8 and Algorithm 1).

Designed for clients that see a single class. The classifier scores class c by the cosine of
the image's embedding g(x) and the class embedding w_c (the rows of the output layer),
scaled by `cosine_scale` for the softmax that evaluation reads. A client cannot contrast its
class with classes it never sees, so its loss has only the positive term (squared hinge,
Eq. 5's cosine form):
    l_pos = max(0, pos_margin - cos(g(x), w_y))^2.
A client that holds several classes also pushes an image away from the other labels of its
minibatch (the only negatives it can be sure of), max(0, cos(g(x), w_c) - neg_margin)^2;
with one class per client this term is empty and the loss is the paper's.
Without negatives every class embedding would collapse onto the same point; the server
prevents it. After averaging the clients' weights (FedAvg), it takes a gradient step on the
spreadout regulariser of the class embeddings (Eq. 8, w normalised to unit length)
    reg_sp(W) = sum_c sum_{c' != c} max(0, nu - ||w_c - w_c'||)^2,
    W <- W - lambda * grad reg_sp(W)                           (Algorithm 1, server)
with lambda `spreadout_lr` (the paper's multiplier times its learning rate; constant here;
1.0, of 0.01 / 0.1 / 1.0 the best mean validation accuracy on digits) and nu `spreadout_margin`
(default sqrt(2): any two classes at least orthogonal).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .models import output_layer, replace_output_layer
from .training import TrainHooks
from .weight_averaging import State, WeightAveraging


class CosineOutput(nn.Module):
    """scale * cos(h, w_c) for every class c (no bias)."""

    def __init__(self, in_features: int, n_classes: int, scale: float):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_classes, in_features))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))  # nn.Linear's initialisation
        self.scale = scale

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(h, dim=1) @ F.normalize(self.weight, dim=1).T


def positive_negative_loss(cos: torch.Tensor, y: torch.Tensor, pos_margin: float,
                           neg_margin: float) -> torch.Tensor:
    """Squared hinges on the cosines (batch x classes); negatives: the batch's other labels."""
    pos = F.relu(pos_margin - cos.gather(1, y[:, None]).squeeze(1)).square()
    seen = torch.zeros(cos.shape[1], dtype=torch.bool, device=cos.device)
    seen[y] = True
    negative = seen[None, :] & (torch.arange(cos.shape[1], device=cos.device)[None, :]
                                != y[:, None])
    neg = (F.relu(cos - neg_margin).square() * negative).sum(1)
    return (pos + neg).mean()


def spreadout(weight: torch.Tensor, margin: float) -> torch.Tensor:
    """reg_sp(W) over the normalised rows of `weight`."""
    w = F.normalize(weight, dim=1)
    dist = torch.cdist(w, w)
    off = ~torch.eye(len(w), dtype=torch.bool, device=w.device)
    return F.relu(margin - dist[off]).square().sum()


class PositiveHooks(TrainHooks):
    def __init__(self, params):
        self.p = params

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        cos = model(x) / self.p.cosine_scale
        return positive_negative_loss(cos, y, self.p.pos_margin, self.p.neg_margin)


def spreadout_step(weight: torch.Tensor, lr: float, margin: float) -> torch.Tensor:
    """One gradient step of size `lr` on reg_sp."""
    w = weight.detach().double().requires_grad_(True)
    (grad,) = torch.autograd.grad(spreadout(w, margin), w)
    return (w - lr * grad).detach().to(weight.dtype)


class FedAwS(WeightAveraging):
    name = "fedaws"
    vectorises_clients = False  # its loss is not cross-entropy

    @dataclass(frozen=True)
    class Params:
        pos_margin: float = 0.9
        neg_margin: float = 0.0
        spreadout_lr: float = 1.0  # lambda (tuned on validation data: docs/findings/main_table.md)
        spreadout_margin: float = math.sqrt(2)  # nu
        cosine_scale: float = 10.0

    def build_model(self, ctx) -> nn.Module:
        net = ctx.new_model()
        _, old = output_layer(net)
        with ctx.streams.global_torch("fedaws/embeddings"):
            layer = CosineOutput(old.in_features, ctx.n_classes, self.params.cosine_scale)
        replace_output_layer(net, layer.to(ctx.device))
        return net

    def init_server(self, model: nn.Module, global_state: State) -> str:
        return f"{output_layer(model)[0]}.weight"

    def client_hooks(self, model, global_state, server, client) -> TrainHooks:
        return PositiveHooks(self.params)

    def extra(self, model: nn.Module) -> dict:
        w = F.normalize(output_layer(model)[1].weight.detach().double(), dim=1)
        cos = w @ w.T
        off = ~torch.eye(len(w), dtype=torch.bool, device=w.device)
        return {"mean_class_cosine": float(cos[off].mean())}  # final model's embeddings

    def aggregate(self, acc, global_state: State, server: str, n_clients: int):
        new = acc.result(global_state)
        new[server] = spreadout_step(new[server], self.params.spreadout_lr,
                                     self.params.spreadout_margin)
        return new, server
