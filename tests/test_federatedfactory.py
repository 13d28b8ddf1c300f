"""FederatedFactory: its parts, its determinism, and exact unlearning, on tiny settings."""
import json

import numpy as np
import pytest
import torch

from bench.cli import main
from bench.config import parse_overrides, resolve
from bench.methods.federatedfactory.network import build_unet
from bench.methods.federatedfactory.params import PRESETS, FFParams
from bench.methods.federatedfactory.sampler import load_unet, sample
from bench.methods.federatedfactory.modules import train_module
from bench.methods.federatedfactory.synthesis import image_seeds, shares
from bench.methods.models import count_parameters
from bench.runner import execute

TINY = ["federatedfactory.gen_images_seen=128", "federatedfactory.samples_per_class=16",
        "federatedfactory.sampler_steps=3", "federatedfactory.classifier_epochs=2"]
TINY_CLI = [x for item in TINY for x in ("--set", item)]


def _config(split="silos", extra=(), seed=0):
    return resolve("digits", "federatedfactory", split, seed, parse_overrides([*TINY, *extra]))


def test_generator_parameter_counts_pinned():
    assert count_parameters(build_unet(FFParams(), 1, 8)) == 651_041
    paper = FFParams(**PRESETS["paper"])
    n = count_parameters(build_unet(paper, 3, 32))
    assert n == 49_062_787  # "about 50M parameters at 32 px" (guide, section 2)


def test_shares_are_proportional_and_exact():
    assert shares({0: 30, 1: 10}, 100) == {0: 75, 1: 25}
    assert shares({2: 1, 5: 1, 7: 1}, 10) == {2: 4, 5: 3, 7: 3}  # remainder to the lowest id
    assert shares({}, 10) == {}
    assert sum(shares({0: 7, 1: 13, 2: 1}, 301).values()) == 301


def test_image_seeds_do_not_depend_on_count():
    assert image_seeds(1, 3, 4, 10)[:5] == image_seeds(1, 3, 4, 5)
    assert image_seeds(1, 3, 4, 5) != image_seeds(1, 3, 5, 5)  # another module, other seeds


def test_each_image_has_its_own_seed_whatever_the_batch():
    p = FFParams(gen_images_seen=128, sampler_steps=4)
    state = train_module(p, torch.rand(20, 1, 8, 8) * 2 - 1, seed=0)
    unet = load_unet(p, state, 1, 8, "cpu")
    seeds = list(range(100, 112))
    whole = sample(unet, FFParams(sampler_steps=4, sample_batch_size=12), seeds, 1, 8, "cpu")
    small = sample(unet, FFParams(sampler_steps=4, sample_batch_size=5), seeds, 1, 8, "cpu")
    prefix = sample(unet, FFParams(sampler_steps=4, sample_batch_size=12), seeds[:4], 1, 8, "cpu")
    # batching changes nothing but float rounding: at most one grey level
    assert (whole.int() - small.int()).abs().max() <= 1
    assert (whole[:4].int() - prefix.int()).abs().max() <= 1
    assert not torch.equal(whole[0], whole[1])


@pytest.mark.parametrize("sampler", ["ddim", "dpmsolver++", "heun"])
def test_samplers_give_images_in_range(sampler):
    p = FFParams(gen_images_seen=64, sampler=sampler, sampler_steps=3)
    unet = load_unet(p, train_module(p, torch.rand(8, 1, 8, 8) * 2 - 1, seed=1), 1, 8, "cpu")
    imgs = sample(unet, p, [1, 2, 3], 1, 8, "cpu")
    assert imgs.dtype == torch.uint8 and imgs.shape == (3, 1, 8, 8)


def test_module_training_is_deterministic():
    p = FFParams(gen_images_seen=128)
    x = torch.rand(16, 1, 8, 8) * 2 - 1
    a, b = train_module(p, x, seed=3), train_module(p, x, seed=3)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_run_records_both_modes_bytes_and_diagnostics(tmp_path):
    record, artifacts = execute(_config(), torch.device("cpu"), cache_dir=tmp_path)
    m = record["metrics"]
    assert set(m["variants"]) == {"server", "local"}
    assert m["selected"] == m["variants"]["server"]["selected"]
    extra = record["extra"]
    assert extra["synthetic_per_class"] == [16] * 10
    assert len(extra["modules"]) == 10 and {e["cache"] for e in extra["modules"]} == {"miss"}
    assert set(extra["memorisation"]) == {str(c) for c in range(10)}
    comm = record["communication"]
    assert comm["rounds"] == 1
    assert comm["total_up_bytes"] == 10 * 651_041 * 4  # ten modules at float32
    for phase in ("modules", "sampling", "classifier_server", "classifier_local"):
        assert record["timings"][phase] > 0
    assert artifacts["samples"].dtype == np.uint8 and artifacts["samples"].ndim == 2
    again, _ = execute(_config(), torch.device("cpu"), cache_dir=tmp_path)
    assert {e["cache"] for e in again["extra"]["modules"]} == {"hit"}
    assert again["metrics"] == record["metrics"]  # cached modules change nothing


def test_unlearning_is_bitwise_exact(tmp_path, capsys):
    """Forgetting client 3 through the CLI gives the classifiers, bit for bit, of a run that
    never had client 3 and trained everything from scratch (no cache)."""
    out = tmp_path / "results"
    assert main(["run", "--methods", "federatedfactory", "--splits", "silos", "--out", str(out),
                 *TINY_CLI]) == 0
    run_id = _config().run_id
    capsys.readouterr()
    assert main(["unlearn", "--run", run_id[:8], "--clients", "3", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "3 (forgotten)" in printed
    forgot = _config(extra=["federatedfactory.exclude_clients=3"])
    after = json.loads((out / "runs/digits/federatedfactory" / f"{forgot.run_id}.json").read_text())
    assert {e["cache"] for e in after["extra"]["modules"]} == {"hit"}  # nothing retrained
    assert all(e["client"] != 3 for e in after["extra"]["modules"])
    assert after["extra"]["synthetic_per_class"][3] == 0
    never, _ = execute(forgot, torch.device("cpu"), cache_dir=tmp_path / "fresh-cache")
    assert {e["cache"] for e in never["extra"]["modules"]} == {"miss"}
    assert never["extra"]["classifier_sha256"] == after["extra"]["classifier_sha256"]
    assert never["metrics"] == after["metrics"]
    u = after["unlearning"]
    assert u["forgotten_classes"] == [3]
    for mode in ("server", "local"):
        m = u["modes"][mode]
        assert m["per_class_after"][3] <= m["per_class_before"][3]


def test_unlearn_rejects_bad_input(tmp_path, capsys):
    assert main(["unlearn", "--run", "ffff", "--clients", "1", "--out", str(tmp_path)]) == 2
    assert "no stored run with id 'ffff'" in capsys.readouterr().err


def test_works_under_dirichlet_and_iid(tmp_path):
    for split in ("dirichlet:0.5", "iid"):
        record, _ = execute(_config(split, ["n_clients=3"]), torch.device("cpu"),
                            cache_dir=tmp_path)
        assert sum(record["extra"]["synthetic_per_class"]) == 160
        assert record["metrics"]["variants"]["local"]["selected"]["accuracy"] is not None
