import torch

from bench.config import parse_overrides, resolve
from bench.runner import execute


def _run(method, split, seed, **over):
    sets = [f"{k}={v}" for k, v in {"rounds": 2, "local_epochs": 1, **over}.items()]
    c = resolve("digits", method, split, seed, parse_overrides(sets))
    return execute(c, torch.device("cpu"))[0]


def test_same_config_same_seed_same_numbers():
    for method, split in (("scaffold", "dirichlet:0.1"), ("local_only", "silos")):
        a, b = _run(method, split, 5), _run(method, split, 5)
        assert a.metrics == b.metrics
        assert a.curves == b.curves
        assert a.split == b.split


def test_other_seed_other_numbers():
    a, b = _run("fedavg", "dirichlet:0.1", 0), _run("fedavg", "dirichlet:0.1", 1)
    assert a.split != b.split
    assert a.curves["val_loss"] != b.curves["val_loss"]


def test_partial_participation_and_global_rng_untouched():
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    r = _run("fedavg", "iid", 0, client_fraction=0.3)
    assert torch.equal(torch.rand(3), before)  # the run did not consume the global RNG
    comm = r.communication["model"]
    # 3 of 10 clients per round, 2 rounds: 6 uploads of the model
    assert comm.up_bytes == 6 * comm.per_client_round["up"]
