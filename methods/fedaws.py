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
Each client returns the body of the network and only the embeddings of the classes it holds
(Algorithm 1: a client with one class sends that class's row). The server averages the body
over all clients weighted by their sample counts, as FedAvg, and assembles the class-embedding
matrix W row by row: row c is the mean of the rows sent by the clients that hold c, weighted by
their images of c; a row nobody sent this round keeps its value. (Averaging every row over
all clients instead, as a plain FedAvg of the whole network does, moves row c by only about
n_c / N of its holders' update: a tenfold smaller step under 10-class silos.)
Without negatives every class embedding would collapse onto the same point; the server
prevents it. After assembling W, it takes a gradient step on the
spreadout regulariser of the class embeddings (Eq. 8, w normalised to unit length)
    reg_sp(W) = sum_c sum_{c' != c} max(0, nu - ||w_c - w_c'||)^2,
    W <- W - lambda * grad reg_sp(W)                           (Algorithm 1, server)
with lambda `spreadout_lr` (the paper's multiplier times its learning rate; constant here;
0.3, of 0.1 / 0.3 / 1 / 3 / 10 the best mean validation accuracy on digits under silos and
Dirichlet 0.1, seed 0, once rows were assembled from their holders; 1.0 before) and nu
`spreadout_margin` (default sqrt(2): any two classes at least orthogonal).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import Capabilities
from .models import output_layer, replace_output_layer
from .training import TrainHooks
from .weight_averaging import State, WeightAveraging, WeightedMean


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
    """The client's loss; counts the labels it trains on (which rows of W it may send)."""

    def __init__(self, params, n_classes: int):
        self.p, self.n_classes = params, n_classes
        self.seen = None  # images per class trained on, on the device (no sync per step)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        counts = torch.bincount(y.detach(), minlength=self.n_classes)
        self.seen = counts if self.seen is None else self.seen + counts
        cos = model(x) / self.p.cosine_scale
        return positive_negative_loss(cos, y, self.p.pos_margin, self.p.neg_margin)


@dataclass
class RowMean:
    """The round's accumulator: FedAvg's weighted mean of everything but W, and per row c of
    W the sum of the rows its holders sent, weighted by their images of c."""

    body: WeightedMean
    rows: torch.Tensor | None = None  # (C, d) weighted sums, from the first message on
    weights: torch.Tensor | None = None  # (C,) summed weights

    def add(self, msg: dict, n_samples: int) -> None:
        self.body.add(msg["body"], n_samples)
        seen = msg["seen"].double()
        if self.rows is None:
            self.rows = torch.zeros(len(seen), msg["rows"].shape[1], dtype=torch.float64,
                                    device=seen.device)
            self.weights = torch.zeros(len(seen), dtype=torch.float64, device=seen.device)
        held = torch.nonzero(seen > 0).squeeze(1)
        self.rows.index_add_(0, held, msg["rows"].double() * seen[held][:, None])
        self.weights.index_add_(0, held, seen[held])

    def result(self, like: State, key: str) -> State:
        """The new global state: the body's weighted mean; row c of W the mean of the rows
        its holders sent, or its value in `like` when no holder was sampled."""
        new = self.body.result({k: v for k, v in like.items() if k != key})
        old = like[key]
        sent = self.weights > 0
        mean = self.rows / self.weights.clamp_min(1e-300)[:, None]
        new[key] = torch.where(sent[:, None], mean, old.double()).to(old.dtype)
        return {k: new[k] for k in like}


def spreadout_step(weight: torch.Tensor, lr: float, margin: float) -> torch.Tensor:
    """One gradient step of size `lr` on reg_sp."""
    w = weight.detach().double().requires_grad_(True)
    (grad,) = torch.autograd.grad(spreadout(w, margin), w)
    return (w - lr * grad).detach().to(weight.dtype)


class FedAwS(WeightAveraging):
    name = "fedaws"
    capabilities = Capabilities()  # its loss is not cross-entropy: no vectorised clients

    @dataclass(frozen=True)
    class Params:
        pos_margin: float = 0.9
        neg_margin: float = 0.0
        spreadout_lr: float = 0.3  # lambda (tuned on validation data: docs/findings/fidelity.md)
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
        return PositiveHooks(self.params, len(global_state[server]))

    def client_message(self, model, global_state, server, client, hooks, stats, lr):
        """The body, the rows of W of the classes this client trained on, and its count of
        each class (which rows they are, and their weights)."""
        state = {k: v.detach() for k, v in model.state_dict().items()}
        w = state.pop(server)
        seen = hooks.seen.to(w.device)
        return {"body": state, "rows": w[torch.nonzero(seen > 0).squeeze(1)], "seen": seen}, \
            client

    def start_round(self, global_state: State) -> RowMean:
        return RowMean(WeightedMean.like(global_state))

    def extra(self, model: nn.Module) -> dict:
        w = F.normalize(output_layer(model)[1].weight.detach().double(), dim=1)
        cos = w @ w.T
        off = ~torch.eye(len(w), dtype=torch.bool, device=w.device)
        return {"mean_class_cosine": float(cos[off].mean())}  # final model's embeddings

    def aggregate(self, acc: RowMean, global_state: State, server: str, n_clients: int):
        new = acc.result(global_state, server)
        new[server] = spreadout_step(new[server], self.params.spreadout_lr,
                                     self.params.spreadout_margin)
        return new, server
