"""DENSE (Zhang et al., "DENSE: Data-Free One-Shot Federated Learning", NeurIPS 2022, Eq. 3-7).

1. Each client trains the table's classifier f_k on its own data (rounds x local_epochs
   epochs, the passes it makes in FL) and uploads it once. The ensemble is the mean of the
   clients' logits, D(x) = (1 / m) sum_k f_k(x).
2. Data generation: a generator G(z) (DCGAN-style, z ~ N(0, I), `noise_dim`) is trained
   against the ensemble with random target labels y~:
       L_G = CE(D(G(z)), y~) + lambda_bn L_BN + lambda_adv L_adv                     (Eq. 6)
   L_BN = sum over the clients' batch-norm layers of ||mu_l(x^) - mu_l||_2 +
   ||sigma^2_l(x^) - sigma^2_l||_2 (the synthetic batch's statistics against the stored
   running ones, Eq. 4), and L_adv = -KL(D(x^) || S(x^)) masked by omega (Eq. 5): the
   generator seeks images on which the student does not yet follow the ensemble.
   L_BN needs batch-norm layers in the clients' classifiers: with the CPU protocol's GroupNorm
   CNN it is zero and the generator trains without its image prior, so tables name such runs
   "dense (no L_BN)". `classifier_norm=batch` gives DENSE BatchNorm classifiers (teachers and
   student), as its paper used, whatever the table's norm.
   The mask omega: the authors' code (helpers/synthesizers.py) sets omega = 1 where the
   arg-max of ensemble and student *differ* (`adv_mask=disagree`, the default here); the
   data-free distillation code DENSE builds on (Fang et al.'s CMI / DFAD lineage) sets it
   where they *agree* (`adv_mask=agree`, this suite's mask until 2026-11-30). With `disagree`
   the generator widens the disagreement on the images that cross the student's boundary,
   the "boundary support" samples DENSE's transferability term is after, and the student
   is then distilled on them; with `agree` it pushes agreed images towards the boundary. We
   follow the authors' code, which produced their numbers; docs/findings/dense.md measures
   both.
3. Model distillation: the student S (the table's classifier, fresh) minimises
   KL(softmax D(x^) || softmax S(x^)) on generated batches (Eq. 7). Generator and student
   alternate for `epochs` epochs of `g_steps` and `s_steps` steps; the student is evaluated on
   the real validation set after every epoch and the best epoch is reported (validation-based
   selection, as for every method). The paper also replays an image pool of earlier batches;
   here every student step draws fresh images.

Under silos every client's classifier has seen one class and outputs it whatever the input:
the ensemble's logits carry no information about the image, so the generator cannot make
class-specific images and the student learns at most a constant prediction (near chance).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .base import Capabilities, Method, MethodResult, RunContext, timed
from .cost import Cost, Phase, Workload, classifier_training
from .dp import account_clients
from .checkpoints import RngState, resumable
from .privacy import SHARED, audit_classifiers
from .results import MODEL, Communication, Metrics
from .evaluation import Diverged, Selection
from .training import fit


class Generator(nn.Module):
    """z -> image in [-1, 1] at `resolution` (a multiple of 4): DCGAN-style upsampling."""

    def __init__(self, noise_dim: int, channels: int, resolution: int, width: int):
        super().__init__()
        self.width, self.side = width, resolution // 4
        self.fc = nn.Linear(noise_dim, width * self.side * self.side)
        self.body = nn.Sequential(
            nn.BatchNorm2d(width), nn.Upsample(scale_factor=2),
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.LeakyReLU(0.2),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(width, width // 2, 3, padding=1), nn.BatchNorm2d(width // 2),
            nn.LeakyReLU(0.2), nn.Conv2d(width // 2, channels, 3, padding=1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(self.fc(z).view(len(z), self.width, self.side, self.side))


class BatchNormStatistics:
    """Forward hooks on every BatchNorm2d of `models`: after a forward pass, `loss()` is the
    summed distance of the batch's channel statistics to the stored running ones (Eq. 4)."""

    def __init__(self, models: list[nn.Module]):
        self.terms: list[torch.Tensor] = []
        self.handles = [m.register_forward_hook(self._hook) for model in models
                        for m in model.modules() if isinstance(m, nn.BatchNorm2d)]

    def _hook(self, module: nn.BatchNorm2d, inputs, output) -> None:
        x = inputs[0]
        mean = x.mean(dim=(0, 2, 3))
        var = x.var(dim=(0, 2, 3), unbiased=False)
        self.terms.append(torch.linalg.vector_norm(mean - module.running_mean)
                          + torch.linalg.vector_norm(var - module.running_var))

    @property
    def active(self) -> bool:
        return bool(self.handles)

    def loss(self) -> torch.Tensor | float:
        out, self.terms = (sum(self.terms) if self.terms else 0.0), []
        return out


def ensemble_logits(models: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
    return torch.stack([m(x) for m in models]).mean(0)


def kl_divergence(teacher_logits: torch.Tensor, student_logits: torch.Tensor,
                  reduction: str = "batchmean") -> torch.Tensor:
    """KL(softmax(teacher) || softmax(student)); per image with reduction='none'."""
    kl = F.kl_div(F.log_softmax(student_logits, 1), F.log_softmax(teacher_logits, 1),
                  reduction="none", log_target=True).sum(1)
    return kl.mean() if reduction == "batchmean" else kl


def generator_loss(teacher: torch.Tensor, student: torch.Tensor, target: torch.Tensor,
                   bn: torch.Tensor | float, bn_weight: float, adv_weight: float,
                   mask: str = "disagree") -> torch.Tensor:
    """Eq. 6: CE to the target labels + lambda_bn L_BN - lambda_adv KL, the KL masked by
    omega (Eq. 5): where the arg-maxes differ (`disagree`) or agree (`agree`)."""
    same = teacher.argmax(1) == student.argmax(1)
    omega = (~same if mask == "disagree" else same).float()
    adv = -(kl_divergence(teacher, student, reduction="none") * omega).mean()
    return F.cross_entropy(teacher, target) + bn_weight * bn + adv_weight * adv


class Dense(Method):
    name = "dense"
    # DP at the example level: DP-SGD for each client's classifier, the one thing a client
    # sends (methods/dp.py); the generator and the student only read the uploaded classifiers
    # (post-processing)
    capabilities = Capabilities(dp_levels=("example",))

    @dataclass(frozen=True)
    class Params:
        epochs: int = 60  # generator / student alternations
        g_steps: int = 5  # generator steps per epoch
        s_steps: int = 10  # student steps per epoch
        batch_size: int = 128  # synthetic images per step
        noise_dim: int = 100
        gen_width: int = 64
        gen_lr: float = 1e-3  # Adam (betas 0.5, 0.999)
        bn_weight: float = 1.0  # lambda_bn
        adv_weight: float = 1.0  # lambda_adv
        # omega of L_adv: disagree (the authors' code) or agree (Fang et al.'s DFAD / CMI)
        adv_mask: str = "disagree"
        # table: the table's classifier; batch: BatchNorm classifiers, as DENSE's paper (L_BN)
        classifier_norm: str = "table"

        def __post_init__(self):
            if self.adv_mask not in ("disagree", "agree"):
                raise ValueError(f"adv_mask {self.adv_mask!r}: valid choices: disagree, agree")
            if self.classifier_norm not in ("table", "batch"):
                raise ValueError(f"classifier_norm {self.classifier_norm!r}: valid choices: "
                                 f"table, batch")

    def dp_refusal(self, dp) -> str | None:
        if self.params.classifier_norm == "batch":
            return ("dense.classifier_norm=batch with DP: batch norm mixes the images of a "
                    "batch and its running statistics are not privatised; leave "
                    "dense.classifier_norm=table")
        return None

    def cost(self, work: Workload) -> Cost:
        """The clients' local training, then per epoch: generator steps (G, the clients'
        ensemble and the student forward and backward), student steps (the ensemble forward,
        the student trained; the small generator not counted) and one evaluation."""
        p, t = self.params, work.train
        if p.classifier_norm == "batch":
            work = dataclasses.replace(work, train=dataclasses.replace(t, norm="batch"))
        fwd, step, m = work.classifier_flops(False), work.classifier_flops(True), work.n_clients
        clients, evaluation = classifier_training(work, t.rounds * t.local_epochs,
                                                  evaluations=p.epochs)
        return Cost((clients,
                     Phase("generator steps", p.epochs * p.g_steps * p.batch_size * (m + 1),
                           step),
                     Phase("student steps", p.epochs * p.s_steps * p.batch_size, step + m * fwd),
                     evaluation))

    def run(self, ctx: RunContext) -> MethodResult:
        p = self.params
        if p.classifier_norm == "batch":
            ctx = dataclasses.replace(ctx, train=dataclasses.replace(ctx.train, norm="batch"))
        data, cfg = ctx.data, ctx.train
        timings = {}

        # 1. local models, uploaded once
        local_epochs, n = cfg.rounds * cfg.local_epochs, len(ctx.clients)
        spent, sigma = None, {}
        if ctx.dp is not None:  # DP-SGD: each client accounted over its local epochs
            with timed(timings, "dp_accounting"):
                spent, sigma = account_clients(
                    ctx.dp, {k: (len(ctx.clients[k]), local_epochs) for k in range(n)
                             if len(ctx.clients[k])}, cfg.batch_size)
        finished: list[dict] = []  # the clients' trained classifiers, client after client
        with ctx.progress(n * local_epochs, "client epochs") as bar, timed(timings, "clients"):
            def load(saved: dict) -> None:
                finished.extend(saved["teachers"])
                bar.update(len(finished) * local_epochs)

            for k in resumable(ctx.checkpoint, "dense/teachers", n,
                               lambda: {"teachers": finished}, load,
                               lambda done: f"client {done} of {n} trained"):
                model = ctx.new_model()  # the same initialisation for all, as in FL
                fit(model, data, ctx.clients[k], cfg, local_epochs, ctx.streams,
                    f"batches/c{k}", lambda epoch, stats: bar.update(1),
                    private=(ctx.dp.clip, sigma[k]) if ctx.dp and k in sigma else None)
                finished.append(model.state_dict())
        teachers = []
        for weights in finished:
            model = ctx.new_model()
            model.load_state_dict(weights)
            model.eval()
            for q in model.parameters():
                q.requires_grad_(False)
            teachers.append(model)
        finished.clear()  # the teachers hold the weights now (not twice on the device)

        # 2-3. generator and student, alternating
        with ctx.streams.global_torch("dense/generator"):
            gen_net = Generator(p.noise_dim, data.info.channels, data.resolution, p.gen_width)
        gen_net = gen_net.to(ctx.device)
        student = ctx.new_model("dense/student")
        g_opt = torch.optim.Adam(gen_net.parameters(), lr=p.gen_lr, betas=(0.5, 0.999))
        s_opt = torch.optim.SGD(student.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
        bn = BatchNormStatistics(teachers)
        noise = ctx.streams.torch("dense/noise")
        sel = Selection(data)

        def draw():
            z = torch.randn(p.batch_size, p.noise_dim, generator=noise).to(ctx.device)
            y = torch.randint(ctx.n_classes, (p.batch_size,), generator=noise).to(ctx.device)
            return z, y

        def save() -> dict:  # after an epoch: both networks, both optimisers, the noise
            return {"generator": gen_net.state_dict(), "student": student.state_dict(),
                    "g_opt": g_opt.state_dict(), "s_opt": s_opt.state_dict(),
                    "noise": RngState(noise.get_state()), "selection": sel.state()}

        def load(saved: dict) -> None:
            gen_net.load_state_dict(saved["generator"])
            student.load_state_dict(saved["student"])
            g_opt.load_state_dict(saved["g_opt"])
            s_opt.load_state_dict(saved["s_opt"])
            noise.set_state(saved["noise"].tensor)
            sel.restore(saved["selection"])

        with ctx.progress(p.epochs, "generator / student epochs") as bar, \
                timed(timings, "distillation"):
            for epoch in resumable(ctx.checkpoint, "dense/distillation", p.epochs, save, load,
                                   lambda done: f"epoch {done} of {p.epochs}", bar):
                lr = cfg.lr_at(epoch, p.epochs)
                for group in s_opt.param_groups:
                    group["lr"] = lr
                student.eval()  # the student's statistics stay fixed while G adapts
                gen_net.train()
                for _ in range(p.g_steps):
                    z, y = draw()
                    x = gen_net(z)
                    teacher = ensemble_logits(teachers, x)
                    loss = generator_loss(teacher, student(x), y, bn.loss(), p.bn_weight,
                                          p.adv_weight, p.adv_mask)
                    g_opt.zero_grad(set_to_none=True)
                    loss.backward()
                    g_opt.step()
                student.train()
                gen_net.eval()
                losses = []
                for _ in range(p.s_steps):
                    z, _ = draw()
                    with torch.no_grad():
                        x = gen_net(z)
                        teacher = ensemble_logits(teachers, x)
                        bn.loss()  # the statistics of a student step are not used
                    loss = kl_divergence(teacher, student(x))
                    s_opt.zero_grad(set_to_none=True)
                    loss.backward()
                    s_opt.step()
                    losses.append(float(loss.detach()))
                try:
                    sel.observe(student, epoch + 1, bar, train_loss=sum(losses) / len(losses))
                except Diverged:
                    break

        with torch.no_grad():  # what distillation can at best reach: the ensemble itself
            pred = torch.cat([ensemble_logits(teachers, data.to_float(x)).argmax(1)
                              for x in torch.split(data.x_test, 1024)])
        ensemble_accuracy = float((pred == data.y_test).float().mean())
        with timed(timings, "privacy"):  # what each client uploads: its own classifier
            privacy = audit_classifiers(ctx, dict(enumerate(teachers)),
                                        "each client's uploaded classifier", "dense")
        classifier = ctx.classifier_bytes()
        comm = Communication(1, classifier * len(teachers), classifier * len(teachers),
                             note="each client's classifier up once; the student down to "
                                  "every client")
        return MethodResult(Metrics.single(sel.evaluation()), sel.curves, {MODEL: comm}, timings,
                            extra={"batch_norm_term": bn.active,
                                   "ensemble_test_accuracy": ensemble_accuracy,
                                   # tables name the run by it (bench/report/tables.py)
                                   "qualifier": None if bn.active else "no L_BN"},
                            audit={SHARED: privacy}, dp=spent)
