"""FedCVAE-Ens (Heinbaugh, Luz-Ricca and Shao, "Data-Free One-Shot Federated Learning Under
Very High Statistical Heterogeneity", ICLR 2023, Section 3.1 and Algorithm 1).

1. Client k trains a conditional VAE on its own images: encoder q(z | x, y), decoder
   p(x | z, y), maximising the ELBO (Kingma and Welling 2014; Sohn et al. 2015)
       log p(x | y) >= E_q[log p(x | z, y)] - KL(q(z | x, y) || N(0, I)),
   here with a Bernoulli likelihood over pixel intensities in [0, 1] (binary cross-entropy)
   and the reparameterisation z = mu + sigma * eps. MLP encoder and decoder (the paper's
   MNIST-scale networks), `latent_dim`-dimensional z.
2. One communication round: the client sends its decoder and its label counts, once.
3. The server draws z ~ N(0, I) and labels for each decoder, decodes (the Bernoulli means
   are the images) and trains the table's classifier on the synthetic set alone, with
   validation-based selection. Where the paper draws each decoder's labels from its label
   counts, the set here is class-balanced exactly as FederatedFactory's (`samples_per_class`
   images of every class, shared among the decoders that hold it in proportion to their
   counts; methods/synthesis.py), so that under silos the two differ only in the generator
   family: a VAE decoder against a diffusion model.

Exact unlearning as in FederatedFactory: `exclude_clients` leaves a client's decoder out and
the classifier is retrained from the others (`bench unlearn`).

With DP (`--set dp.epsilon=E`, example level): each client's whole CVAE trains by DP-SGD
(Abadi et al. 2016; methods/dp.py): Poisson-sampled batches, each image's negative ELBO
gradient clipped and noised, Adam on the privatised gradients; the decoder it sends is
post-processing. Each client is accounted over its epochs at its own rate. The label counts
it sends are public, as every client's size is in a DP run here (docs/privacy.md).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import Capabilities, MethodResult, RunContext
from .checkpoints import resumable
from .communication import tensor_bytes
from .cost import Cost, Workload, classifier_training
from .dp import DPSpent, account_clients, clipped_noisy_gradients, poisson_batches, \
    sample_rate
from .oneshot import Generators, OneShotGenerative
from .privacy import not_audited
from .results import Communication
from .synthesis import shares


class ConditionalVAE(nn.Module):
    def __init__(self, pixels: int, n_classes: int, hidden: int, latent: int):
        super().__init__()
        self.n_classes, self.latent = n_classes, latent
        self.encoder = nn.Sequential(nn.Linear(pixels + n_classes, hidden), nn.ReLU(),
                                     nn.Linear(hidden, hidden), nn.ReLU(),
                                     nn.Linear(hidden, 2 * latent))
        self.decoder = nn.Sequential(nn.Linear(latent + n_classes, hidden), nn.ReLU(),
                                     nn.Linear(hidden, hidden), nn.ReLU(),
                                     nn.Linear(hidden, pixels))

    def onehot(self, y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """F.one_hot's values, by comparison (vmap, which DP-SGD's per-image gradients use,
        cannot take F.one_hot's data-dependent size)."""
        return (y[:, None] == torch.arange(self.n_classes, device=y.device)).to(dtype)

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Bernoulli logits of the pixels."""
        return self.decoder(torch.cat([z, self.onehot(y, z.dtype)], 1))

    def forward(self, x01: torch.Tensor, y: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """The loss (what DP-SGD's per-image gradients differentiate)."""
        return self.loss(x01, y, eps)

    def loss(self, x01: torch.Tensor, y: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """The negative ELBO per image (x01: flattened images in [0, 1])."""
        onehot = self.onehot(y, x01.dtype)
        mu, logvar = self.encoder(torch.cat([x01, onehot], 1)).chunk(2, dim=1)
        z = mu + (0.5 * logvar).exp() * eps
        return elbo_loss(self.decode(z, y), x01, mu, logvar)


def elbo_loss(logits: torch.Tensor, x01: torch.Tensor, mu: torch.Tensor,
              logvar: torch.Tensor) -> torch.Tensor:
    """Reconstruction (binary cross-entropy, summed over pixels) + KL(N(mu, sigma^2) || N(0, I))
    in closed form, -1/2 sum(1 + log sigma^2 - mu^2 - sigma^2), averaged over the batch."""
    rec = F.binary_cross_entropy_with_logits(logits, x01, reduction="none").sum(1)
    kl = -0.5 * (1 + logvar - mu.square() - logvar.exp()).sum(1)
    return (rec + kl).mean()


class FedCVAE(OneShotGenerative):
    """Its generator: a conditional VAE per client (methods/oneshot.py runs the rest)."""

    name = "fedcvae"
    PURPOSE = "fedcvae"
    GENERATOR_PHASE = "decoders"
    # DP at the example level: DP-SGD for each client's CVAE (the module's docstring)
    capabilities = Capabilities(unlearns=True, dp_levels=("example",))

    @dataclass(frozen=True)
    class Params:
        latent_dim: int = 16
        hidden: int = 256
        vae_epochs: int = 0  # 0: rounds x local_epochs, the passes each client makes in FL
        vae_lr: float = 1e-3  # Adam
        samples_per_class: int = 300  # as FederatedFactory's cpu preset
        classifier_epochs: int = 30  # as FederatedFactory's cpu preset
        exclude_clients: tuple = ()  # clients whose decoders are left out (unlearning)

    def cost(self, work: Workload) -> Cost:
        """The server classifier on the synthetic set (the MLP VAEs are negligible beside it)."""
        synth = self.params.samples_per_class * work.n_classes
        return Cost(tuple(classifier_training(work, self.params.classifier_epochs, images=synth,
                                              phase="server classifier")))

    def _epochs(self, ctx: RunContext) -> int:
        return self.params.vae_epochs or ctx.train.rounds * ctx.train.local_epochs

    def _private(self, ctx: RunContext, members: list[int]) -> tuple[DPSpent, dict]:
        """A DP run's spending and noise multiplier per member client, each accounted over
        its epochs of Poisson-sampled batches (the accountant's answers are cached, so the
        run and its record ask once)."""
        return account_clients(ctx.dp, {k: (len(ctx.clients[k]), self._epochs(ctx))
                                        for k in members}, ctx.train.batch_size)

    def run(self, ctx: RunContext) -> MethodResult:
        """The one-shot pipeline (methods/oneshot.py); a DP run's record keeps what it spent."""
        result = super().run(ctx)
        if ctx.dp is None:
            return result
        return dataclasses.replace(result, dp=self._private(ctx, self.members(ctx))[0])

    def train_generators(self, ctx: RunContext, members: list[int]) -> Generators:
        """Step 1: a conditional VAE per member client, on its own images."""
        p, data, n_classes, cfg = self.params, ctx.data, ctx.n_classes, ctx.train
        epochs = self._epochs(ctx)
        sigma = self._private(ctx, members)[1] if ctx.dp is not None else {}
        pixels = data.info.channels * data.resolution * data.resolution
        done: dict[int, dict] = {}  # the finished clients' weights
        vae = opt = None  # the client in training's

        def new(k: int):
            with ctx.streams.global_torch(f"fedcvae/init/k{k}"):
                made = ConditionalVAE(pixels, n_classes, p.hidden, p.latent_dim)
            made = made.to(ctx.device)
            return made, torch.optim.Adam(made.parameters(), lr=p.vae_lr)

        # checkpoints: the finished clients' weights, and the client in training's weights
        # and Adam moments (its batches and noise come from a stream per epoch)
        def save() -> dict:
            return {"done": done, "client": k, "vae": vae.state_dict(),
                    "optimizer": opt.state_dict()}

        def load(saved: dict) -> None:
            nonlocal vae, opt
            done.update(saved["done"])
            vae, opt = new(saved["client"])
            vae.load_state_dict(saved["vae"])
            opt.load_state_dict(saved["optimizer"])

        def at(steps: int) -> str:
            return f"client {members[(steps - 1) // epochs]}, epoch {(steps - 1) % epochs + 1} " \
                   f"of {epochs}"

        # one step per (member client, epoch), client after client
        with ctx.progress(len(members) * epochs, "client CVAE epochs") as bar:
            for step in resumable(ctx.checkpoint, "fedcvae/decoders", len(members) * epochs,
                                  save, load, at, bar):
                k, e = members[step // epochs], step % epochs
                if e == 0:
                    vae, opt = new(k)
                idx = ctx.clients[k]
                gen = ctx.streams.torch(f"fedcvae/batches/k{k}/e{e}")
                if ctx.dp is not None and len(idx):
                    self._private_epoch(ctx, vae, opt, idx, gen, sigma[k],
                                        ctx.streams.torch(f"dp/noise/fedcvae/k{k}/e{e}"))
                    bar.update(1)
                    if e == epochs - 1:
                        done[k] = vae.state_dict()
                    continue
                for x, y in data.batches(idx, cfg.batch_size, gen, train=False):
                    x01 = x.reshape(len(x), -1).add(1).div(2)
                    eps = torch.randn(len(x), p.latent_dim, generator=gen).to(ctx.device)
                    loss = vae.loss(x01, y, eps)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                bar.update(1)
                if e == epochs - 1:
                    done[k] = vae.state_dict()
        vaes, holders, log = {}, {c: {} for c in range(n_classes)}, []
        for k in members:
            counts = torch.bincount(data.y_train[ctx.clients[k]], minlength=n_classes).cpu()
            trained, _ = new(k)
            trained.load_state_dict(done[k])
            vaes[k] = (trained, counts)
            for c in range(n_classes):
                if counts[c] > 0:
                    holders[c][k] = int(counts[c])
                    log.append({"client": k, "class": c, "images": int(counts[c])})
        return Generators(vaes, holders, log)

    def _private_epoch(self, ctx: RunContext, vae: ConditionalVAE, opt, idx: torch.Tensor,
                       gen: torch.Generator, sigma: float, noise: torch.Generator) -> None:
        """One epoch of DP-SGD: ceil(n / batch_size) Poisson-sampled batches (from `gen`,
        which also draws the reparameterisation noise), each image's negative-ELBO gradient
        clipped to dp.clip, Gaussian noise of std sigma * clip (from `noise`), over the
        expected batch; Adam steps on the result."""
        b, latent = ctx.train.batch_size, self.params.latent_dim
        expected = sample_rate(len(idx), b) * len(idx)
        for batch in poisson_batches(idx, b, gen):
            x, y = ctx.data.batch(batch, gen, train=False)
            x01 = x.flatten(1).add(1).div(2)  # flatten: a Poisson batch may be empty
            eps = torch.randn(len(x), latent, generator=gen).to(ctx.device)
            grads = clipped_noisy_gradients(
                vae, lambda call, xi, yi, ei: call(xi[None], yi[None], ei[None]),
                (x01, y, eps), ctx.dp.clip, sigma, expected, noise)
            for q, g in zip(vae.parameters(), grads):
                q.grad = g
            opt.step()

    def synthesise(self, ctx: RunContext, members: list[int],
                   gens: Generators) -> tuple[torch.Tensor, torch.Tensor]:
        """Step 3 of the paper: each decoder's share of each class it holds, decoded from
        z ~ N(0, I) (the Bernoulli means are the images)."""
        p, data = self.params, ctx.data
        shape = (data.info.channels, data.resolution, data.resolution)
        sx, sy = [], []
        with torch.no_grad():
            for c in range(ctx.n_classes):
                for k, n in shares(gens.holders[c], p.samples_per_class).items():
                    gen = ctx.streams.torch(f"fedcvae/sample/k{k}/c{c}")
                    z = torch.randn(n, p.latent_dim, generator=gen).to(ctx.device)
                    y = torch.full((n,), c, dtype=torch.int64, device=ctx.device)
                    x = torch.sigmoid(gens.models[k][0].decode(z, y)).reshape(n, *shape)
                    sx.append(x.mul(255).round().to(torch.uint8).cpu())
                    sy.append(y.cpu())
        return torch.cat(sx), torch.cat(sy)

    def audit(self, ctx: RunContext, members: list[int], gens: Generators) -> dict:
        return not_audited("a decoder alone gives no per-image likelihood for the loss attack "
                           "(the encoder stays with its client)")

    def communication(self, ctx: RunContext, members: list[int],
                      gens: Generators) -> dict[str, Communication]:
        """Up: each decoder and its label counts; down: the classifier to every client."""
        up = {k: tensor_bytes(dict(vae.decoder.state_dict())) + tensor_bytes(counts)
              for k, (vae, counts) in gens.models.items()}
        return {"server": Communication(
            1, sum(up.values()), len(members) * ctx.classifier_bytes(),
            up_bytes_per_client={str(k): v for k, v in up.items()},
            note="each client's decoder and class counts up once; the classifier down to "
                 "every client")}
