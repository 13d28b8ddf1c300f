"""Ditto, FedRep and FedPer (methods/personalised.py and one file each): their updates on a
tiny case worked out by hand, the selection of their round, and what leaves a client.

Pitfalls of other implementations named here: a Ditto whose personal step pulls towards the
*new* global model (or towards the client's own FedAvg update) instead of w_t, the model the
round started from; a FedRep whose frozen half still moves through momentum or weight decay
(zeroing its gradients is not freezing it); personalised models selected on the global
validation accuracy, which favours the rounds where they are least personal."""
import torch
import torch.nn.functional as F

from bench.config import parse_overrides, resolve
from bench.methods.evaluation import per_client
from bench.methods.personalised import ClientSelection, frozen
from bench.methods.registry import build_method
from bench.methods.training import train_local
from bench.runner import run_context

TINY = ["rounds=2", "local_epochs=1", "momentum=0", "weight_decay=0", "batch_size=4096",
        "lr=0.1", "lr_schedule=constant"]


def _ctx(method: str, sets=(), split="dirichlet:0.1"):
    config = resolve("digits", method, split, 0, parse_overrides([*TINY, *sets]))
    ctx, _ = run_context(config, torch.device("cpu"))
    return ctx, build_method(method, config.method_params)


def _gradient(model, ctx, k) -> dict:
    """The full-batch gradient of client k's mean cross-entropy at `model` (one batch: its
    order does not change the mean beyond float rounding)."""
    model.zero_grad()
    x, y = next(ctx.data.batches(ctx.clients[k], 4096, torch.Generator().manual_seed(1)))
    F.cross_entropy(model(x), y).backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


def test_ditto_personal_step_is_eq_2_pulled_to_the_rounds_global_model():
    """One full-batch step without momentum: v' = v - lr (grad F_k(v) + lam (v - w_t)), with
    v != w_t; the weights sent are FedAvg's client update from w_t, untouched by v."""
    ctx, ditto = _ctx("ditto", ["ditto.lam=0.5"])
    model = ctx.new_model()
    w_t = {k: v.detach().clone() for k, v in model.state_dict().items()}
    v = {k: t + 0.01 * torch.randn(t.shape, generator=torch.Generator().manual_seed(2))
         for k, t in w_t.items()}
    model.load_state_dict(v)
    grad = _gradient(model, ctx, 0)
    sent, kept, _ = ditto.local_update(model, ctx, 0, 0, 0.1, w_t, v)
    for n in grad:
        expected = v[n] - 0.1 * (grad[n] + 0.5 * (v[n] - w_t[n]))
        assert torch.allclose(kept[n], expected, atol=1e-6), n
    model.load_state_dict(w_t)
    train_local(model, ctx.data, ctx.clients[0], ctx.train, 0.1, 1,
                ctx.streams.torch("batches/r0/c0"))
    assert all(torch.equal(sent[n], t) for n, t in model.state_dict().items())


def test_frozen_parameters_do_not_move_even_with_momentum_and_weight_decay():
    ctx, _ = _ctx("fedrep", ["momentum=0.9", "weight_decay=0.1"])
    model = ctx.new_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    names = {n for n in before if not n.startswith("head.3.")}
    with frozen(model, names):
        train_local(model, ctx.data, ctx.clients[0], ctx.train, 0.1, 2,
                    ctx.streams.torch("x"))
    after = dict(model.named_parameters())
    assert all(torch.equal(after[n], before[n]) for n in names)
    assert not torch.equal(after["head.3.weight"], before["head.3.weight"])
    assert all(p.requires_grad for p in model.parameters())  # unfrozen on the way out


def test_fedrep_trains_the_head_on_a_fixed_body_then_the_body_on_the_new_head():
    """Head phase alone (body_epochs would move the body): the head equals a head-only
    training from (phi_t, h_k); the body it sends is then trained with that head fixed, and
    the head is kept, never sent."""
    ctx, fedrep = _ctx("fedrep", ["fedrep.head_epochs=2", "fedrep.body_epochs=1"])
    model = ctx.new_model()
    w_t = {k: v.detach().clone() for k, v in model.state_dict().items()}
    head = fedrep.init_personal(model, w_t)
    sent, kept, _ = fedrep.local_update(model, ctx, 3, 0, 0.1, w_t, head)
    assert set(kept) == {"head.3.weight", "head.3.bias"} and not set(kept) & set(sent)
    model.load_state_dict(w_t)
    body = {n for n, _ in model.named_parameters() if not n.startswith("head.3.")}
    with frozen(model, body):
        train_local(model, ctx.data, ctx.clients[3], ctx.train, 0.1, 2,
                    ctx.streams.torch("head/r0/c3"))
    assert all(torch.equal(kept[n], model.state_dict()[n]) for n in kept)
    with frozen(model, set(kept)):
        train_local(model, ctx.data, ctx.clients[3], ctx.train, 0.1, 1,
                    ctx.streams.torch("batches/r0/c3"))
    assert all(torch.equal(sent[n], model.state_dict()[n]) for n in sent)


def test_personalised_runs_report_each_clients_own_model_and_send_no_head():
    """Under silos a personal head makes every client's own-distribution accuracy trivial:
    FedPer's clients are all served perfectly by their own models (the per-client protocol
    reads each client's model), while the mean accuracy on the global test set, read by one
    client's model at a time, is about 1 in 10. Uploads carry the body only."""
    ctx, fedper = _ctx("fedper", ["rounds=3"], split="silos")
    result = fedper.run(ctx)
    selected = result.metrics.variants["model"].selected
    counts = [torch.bincount(ctx.data.y_train[idx], minlength=10).tolist()
              for idx in ctx.clients]
    own = per_client(selected, counts)["accuracy"]
    assert own["worst"] == 1.0 and selected["accuracy"] < 0.2
    assert len(selected["clients"]) == 10
    assert result.extra["tuned_on"] == "client_accuracy"  # what bench table --tune reads
    model = ctx.new_model()
    body = sum(t.numel() * t.element_size() for n, t in model.state_dict().items()
               if not n.startswith("head.3."))
    comm = result.communication["model"]
    assert comm.up_bytes == 3 * 10 * body


def test_the_round_is_selected_on_each_clients_own_validation_accuracy():
    """Round 1 has the better global validation accuracy, round 2 the better accuracy of each
    client on its own classes: round 2 is selected."""
    counts = [[10, 0], [0, 10]]

    def entry(global_acc, own):  # own[k]: client k's recall of its own class
        clients = [{"per_class_accuracy": [own[0], 0.0]}, {"per_class_accuracy": [0.0, own[1]]}]
        return {"accuracy": global_acc, "loss": 1.0, "clients": clients}

    sel = ClientSelection(None, counts)
    for step, (g, own) in enumerate([(0.9, (0.6, 0.6)), (0.5, (1.0, 1.0))], start=1):
        val = entry(g, own)
        test = {**val, "balanced_accuracy": g, "auroc": g, "f1_macro": g}
        val = {**val, "balanced_accuracy": g, "auroc": g, "f1_macro": g}
        sel.record(step, val, test)
    assert sel.best["round"] == 2 and sel.last["round"] == 2
