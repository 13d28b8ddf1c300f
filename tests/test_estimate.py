"""`bench estimate`: counted FLOPs x the protocol's image counts."""
import numpy as np
import pytest

from bench.cli import main
from bench.config import resolve
from bench.estimate import classifier_flops, run_costs, sizes_and_labels
from bench.runner import cached_dataset, client_indices


def test_small_cnn_forward_flops_match_a_hand_count():
    # 2 x multiply-accumulates of conv 1->32 at 8x8, conv 32->64 at 4x4, fc 256->128, 128->10
    macs = 8 * 8 * 32 * 9 + 4 * 4 * 64 * 32 * 9 + 256 * 128 + 128 * 10
    assert classifier_flops("cnn", 1, 10, 8, "group", False) == 2 * macs
    train = classifier_flops("cnn", 1, 10, 8, "group", True)
    assert 2 * 2 * macs < train <= 3 * 2 * macs  # backward: about twice the forward


def test_phases_follow_the_protocol():
    config = resolve("digits", "fedavg", "silos", 0)
    n, labels = sizes_and_labels("digits")
    costs = {c.phase: c for c in run_costs(config)}
    t = config.train
    assert costs["client training"].images == t.rounds * t.local_epochs * n["train"]
    assert costs["evaluation"].images == t.rounds * (n["val"] + n["test"])
    assert costs["client training"].flops == pytest.approx(
        costs["client training"].images * classifier_flops("cnn", 1, 10, 8, "group", True))


def test_federatedfactory_counts_one_generator_per_client_and_class_held():
    silos = {c.phase: c for c in run_costs(resolve("digits", "federatedfactory", "silos", 0))}
    iid = {c.phase: c for c in run_costs(resolve("digits", "federatedfactory", "iid", 0))}
    per_module = 12_800  # the cpu preset's images seen per generator
    assert silos["generator training"].images == 10 * per_module  # 10 clients x 1 class
    # IID: ~12 images per (client, class); the pairs under min_class_samples = 10 get none
    config = resolve("digits", "federatedfactory", "iid", 0)
    dataset = cached_dataset("digits", None)
    held = sum(int((np.bincount(dataset.y_train.numpy()[p], minlength=10) >= 10).sum())
               for p in client_indices(config, dataset))
    assert 50 < held < 100
    assert iid["generator training"].images == held * per_module
    assert silos["sampling"].images == 10 * 300 * 25  # images x DDIM steps


def test_official_sizes_when_the_data_is_absent(tmp_path):
    n, labels = sizes_and_labels("bloodmnist", str(tmp_path))
    assert labels is None and n == {"train": 11959, "val": 1712, "test": 3421}


def test_cli_estimate(capsys):
    assert main(["estimate", "--methods", "fedavg,federatedfactory", "--splits", "silos",
                 "--tflops", "50", "--gpus", "2"]) == 0
    out = capsys.readouterr().out
    assert "generator training" in out and "GPU-hours at 50 TFLOP/s" in out and "on 2 GPUs" in out


def test_cli_estimate_bad_throughput_exits_2(capsys):
    assert main(["estimate", "--tflops", "0"]) == 2
    assert "--tflops must be > 0" in capsys.readouterr().err
