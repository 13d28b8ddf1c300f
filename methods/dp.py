"""Differential privacy, with an accountant: what a run sets (`DPConfig`, `--set dp.epsilon=4
dp.level=example`), the noise the accountant chooses for that target, the two mechanisms of
weight averaging, and what the record keeps (`DPSpent`).

Two levels, as Flower names them:
- **example** (DP-SGD, Abadi et al., CCS 2016, Algorithm 1): inside each client, every step
  samples its batch by Poisson sampling (each of the client's images with probability
  q = batch_size / n_k), clips each image's gradient to L2 norm C, sums, adds Gaussian noise
  N(0, sigma^2 C^2 I) and divides by the expected batch size q n_k. A client is accounted over
  every step of every round it takes part in (the client schedule is drawn up front, from no
  data), with its own sampling rate, so each client's sigma reaches the target for its own
  images; the run's epsilon is the largest. Per-example gradients: `torch.func` (vmap of grad).
- **client** (DP-FedAvg, McMahan et al., ICLR 2018, Algorithm 1 with the fixed denominator):
  each round, clients are sampled by Poisson sampling with q = client_fraction (every client
  when it is 1), the server clips each client's update (trained weights minus global) to L2
  norm C, sums the clipped updates, adds N(0, sigma^2 C^2 I) and divides by the expected
  number of clients q n. Accounted over the rounds with sampling rate q.

The accountant: Opacus's (Yousefpour et al. 2021) RDP accountant (Mironov 2017; the sampled
Gaussian mechanism of Mironov, Talwar and Zhang 2019), or its PRV accountant (Gopi et al.
2021), chosen by `dp.accountant`; `get_noise_multiplier` finds the smallest sigma whose epsilon
after the run's steps is within 0.01 of the target, and the record keeps the epsilon that
sigma actually spends. Both assume Poisson sampling, which is why the batches and the client
samples are drawn that way here: accounting shuffled fixed-size batches as Poisson-sampled
ones, as several FL libraries do, overstates the privacy (tests/test_dp.py).

Weight decay, momentum and the methods' gradient terms (FedProx's proximal term, SCAFFOLD's
control variates) act on the privatised gradients and the models they produce: post-processing,
which DP allows. Which methods support which level is declared in their `Capabilities.dp_levels`
(docs/privacy.md lists them and why).
"""
from __future__ import annotations

import functools
import math
import warnings
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

LEVELS = ("example", "client")
# the RDP accountant's orders: integers, whose moments have a closed form (Opacus's default
# fractional orders cost seconds per client at few steps); a valid bound, at most about 1 %
# more noise at epsilon <= 8 and 4 % at epsilon 16 over 10 steps (docs/privacy.md)
RDP_ORDERS = (*range(2, 65), 80, 96, 128, 192, 256)
ACCOUNTANTS = ("rdp", "prv")
NOT_PRIVATE = "no DP"  # what tables and records say of a run without DP
# the most memory the per-example gradients of one chunk of a batch take (float32 bytes)
PER_EXAMPLE_BYTES = 2 ** 31


@dataclass(frozen=True)
class DPConfig:
    """What a user asks for: a target (epsilon, delta) at a level; the accountant chooses the
    noise multiplier. Part of the run's identity (`RunConfig.dp`)."""

    epsilon: float  # the target
    delta: float = 1e-5
    level: str = "example"  # example | client
    clip: float = 1.0  # the L2 clipping norm C: of each image's gradient, or of a client's update
    accountant: str = "rdp"  # rdp | prv (Opacus's accountants)
    # DPDM's noise multiplicity (Dockhorn et al. 2022, Sec. 3.2): a diffusion module's loss of
    # each image averaged over this many noise draws before its gradient is clipped (less
    # variance, no privacy cost); methods without diffusion modules ignore it
    noise_draws: int = 1

    def validate(self) -> None:
        """Raises ValueError with what to do."""
        if not self.epsilon > 0:
            raise ValueError(f"dp.epsilon must be > 0, got {self.epsilon}")
        if not 0 < self.delta < 1:
            raise ValueError(f"dp.delta must be in (0, 1), got {self.delta}")
        if self.level not in LEVELS:
            raise ValueError(f"dp.level must be one of {', '.join(LEVELS)}, got {self.level!r}")
        if not self.clip > 0:
            raise ValueError(f"dp.clip must be > 0, got {self.clip}")
        if not (type(self.noise_draws) is int and self.noise_draws >= 1):
            raise ValueError(f"dp.noise_draws must be an integer >= 1, got {self.noise_draws}")
        if self.accountant not in ACCOUNTANTS:
            raise ValueError(f"dp.accountant must be one of {', '.join(ACCOUNTANTS)}, got "
                             f"{self.accountant!r}")

    @property
    def label(self) -> str:
        """How tables name it: the target and level, and every other setting that is not
        the default (so that runs of other settings never share a cell)."""
        default = DPConfig(self.epsilon)
        return " ".join([f"eps={self.epsilon:g}", self.level,
                         *(f"{k}={getattr(self, k):g}" if k != "accountant" else
                           f"{k}={self.accountant}"
                           for k in ("delta", "clip", "accountant", "noise_draws")
                           if getattr(self, k) != getattr(default, k))])


def require_accountant() -> None:
    """Raises ValueError (what to install) when Opacus's accountants are missing."""
    _opacus()


def _opacus():
    try:
        from opacus.accountants import PRVAccountant, RDPAccountant
        from opacus.accountants.utils import get_noise_multiplier
    except ImportError:
        raise ValueError("differential privacy needs Opacus's accountants: pip install -e "
                         "'.[dp]'") from None
    return get_noise_multiplier, {"rdp": RDPAccountant, "prv": PRVAccountant}


@functools.lru_cache(maxsize=4096)
def noise_multiplier(dp: DPConfig, sample_rate: float, steps: int) -> tuple[float, float]:
    """(sigma, the epsilon it spends): the smallest noise multiplier whose epsilon after
    `steps` steps of the sampled Gaussian mechanism at `sample_rate` reaches the target.
    Cached: a pure function of its arguments, asked again by a run's record and its parts."""
    get_noise_multiplier, _ = _opacus()
    with warnings.catch_warnings():  # "optimal order is the largest alpha": a looser bound
        warnings.simplefilter("ignore", UserWarning)
        sigma = get_noise_multiplier(target_epsilon=dp.epsilon, target_delta=dp.delta,
                                     sample_rate=sample_rate, steps=steps,
                                     accountant=dp.accountant, **_orders(dp))
        return sigma, spent(dp, sigma, sample_rate, steps)


def spent(dp: DPConfig, sigma: float, sample_rate: float, steps: int) -> float:
    """The epsilon at `dp.delta` of `steps` steps at noise `sigma` and `sample_rate`."""
    return composed(dp, [(sigma, sample_rate, steps)])


def composed(dp: DPConfig, history: list[tuple[float, float, int]]) -> float:
    """The epsilon at `dp.delta` of the sampled Gaussian mechanisms in `history` (sigma,
    sample rate, steps) applied in turn to the same images (sequential composition, in the
    accountant's own terms: RDP adds the orders' divergences)."""
    _, accountants = _opacus()
    accountant = accountants[dp.accountant]()
    accountant.history = list(history)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return float(accountant.get_epsilon(dp.delta, **_orders(dp)))


def _orders(dp: DPConfig) -> dict:
    return {"alphas": list(RDP_ORDERS)} if dp.accountant == "rdp" else {}


@dataclass(frozen=True)
class DPSpent:
    """What a DP run's record keeps (`Record.dp`): the target, the epsilon spent (at level
    example the largest of the clients'), the accountant, and per accounted party (a client at
    level example, the federation at level client) its noise multiplier, sampling rate, steps
    and epsilon."""

    level: str
    target_epsilon: float
    epsilon: float
    delta: float
    accountant: str
    clip: float
    parties: tuple[dict, ...]  # {"party", "noise_multiplier", "sample_rate", "steps", "epsilon"}

    def to_dict(self) -> dict:
        d = asdict(self)
        d["parties"] = list(d["parties"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "DPSpent":
        return cls(**{**d, "parties": tuple(d["parties"])})


def account_clients(dp: DPConfig, clients: dict[int, tuple[int, int]],
                    batch_size: int) -> tuple[DPSpent, dict[int, float]]:
    """DP-SGD in every client: `clients[k]` = (its images n_k, its epochs); each epoch is
    ceil(n_k / batch_size) steps at sampling rate batch_size / n_k (`poisson_batches`).
    Returns what the run spends (a party "client k" each, in the order given) and each
    client's noise multiplier."""
    spent = account(dp, [(f"client {k}", sample_rate(n, batch_size),
                          epochs * steps_per_epoch(n, batch_size))
                         for k, (n, epochs) in clients.items()])
    return spent, {k: row["noise_multiplier"] for k, row in zip(clients, spent.parties)}


def account(dp: DPConfig, parties: list[tuple[str, float, int]]) -> DPSpent:
    """Noise per party (name, sample rate, steps) for the target, and what it spends."""
    rows = []
    for party, rate, steps in parties:
        sigma, eps = noise_multiplier(dp, rate, steps)
        rows.append({"party": party, "noise_multiplier": sigma, "sample_rate": rate,
                     "steps": steps, "epsilon": eps})
    return DPSpent(dp.level, dp.epsilon, max(r["epsilon"] for r in rows), dp.delta,
                   dp.accountant, dp.clip, tuple(rows))


# --- example level: DP-SGD inside a client --------------------------------------------------
def steps_per_epoch(n_images: int, batch_size: int) -> int:
    return math.ceil(n_images / batch_size)


def sample_rate(n_images: int, batch_size: int) -> float:
    return min(1.0, batch_size / n_images)


def private_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, clip: float,
                      sigma: float, expected_batch: float, gen: torch.Generator
                      ) -> list[torch.Tensor]:
    """DP-SGD's gradient of the cross-entropy for the batch (x, y): each image's gradient
    clipped to L2 norm `clip`, summed, plus N(0, (sigma clip)^2) per coordinate drawn from
    `gen`, over `expected_batch`; in the order of `model.parameters()`. An empty batch gives
    the noise alone. (No loss: a DP run releases none, methods/training.py.)"""
    def one(call, xi, yi):
        return F.cross_entropy(call(xi[None]), yi[None])

    return clipped_noisy_gradients(model, one, (x, y), clip, sigma, expected_batch, gen)


def clipped_noisy_gradients(model: nn.Module, loss_of_one, batch: tuple[torch.Tensor, ...],
                            clip: float, sigma: float, expected_batch: float,
                            gen: torch.Generator) -> list[torch.Tensor]:
    """The sampled Gaussian mechanism on gradients: `loss_of_one(call, *example)` is one
    example's loss, where `call(*inputs)` runs `model` (with the parameters being
    differentiated) and `example` holds the example's slice of each tensor in `batch`; each
    example's gradient (all parameters together) is clipped to L2 norm `clip`, the clipped
    gradients are summed, N(0, (sigma clip)^2) per coordinate drawn from `gen` is added, and
    the sum is divided by `expected_batch`. In the order of `model.parameters()`; an empty
    batch gives the noise alone. Per-example gradients: `torch.func`'s vmap of grad."""
    from torch.func import functional_call, grad, vmap

    names = [n for n, _ in model.named_parameters()]
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = dict(model.named_buffers())

    def one(p, *example):
        return loss_of_one(lambda *inputs: functional_call(model, (p, buffers), inputs),
                           *example)

    summed = [torch.zeros_like(params[n]) for n in names]
    # per-example gradients hold a copy of the parameters per example: chunks of at most
    # PER_EXAMPLE_BYTES of them (DP-SGD's virtual steps; the sum, and so the privacy, is the
    # same); the chunk depends on the model's size alone, so the bits do not depend on the
    # machine (a digits model's DP batches fit in one chunk)
    chunk = max(1, PER_EXAMPLE_BYTES // (4 * sum(p.numel() for p in params.values())))
    for start in range(0, len(batch[0]), chunk):
        part = tuple(t[start:start + chunk] for t in batch)
        with warnings.catch_warnings():  # attention layers have no batching rule yet: slower
            warnings.filterwarnings("ignore", "There is a performance drop")
            per = vmap(grad(one), in_dims=(None, *[0] * len(part)),
                       randomness="different")(params, *part)
        norms = torch.sqrt(sum(per[n].flatten(1).pow(2).sum(1) for n in names))
        # an example whose gradient is not finite contributes nothing (norm 0 <= clip), so
        # that no example can turn the sum into NaN
        finite = torch.isfinite(norms)
        scale = torch.where(finite, (clip / (norms + 1e-6)).clamp(max=1.0), 0.0)
        for s, n in zip(summed, names):
            s += torch.einsum("b,b...->...", scale,
                              torch.where(finite.view(-1, *[1] * (per[n].dim() - 1)), per[n],
                                          0.0))
        del per
    return [(s + sigma * clip * torch.randn(s.shape, generator=gen, device="cpu").to(s.device))
            / expected_batch for s in summed]


def poisson_batches(indices: torch.Tensor, batch_size: int, gen: torch.Generator):
    """One epoch of DP-SGD's batches: steps_per_epoch batches, each holding every index with
    probability batch_size / len(indices), independently (drawn from `gen`)."""
    q = sample_rate(len(indices), batch_size)
    for _ in range(steps_per_epoch(len(indices), batch_size)):
        keep = torch.rand(len(indices), generator=gen) < q
        yield indices[keep.to(indices.device)]


# --- client level: DP-FedAvg at the server ---------------------------------------------------
class ClippedSum:
    """The round's sum of client updates, each clipped to L2 norm `clip` over all its floating
    tensors (DP-FedAvg's server side); `noisy_mean` adds the Gaussian noise to the sum and
    divides by the expected number of clients."""

    def __init__(self, global_state: dict, clip: float):
        self.start, self.clip = global_state, clip
        self.sums = {k: torch.zeros_like(v, dtype=torch.float32)
                     for k, v in global_state.items() if v.is_floating_point()}
        self.norms: list[float] = []

    def add(self, trained: dict) -> None:
        update = {k: trained[k].float() - self.start[k].float() for k in self.sums}
        norm = float(torch.sqrt(sum(u.pow(2).sum() for u in update.values())))
        self.norms.append(norm)
        # an update that is not finite contributes nothing (norm 0 <= clip): no client can
        # turn the global model into NaN
        scale = min(1.0, self.clip / (norm + 1e-12)) if math.isfinite(norm) else 0.0
        if scale == 0.0:
            return
        for k, u in update.items():
            self.sums[k].add_(u, alpha=scale)

    def noisy_mean(self, sigma: float, expected_clients: float, gen: torch.Generator) -> dict:
        """The new global weights: start + (sum + N(0, (sigma clip)^2)) / expected_clients."""
        out = dict(self.start)
        for k, s in self.sums.items():
            noise = sigma * self.clip * torch.randn(s.shape, generator=gen).to(s.device)
            out[k] = (self.start[k].float() + (s + noise) / expected_clients).to(
                self.start[k].dtype)
        return out
