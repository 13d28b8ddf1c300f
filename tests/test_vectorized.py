"""Vectorised client training (torch.func) against the one-client loop, on the CPU."""
import copy

import pytest
import torch

from bench.cli import main
from bench.datasets.registry import load_dataset
from bench.methods.base import TrainConfig
from bench.methods.data import AUGMENTATIONS, DeviceData
from bench.methods.fedprox import ProximalHooks
from bench.methods.models import build_model
from bench.methods.scaffold import ControlVariateHooks
from bench.methods.training import TrainHooks, train_local
from bench.methods.vectorized import train_clients
from helpers import stored_records, tiny_overrides

CFG = TrainConfig(batch_size=32, momentum=0.9, weight_decay=1e-3)
# uneven clients: partial last batches, a merged single-sample tail (65 = 2 x 32 + 1), and
# clients that finish early and are masked out of the longest client's remaining steps
SIZES = (65, 130, 20)


def _data(dtype: torch.dtype) -> DeviceData:
    d = DeviceData(load_dataset("digits"), 8, torch.device("cpu"))
    d.augment = AUGMENTATIONS["cifar"]  # random crops and flips: the draws must line up too
    to_float = d.to_float
    d.to_float = lambda x: to_float(x).to(dtype)
    return d


@pytest.fixture(scope="module")
def data():
    return _data(torch.float32)


def _clients(data):
    order = torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(1))
    starts = [0, *torch.tensor(SIZES).cumsum(0).tolist()]
    return [order[a:b] for a, b in zip(starts, starts[1:])]


def _hooks(kind: str, model, k: int, dtype=torch.float32):
    shapes = [p.shape for p in model.parameters()]
    if kind == "fedavg":
        return TrainHooks()
    if kind == "fedprox":
        g = torch.Generator().manual_seed(10)
        return ProximalHooks(0.1, [_randn(s, g, dtype) for s in shapes])
    g = torch.Generator().manual_seed(20 + k)  # scaffold: a different c_i per client
    c = [_randn(s, torch.Generator().manual_seed(30), dtype) * 0.01 for s in shapes]
    return ControlVariateHooks(c, [_randn(s, g, dtype) * 0.01 for s in shapes])


def _randn(shape, gen, dtype):
    return torch.randn(shape, generator=gen).to(dtype)


F32 = (torch.float32, dict(rtol=1e-4, atol=1e-5))
F64 = (torch.float64, dict(rtol=1e-10, atol=1e-12))


# In float64 the two paths agree to ~1e-14: the same algorithm. In float32 they agree to
# rounding for the CNN; ResNet-18 from scratch at this lr amplifies float32 rounding (1e-6 per
# gradient) to ~1e-2 of an update within five steps, so it is compared in float64, with
# SCAFFOLD's hooks (the most involved), to cover residual blocks and 32-group norms.
@pytest.mark.parametrize("model_name, dtype, tol, kind", [
    *[("cnn", *F32, kind) for kind in ("fedavg", "fedprox", "scaffold")],
    *[("cnn", *F64, kind) for kind in ("fedavg", "fedprox", "scaffold")],
    ("resnet18", *F64, "scaffold"),
])
@pytest.mark.slow
def test_vectorised_equals_loop(model_name, dtype, tol, kind):
    data, lr = _data(dtype), 0.05
    torch.manual_seed(0)
    model = build_model(model_name, 1, 10, 8, "group").to(dtype)
    clients = _clients(data)
    epochs = 2 if model_name == "cnn" else 1
    loop_hooks = [_hooks(kind, model, k, dtype) for k in range(len(clients))]
    loop_params, loop_stats = [], []
    for k, idx in enumerate(clients):
        m = copy.deepcopy(model)
        loop_stats.append(train_local(m, data, idx, CFG, lr, epochs,
                                      torch.Generator().manual_seed(k), loop_hooks[k]))
        loop_params.append([p.detach() for p in m.parameters()])

    vec_hooks = [_hooks(kind, model, k, dtype) for k in range(len(clients))]
    before = [p.detach().clone() for p in model.parameters()]
    stacked, stats = train_clients(model, data, clients, CFG, lr, epochs,
                                   [torch.Generator().manual_seed(k) for k in range(3)],
                                   vec_hooks)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # untouched
    names = [n for n, _ in model.named_parameters()]
    for k in range(len(clients)):
        assert (stats[k].steps, stats[k].samples) == (loop_stats[k].steps, loop_stats[k].samples)
        assert stats[k].mean_loss == pytest.approx(loop_stats[k].mean_loss, rel=1e-4)
        for n, p in zip(names, loop_params[k]):
            torch.testing.assert_close(stacked[n][k], p, **tol,
                                       msg=lambda m, n=n: f"{n}: {m}")
        assert not torch.equal(stacked[names[0]][k], before[0])  # it did train
        if kind == "scaffold":  # the raw-gradient sums behind c_i+ agree as well
            for a, b in zip(vec_hooks[k].grad_sum, loop_hooks[k].grad_sum):
                torch.testing.assert_close(a, b, **tol)
    assert stats[2].steps < stats[1].steps  # the masking was exercised


def test_batch_norm_is_refused_with_a_way_out(data):
    model = build_model("cnn", 1, 10, 8, "batch")
    with pytest.raises(ValueError, match="norm=group"):
        train_clients(model, data, _clients(data), CFG, 0.05, 1,
                      [torch.Generator() for _ in range(3)], [TrainHooks()] * 3)


def test_cli_clients_at_once_matches_loop(tmp_path):
    """Whole runs: the same records within float tolerance, and the setting is recorded."""
    curves = {}
    for n in (1, 4):
        out = tmp_path / str(n)
        assert main(["run", "--methods", "scaffold", "--splits", "dirichlet:0.5", "--seeds", "0",
                     *tiny_overrides(), "--clients-at-once", str(n), "--out", str(out)]) == 0
        (rec,) = stored_records(out)
        assert rec.environment["clients_at_once"] == n
        curves[n] = rec.curves
    assert curves[4]["val_loss"] == pytest.approx(curves[1]["val_loss"], rel=1e-4)
    assert curves[4]["train_loss"] == pytest.approx(curves[1]["train_loss"], rel=1e-4)


def test_cli_client_threads_give_the_bits_of_one_client_at_a_time(tmp_path, capsys):
    """Whole runs (SCAFFOLD: per-client state and hooks; FedProx: the global anchor): N
    clients trained at once in threads give bitwise the records of one at a time at the same
    torch thread count; the plan and the record say so. (The conformance battery asks the
    same of every method that declares independent clients, and fails a planted method
    whose hooks share state: tests/test_conformance.py.)"""
    from bench.conformance import comparable

    records = {}
    for n in (1, 3):
        out = tmp_path / str(n)
        assert main(["run", "--methods", "scaffold,fedprox", "--splits", "dirichlet:0.5",
                     "--seeds", "0", *tiny_overrides(), "--executor", "sequential",
                     "--threads", "1", "--client-threads", str(n), "--out", str(out)]) == 0
        if n > 1:
            assert "3 clients at once in threads" in capsys.readouterr().err
        records[n] = {r.config.method: r for r in stored_records(out)}
    for method in ("scaffold", "fedprox"):
        assert records[3][method].environment["client_threads"] == 3
        assert comparable(records[3][method]) == comparable(records[1][method]), method


def test_client_threads_take_their_cores_from_the_plan(monkeypatch):
    from bench.executors import Plan, settle
    from bench.runner import Execution

    monkeypatch.setattr("bench.executors.available_cores", lambda: 8)
    plan, ex = settle(Plan("joblib"), Execution(device="cpu", client_threads=2))
    assert (plan.workers, ex.threads) == (4, 1)  # 4 runs x 2 clients x 1 thread
    plan, ex = settle(Plan("sequential"), Execution(device="cpu", client_threads=4))
    assert ex.threads == 1
    assert main(["run", "--methods", "fedavg", "--client-threads", "0", "--dry-run"]) == 2
    assert main(["run", "--methods", "fedavg", "--client-threads", "2", "--clients-at-once", "2",
                 "--dry-run"]) == 2


def test_cli_refuses_batch_norm_with_clients_at_once(tmp_path, capsys):
    assert main(["run", "--methods", "fedavg", "--splits", "iid", "--seeds", "0",
                 "--set", "norm=batch", "--clients-at-once", "4", "--out", str(tmp_path)]) == 2
    assert "norm=group" in capsys.readouterr().err
