"""FederatedFactory (arXiv 2603.16370): one-round federated learning with generative modules.

1. Every client trains one unconditional diffusion model per class it holds (at least
   `min_class_samples` images of it), on its own images of that class only, from scratch.
2. One communication round: the modules are sent once (their bytes are counted).
3. Synthesis: `samples_per_class` images of every class, shared among the modules that hold it
   in proportion to their clients' counts; each image from its own seed (synthesis.py).
4. Downstream, both modes on the table's classifier, optimiser and validation-based selection:
   - server: one classifier on the synthetic set only;
   - local: each client trains on its real images plus the synthetic images of the classes it
     has no module for; test predictions are a product of experts (experts.py): "local"
     divides out each client's label prior and applies the target prior once,
     "local_plain" is the paper's p(y | x) = softmax(sum_k log softmax f_k(x)).
   In local mode "real vs synthetic" can reveal the label of a client's own class; server mode
   has no such shortcut, which is why it is the headline and stored beside local mode.
5. Diagnostics, evaluation only (methods/oneshot.py, shared with FedCVAE-Ens): a memorisation
   indicator (methods/memorisation.py), a sample grid, and the sample quality (methods/sample_quality.py): how recognisable the synthetic images are to
   a reference classifier trained on the real ones; a run whose generators learned nothing
   says so at its end.

Exact unlearning: `exclude_clients` leaves a client's modules out, and everything downstream is
recomputed from the remaining ones: the result is bitwise that of a run that never had the
client (tests/test_federatedfactory.py). Modules and samples are cached by content (cache.py).
Steps 2 to 5 are the pipeline of methods/oneshot.py; this module gives the generator (steps 1
and 3) and the local mode.
"""
from __future__ import annotations

import dataclasses
import functools
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..base import Capabilities, Part, RunContext
from ..checkpoints import resumable
from ..oneshot import Generators, OneShotGenerative
from ..results import Communication
from ..communication import tensor_bytes
from ..cost import Cost, Workload
from ..data import resize_uint8
from ..evaluation import Diverged, Selection, classification_metrics, predict_log_proba
from ..rng import Streams
from ..training import fit
from ..provenance import files_fingerprint
from ..privacy import (Audit, audit_classifiers, audit_of, member_pairs, not_audited,
                       null_epochs, null_network, pair_scores, validation_halves)
from .audit import NOISE_LEVELS, module_scores
from .cache import ContentCache, content_key
from .cost import ff_cost
from .experts import ProductOfExperts, label_prior
from .modules import ModulePrivacy, train_module, training_steps
from .private import Plan, plan
from .network import describe, generator_resolution
from .params import PRESETS, FFParams
from .sampler import load_unet, network_evaluations, sample
from ..synthesis import image_seeds, shares


# the settings that determine a cached generator / a cached sample set, per formulation
GENERATOR_FIELDS = ("formulation", "gen_channels", "gen_channels_above_64px",
                    "gen_layers_per_block", "gen_attention_resolutions", "gen_norm_groups",
                    "gen_dropout", "gen_images_seen", "gen_batch_size", "gen_lr", "gen_ema_decay")
SAMPLER_FIELDS = ("formulation", "sampler", "sampler_steps")
FORMULATION_FIELDS = {"ddpm": {"generator": ("train_timesteps",), "sampler": ("train_timesteps",)},
                      "edm": {"generator": ("edm_p_mean", "edm_p_std", "edm_sigma_data"),
                              "sampler": ("edm_sigma_data", "edm_sigma_min", "edm_sigma_max",
                                          "edm_rho")}}
# the modules whose code determines a cached generator / a cached sample set
GENERATOR_CODE = ("network", "schedule", "loss", "modules")
SAMPLER_CODE = ("network", "schedule", "sampler")


@dataclass(frozen=True)
class ModuleWork:
    """What training one module needs, as a part carries it to the worker that trains it:
    client `client`'s images of class `cls` (their indices into the training set) and the
    module's seed."""

    client: int
    cls: int
    indices: tuple[int, ...]
    seed: int


@dataclass(frozen=True)
class ModuleJob:
    """One generative module to train, in the process that trains it."""

    work: ModuleWork
    images: torch.Tensor  # uint8 at the generator's resolution, on the CPU (what the keys hash)
    identity: str  # the work by content: settings, seed, images (no process numerics)
    key: str  # its cache entry: the identity's content and this process's numerics
    privacy: ModulePrivacy | None = None  # DPDM's settings in a DP run (private.py)

    @property
    def client(self) -> int:
        return self.work.client

    @property
    def cls(self) -> int:
        return self.work.cls

    @property
    def part(self) -> Part:
        """Named `module/k{client}/c{class}` and identified by its content, so that runs
        which share a module (a sampler sweep, say) give equal parts and an executor trains
        it once."""
        return Part(f"module/k{self.client}/c{self.cls}", self.identity, self.work)


class FederatedFactory(OneShotGenerative):
    """Its generator: diffusion modules per (client, class) (methods/oneshot.py runs the
    rest), and its local mode downstream."""

    name = "federatedfactory"
    PURPOSE = "ff"
    GENERATOR_PHASE = "modules"
    SERVER_VARIANT = "server"
    # its generators: parts(), do_part()
    # DP at the example level: DPDM for the modules, DP-SGD for local mode's classifiers
    # (private.py)
    capabilities = Capabilities(unlearns=True, parts=True,
                                variants=("server", "local", "local_plain"),
                                dp_levels=("example",))
    Params = FFParams
    PRESETS = PRESETS

    def cost(self, work: Workload) -> Cost:
        """Its generators (one task each), sampling, both downstream modes (cost.py)."""
        return ff_cost(self.params, work)

    def summary(self, channels: int, resolution: int) -> str:
        """The generator and synthesis a run gets at this data shape, in one line."""
        p, g = self.params, describe(self.params, channels, resolution)
        base = g["channels"][0]
        mult = ",".join(str(c // base) for c in g["channels"])
        attn = ",".join(map(str, g["attention_px"])) or "no"
        return (f"{g['formulation']} {base}x[{mult}] at {g['resolution']} px, attention at "
                f"{attn} px, {g['layers_per_block']} blocks per level, dropout {g['dropout']:g}, "
                f"{g['parameters'] / 1e6:.1f}M parameters, {p.gen_images_seen:,} images seen; "
                f"{p.sampler} {p.sampler_steps} steps ({network_evaluations(p)} evaluations), "
                f"{p.samples_per_class:,} images per class")

    # --- parts: pieces of a run that can be done ahead, elsewhere (bench/executors.py) ---
    def parts(self, ctx: RunContext, device_type: str | None = None) -> list[Part]:
        """The run's modules not yet in the cache for training on `device_type` (default: the
        context's). Each is independent of the others; an executor may train them as tasks of
        their own, and the run then finds them cached."""
        cache = ContentCache(ctx.cache_dir)
        if cache.root is None:
            return []
        return [j.part for j in self._module_jobs(ctx, device_type=device_type)
                if not cache.has("modules", j.key)]

    def do_part(self, ctx: RunContext, part: Part) -> None:
        """Train the module `part` carries (from `parts`, listed in any process) into the
        cache, keyed by this process's numerics: only its images are resized and hashed."""
        job = self._job(ctx, part.work, ctx.device.type)
        if job.identity != part.key:
            raise ValueError(f"part {part.name}: its images, settings, code or library versions "
                             f"differ here from where the run was listed (another data root, "
                             f"dataset or suite version on this node?); install the same "
                             f"version and data everywhere")
        with ctx.progress(training_steps(self.params), "generator steps") as bar:
            self._module(job, ContentCache(ctx.cache_dir), ctx, bar)

    def _gen_resolution(self, ctx: RunContext) -> int:
        return generator_resolution(self.params, ctx.data.resolution)

    def _settings(self, kind: str, ctx: RunContext, code: tuple) -> dict:
        """What determines a cached `kind` ("generator" or "sampler") besides its inputs and
        the numerics it is computed with."""
        p = self.params
        fields = (GENERATOR_FIELDS if kind == "generator" else SAMPLER_FIELDS) \
            + FORMULATION_FIELDS[p.formulation][kind]
        return {**{f: getattr(p, f) for f in fields},
                "code": {"code": files_fingerprint(code, Path(__file__).parent)}}

    def _keyed(self, settings: dict, ctx: RunContext, device_type: str) -> dict:
        """`settings` with the numerics of this process on `device_type` (cache entries)."""
        return {**settings, "code": {**settings["code"],
                                     **ctx.numerics.for_device(device_type).cache_key()}}

    def _gen_streams(self, ctx: RunContext) -> Streams:
        p = self.params
        return Streams(p.generator_seed if p.generator_seed >= 0 else ctx.streams.seed)

    def _job(self, ctx: RunContext, work: ModuleWork, device_type: str) -> ModuleJob:
        """The module `work` names, its images resized on the CPU whatever the data's device
        (a part listed from CPU data and the run on a GPU hash the same bytes)."""
        index = torch.tensor(work.indices, dtype=torch.long)
        images = resize_uint8(ctx.data.x_train[index.to(ctx.data.x_train.device)].cpu(),
                              self._gen_resolution(ctx))
        settings = self._settings("generator", ctx, GENERATOR_CODE)
        privacy = None
        if ctx.dp is not None:  # a private module is another module (its own cache entry)
            privacy = ModulePrivacy(ctx.dp.clip, self._plan(ctx).modules[(work.client, work.cls)],
                                    ctx.dp.noise_draws, self._gen_streams(ctx).int_seed(
                                        f"ff/dp/noise/k{work.client}/c{work.cls}"))
            settings = {**settings, "dp": dataclasses.asdict(privacy)}
        identity = content_key({"module": settings, "seed": work.seed}, images)
        key = content_key({"module": self._keyed(settings, ctx, device_type),
                           "seed": work.seed}, images)
        return ModuleJob(work, images, identity, key, privacy)

    def _module_works(self, ctx: RunContext) -> list[ModuleWork]:
        """One per (member client, class it holds at least min_class_samples of)."""
        p, data, streams = self.params, ctx.data, self._gen_streams(ctx)
        works = []
        for k in range(len(ctx.clients)):
            if k in set(p.exclude_clients):
                continue
            labels = data.y_train[ctx.clients[k]]
            for c in range(ctx.n_classes):
                idx = ctx.clients[k][labels == c]
                if len(idx) >= p.min_class_samples:
                    works.append(ModuleWork(k, c, tuple(idx.cpu().tolist()),
                                            streams.int_seed(f"ff/module/k{k}/c{c}")))
        return works

    def _module_jobs(self, ctx: RunContext, device_type: str | None = None) -> list[ModuleJob]:
        return [self._job(ctx, work, device_type or ctx.device.type)
                for work in self._module_works(ctx)]

    def _plan(self, ctx: RunContext) -> Plan:
        """A DP run's noise for every module and local classifier (private.py), from the
        sizes of what they train on: the clients' sizes are public, as in every DP run here."""
        works = self._module_works(ctx)
        modules = tuple(((w.client, w.cls), len(w.indices)) for w in works)
        held = {w.cls for w in works}
        # a local classifier's training set: the client's images and the synthetic images of
        # the classes others hold a module of (samples_per_class each)
        clients = tuple((k, len(ctx.clients[k]) + self.params.samples_per_class
                         * len(held - {w.cls for w in works if w.client == k}))
                        for k in self.members(ctx))
        return _planned(self.params, ctx.dp, modules, clients, ctx.train.batch_size,
                        "local" in self.params.modes)

    def _module(self, job: ModuleJob, cache: ContentCache, ctx: RunContext,
                bar=None) -> tuple[dict, bool]:
        """The module's EMA weights, from the cache or trained on the context's device now
        (then cached), resuming its checkpoint (keyed, like the cache entry, by its content)
        if a killed process left one."""
        state = cache.get("modules", job.key)
        if state is not None:
            if bar is not None:
                bar.update(training_steps(self.params))
            return state, True
        checkpoint = ctx.checkpoint.derive(cache.checkpoint_path("modules", job.key),
                                           {"module": job.key})
        x = job.images.to(ctx.device).float().mul(2 / 255).sub(1)
        state = train_module(self.params, x, job.work.seed, bar, checkpoint, job.privacy)
        cache.put("modules", job.key, state)
        checkpoint.clear()
        return state, False

    def train_generators(self, ctx: RunContext, members: list[int]) -> Generators:
        """Step 1: one module per (member client, class it holds), from the cache or trained
        now (then cached)."""
        p = self.params
        cache = ContentCache(ctx.cache_dir)
        modules: dict[tuple[int, int], tuple[dict, str]] = {}  # (k, c) -> (EMA weights, key)
        holders: dict[int, dict[int, int]] = defaultdict(dict)
        log = []
        jobs = self._module_jobs(ctx)
        with ctx.progress(len(jobs) * training_steps(p), "generator steps") as bar:
            for job in jobs:
                k, c, n = job.client, job.cls, len(job.images)
                state, hit = self._module(job, cache, ctx, bar)
                modules[(k, c)] = (state, job.key)
                holders[c][k] = n
                log.append({"client": k, "class": c, "images": n, "cache": "hit" if hit else
                            "miss", "key": job.key})
        shared = p.generator_seed >= 0
        extra = {"generator": {**describe(p, ctx.data.info.channels, ctx.data.resolution),
                               "network_evaluations_per_image": network_evaluations(p)},
                 "shared_generators": shared,
                 "generator_seed": p.generator_seed if shared else ctx.streams.seed}
        return Generators(modules, holders, log, extra)

    def modes(self) -> tuple[str, ...]:
        return self.params.modes

    def run(self, ctx: RunContext):
        """The one-shot pipeline (methods/oneshot.py); a DP run's record keeps what its plan
        spends (private.py)."""
        result = super().run(ctx)
        return dataclasses.replace(result, dp=self._plan(ctx).spent) if ctx.dp else result

    def audit(self, ctx: RunContext, members: list[int], gens: Generators) -> Audit:
        """Each module attacked with its denoising loss at fixed noise levels: members are its
        client's images of its class, non-members validation images of that class (audit.py);
        the null control attacks the same images (methods/privacy.py)."""
        data, res = ctx.data, self._gen_resolution(ctx)
        rng = ctx.streams.numpy("ff/privacy")
        halves = validation_halves(ctx)
        scores, pairs = [], []
        for (k, c), (state, _) in sorted(gens.models.items()):
            idx = ctx.clients[k][data.y_train[ctx.clients[k]] == c]
            m, n = member_pairs(ctx, idx, halves[0], rng)
            if not len(m):
                continue
            seed = ctx.streams.int_seed(f"ff/privacy/k{k}/c{c}")
            scores.append(tuple(
                module_scores(self.params, state,
                              resize_uint8(x[torch.as_tensor(i, device=ctx.device)].cpu(), res),
                              seed, ctx.device)
                for x, i in ((data.x_train, m), (data.x_val, n))))
            pairs.append((m, n))
        if not scores:
            return not_audited("no module's class has held-out images")
        epochs = null_epochs(ctx, self.params.classifier_epochs)
        null = null_network(ctx, halves[1], epochs)
        return audit_of("denoising loss at fixed noise levels (Matsumoto et al. 2023; "
                        "Carlini et al. 2023)", "each client's generative modules", scores,
                        [pair_scores(ctx, null, m, n) for m, n in pairs],
                        ([m for m, _ in pairs], [n for _, n in pairs]), rng,
                        noise_levels=list(NOISE_LEVELS[self.params.formulation]),
                        null_epochs=epochs)

    def audit_mode(self, ctx: RunContext, mode: str, members: list[int],
                   models: list[torch.nn.Module]) -> Audit | None:
        """Local mode sends each member client's classifier, trained on its real images, to
        the server: the classifiers' audit (the modules' is the run's `shared`)."""
        if mode == "server":
            return None
        return audit_classifiers(ctx, dict(zip(members, models)),
                                 "each client's local classifier (local mode sends it)",
                                 "ff/local", trained_epochs=self.params.classifier_epochs)

    def downstream(self, ctx: RunContext, mode: str, members: list[int], gens: Generators,
                   synth_x, synth_y) -> tuple[dict[str, Selection], list[torch.nn.Module]]:
        if mode == "server":
            return super().downstream(ctx, mode, members, gens, synth_x, synth_y)
        return self._local(ctx, members, gens.holders, synth_x, synth_y)

    # --- downstream ---------------------------------------------------------------------
    def synthesise(self, ctx: RunContext, members: list[int],
                   gens: Generators) -> tuple[torch.Tensor, torch.Tensor]:
        """The class-balanced synthetic set (uint8 images at the table's resolution, labels),
        on the CPU: class c's `samples_per_class` images shared among its holders."""
        p, data, n_classes = self.params, ctx.data, ctx.n_classes
        cache, holders = ContentCache(ctx.cache_dir), gens.holders
        channels, res = data.info.channels, self._gen_resolution(ctx)
        base_seed = self._gen_streams(ctx).int_seed("ff/images")
        samp_key = self._keyed(self._settings("sampler", ctx, SAMPLER_CODE), ctx,
                               ctx.device.type)
        sx, sy = [], []
        share_plan = {c: shares(holders[c], p.samples_per_class) for c in range(n_classes)}
        total = sum(sum(s.values()) for s in share_plan.values())
        with ctx.progress(total, "synthetic images") as bar:
            for c in range(n_classes):
                for k, count in share_plan[c].items():
                    seeds = image_seeds(base_seed, c, k, count)
                    state, module_key = gens.models[(k, c)]
                    key = content_key({"samples": samp_key, "module": module_key,
                                       "seeds": seeds})
                    imgs = cache.get("samples", key)
                    if imgs is None:
                        unet = load_unet(p, state, channels, res, ctx.device)
                        imgs = sample(unet, p, seeds, channels, res, ctx.device)
                        cache.put("samples", key, imgs)
                    sx.append(resize_uint8(imgs, data.resolution))
                    sy.append(torch.full((count,), c, dtype=torch.int64))
                    bar.update(count)
        if not sx:
            return (torch.zeros((0, channels, data.resolution, data.resolution), dtype=torch.uint8),
                    torch.zeros(0, dtype=torch.int64))
        return torch.cat(sx), torch.cat(sy)

    def _local(self, ctx: RunContext, members, holders, synth_x,
               synth_y) -> tuple[dict[str, Selection], list[torch.nn.Module]]:
        """Each client: own real images + synthetic images of the classes it has no module
        for; the ensemble is evaluated after every epoch under two rules (experts.py), the
        prior-corrected product ("local") and the paper's plain one ("local_plain"), each
        with its epoch chosen on validation data."""
        d, n_classes, epochs = ctx.data, ctx.n_classes, self.params.classifier_epochs
        # DP-SGD for each client's classifier in a DP run (private.py)
        sigmas = self._plan(ctx).classifiers if ctx.dp else {}
        val = [ProductOfExperts(len(d.y_val), n_classes) for _ in range(epochs)]
        test = [ProductOfExperts(len(d.y_test), n_classes) for _ in range(epochs)]
        models = []
        finite_epochs = epochs  # the ensemble exists up to the first epoch any client diverged

        # checkpoints after each client: the ensemble's sums so far and the finished models
        def save() -> dict:
            return {"val": val, "test": test, "finite_epochs": finite_epochs,
                    "models": [m.state_dict() for m in models]}

        def load(saved: dict) -> None:
            nonlocal val, test, finite_epochs
            val, test, finite_epochs = saved["val"], saved["test"], saved["finite_epochs"]
            for state in saved["models"]:
                models.append(ctx.new_model())
                models[-1].load_state_dict(state)
            bar.update(len(models) * epochs)

        with ctx.progress(len(members) * epochs, "local classifier epochs") as bar:
            for i in resumable(ctx.checkpoint, "ff/local", len(members), save, load,
                               lambda done: f"client {done} of {len(members)} trained"):
                k = members[i]
                own = {c for c in range(n_classes) if k in holders[c]}
                keep = torch.tensor([int(c) not in own for c in synth_y.tolist()], dtype=torch.bool)
                idx = ctx.clients[k]  # the real images stay on the device
                x = torch.cat([d.x_train[idx], synth_x[keep].to(ctx.device)])
                y = torch.cat([d.y_train[idx], synth_y[keep].to(ctx.device)])
                if ctx.dp and len(y) != self._plan(ctx).spent_sizes[k]:
                    raise RuntimeError(f"client {k}'s local training set has {len(y)} images, "
                                       f"its DP accounting assumed another number")
                prior = label_prior(y, n_classes)
                data = d.with_train(x, y)
                model = ctx.new_model()

                def on_epoch(epoch, stats, model=model, prior=prior):
                    nonlocal finite_epochs
                    pv = predict_log_proba(model, d, d.x_val)
                    pt = predict_log_proba(model, d, d.x_test)
                    if not (np.isfinite(pv).all() and np.isfinite(pt).all()):
                        finite_epochs = min(finite_epochs, epoch - 1)
                        raise Diverged(f"client {k} diverged at epoch {epoch}")
                    val[epoch - 1].add(pv, prior)
                    test[epoch - 1].add(pt, prior)
                    bar.update(1)
                fit(model, data, torch.arange(len(y), device=ctx.device), ctx.train, epochs,
                    ctx.streams, f"ff/local/c{k}", on_epoch,
                    private=(ctx.dp.clip, sigmas[k]) if ctx.dp else None)
                models.append(model)
        # the target prior is over the classes the member clients hold (an unlearned class
        # that nobody holds any more gets 0, not the boost its smoothed expert priors imply)
        pooled = torch.bincount(d.y_train[torch.cat([ctx.clients[k] for k in members])].cpu(),
                                minlength=n_classes).double().numpy()
        target = pooled if self.params.poe_target_prior == "train" else (pooled > 0) * 1.0
        target = target / target.sum()
        rules = {"local": lambda poe: poe.corrected(target), "local_plain": lambda poe: poe.proba()}
        y_val, y_test = d.y_val.cpu().numpy(), d.y_test.cpu().numpy()
        selections = {}
        for name, rule in rules.items():
            sel = selections[name] = Selection(d)
            if finite_epochs < epochs:
                sel.diverged_at = finite_epochs + 1
            for e in range(finite_epochs):
                sel.record(e + 1, classification_metrics(rule(val[e]), y_val, n_classes,
                                                         detail=False),
                           classification_metrics(rule(test[e]), y_test, n_classes))
        return selections, models

    # --- bookkeeping --------------------------------------------------------------------
    def communication(self, ctx: RunContext, members: list[int],
                      gens: Generators) -> dict[str, Communication]:
        """One round, per mode. Up: each client's modules, at `send_dtype`. Server mode, down:
        the classifier to every client. Local mode, down: every other client's modules; up:
        the client's classifier too (for the product of experts)."""
        dtype = getattr(torch, self.params.send_dtype)
        module_bytes: dict[int, int] = defaultdict(int)
        for (k, _), (state, _) in gens.models.items():
            module_bytes[k] += tensor_bytes({n: t.to(dtype) for n, t in state.items()})
        classifier = ctx.classifier_bytes()
        up = sum(module_bytes.values())
        n = len(members)
        local_down = sum(up - module_bytes.get(k, 0) for k in members)
        shared = {"up_bytes_per_client": {str(k): v for k, v in module_bytes.items()},
                  "send_dtype": self.params.send_dtype}
        return {"server": Communication(1, up, classifier * n, **shared),
                "local": Communication(1, up + classifier * n, local_down, **shared)}



@functools.lru_cache(maxsize=16)
def _planned(p: FFParams, dp, modules: tuple, clients: tuple, batch: int, local: bool) -> Plan:
    """`plan` of the given sizes, computed once per process (listing parts, training, the
    local mode and the record all ask for it; the accountant takes a while per mechanism)."""
    return plan(p, dp, dict(modules), dict(clients), batch, local)
