"""The sample-quality diagnostic (methods/sample_quality.py): its Frechet distance on analytic
cases, and its verdict on generators that learned nothing and on generators that learned.

Pitfalls of other implementations named here:
- FID code that takes a general matrix square root of S_a S_b (scipy.linalg.sqrtm) gets complex
  parts and NaNs from the singular covariances of few samples, and must drop or patch them:
  ours is real and finite for rank-deficient covariances by construction;
- a Frechet distance is biased by the number of images: comparing synthetic images (300 per
  class) with real test images (tens per class) at their own counts flatters the larger set,
  so both sides are measured at the smaller of the two counts (a class with fewer synthetic
  than test images included);
- a rule that reads recognisability only misses a collapse to prototypes: class means are
  recognised more often than real images, and teach a classifier nothing about variation, so
  the rule reads within-class diversity too (the planted collapse below).
"""
import numpy as np
import pytest
import scipy.linalg
import torch

from bench.cli import main
from bench.config import parse_overrides, resolve
from bench.methods.base import null_progress
from bench.methods.data import DeviceData
from bench.methods.rng import Streams
from bench.methods.sample_quality import (
    COLLAPSED_BELOW,
    USELESS_BELOW,
    class_frechet,
    frechet,
    frechet_from_moments,
    sample_quality,
    spread,
    verdict,
)
from bench.runner import cached_dataset
from bench.runner import execute

# generators that take two optimiser steps: they emit noise
UNTRAINED = ["federatedfactory.gen_images_seen=128", "federatedfactory.samples_per_class=16",
             "federatedfactory.sampler_steps=3", "federatedfactory.classifier_epochs=2",
             "federatedfactory.modes=server"]
# generators at 1/8 of the cpu preset's training length (server accuracy 91 % on digits silos,
# docs/findings/generator.md), fewer images and steps to keep the test short
TRAINED = ["federatedfactory.gen_images_seen=1600", "federatedfactory.samples_per_class=32",
           "federatedfactory.sampler_steps=7", "federatedfactory.classifier_epochs=1",
           "federatedfactory.modes=server"]


def test_frechet_of_diagonal_gaussians_is_closed_form():
    # N(m1, diag(s1)) vs N(m2, diag(s2)): |m1 - m2|^2 + sum (sqrt s1 - sqrt s2)^2
    m1, m2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    s1, s2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    expected = 1 + 0 + 4 + (1 - 2) ** 2 + (2 - 1) ** 2 + 0
    assert frechet_from_moments(m1, np.diag(s1), m2, np.diag(s2)) == pytest.approx(expected)
    assert frechet_from_moments(m1, np.diag(s1), m1, np.diag(s1)) == pytest.approx(0, abs=1e-12)


def test_frechet_equals_the_sqrtm_formula_for_full_covariances():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    ca, cb = a @ a.T + np.eye(5), b @ b.T + 0.5 * np.eye(5)
    mu_a, mu_b = rng.normal(size=5), rng.normal(size=5)
    cross = scipy.linalg.sqrtm(ca @ cb).real
    expected = np.sum((mu_a - mu_b) ** 2) + np.trace(ca + cb - 2 * cross)
    assert frechet_from_moments(mu_a, ca, mu_b, cb) == pytest.approx(expected, rel=1e-9)


def test_frechet_stays_real_and_finite_with_fewer_samples_than_features():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 32, generator=gen), torch.randn(9, 32, generator=gen) + 1
    d = frechet(a, b)
    assert np.isfinite(d) and d > 0
    assert frechet(a[:1], b) is None  # one image has no covariance


def test_synthetic_and_real_sides_are_measured_at_the_same_size():
    """Synthetic features drawn from the real distribution itself, 8 of them against 60 test
    images: at equal n the ratio sits near 1, as it must for a perfect generator; measured at
    their own counts (8 against 60), the smaller synthetic side looks far worse."""
    gen = torch.Generator().manual_seed(0)
    equal, unequal = [], []
    for _ in range(20):
        train, test, synth = (torch.randn(k, 16, generator=gen) for k in (400, 60, 8))
        d = class_frechet(synth, test, train)
        assert d["n"] == 8
        equal.append(d["frechet"] / d["frechet_real"])
        unequal.append(frechet(synth, train) / frechet(test, train))
    assert 0.75 < np.median(equal) < 1.33, np.median(equal)
    assert np.median(unequal) > 2, np.median(unequal)  # the pitfall, for the record
    more = class_frechet(torch.randn(300, 16, generator=gen), torch.randn(36, 16, generator=gen),
                         torch.randn(400, 16, generator=gen))
    assert more["n"] == 36  # the usual case: the test count


def test_spread_is_the_trace_of_the_covariance():
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [2.0, 4.0]])
    # variances (unbiased, n - 1 = 3): 4/3 and 16/3
    assert spread(x) == pytest.approx(20 / 3)
    assert spread(torch.ones(5, 3)) == 0.0 and spread(torch.ones(1, 3)) is None
    # between the two thresholds: a warning, not useless (FedCVAE-Ens on digits, 0.16-0.18)
    line = verdict({"useless": False, "prototypes": True, "diversity": 0.17, "relative": 1.0})
    assert "near-prototypes" in line and "17%" in line


def _digits_quality(synth_x, synth_y):
    data = DeviceData(cached_dataset("digits", None), 8, torch.device("cpu"))
    real = torch.arange(len(data.y_train))
    return sample_quality(data, real, synth_x, synth_y, Streams(0), "quality", null_progress)


@pytest.mark.slow
def test_a_collapse_to_class_means_is_recognisable_and_flagged():
    """The planted collapse: every synthetic image of class c is the mean of c's real
    training images (30 per class). The reference recognises them at least as well as real
    test images, but they do not vary at all: diversity 0, useless, and the verdict says
    collapsed. Real held-out images as the 'synthetic' set: diversity near 1, not flagged."""
    data = cached_dataset("digits", None)
    means = torch.stack([data.x_train[data.y_train == c].float().mean(0)
                         for c in range(10)]).round().to(torch.uint8)
    labels = torch.arange(10).repeat_interleave(30)
    q = _digits_quality(means[labels], labels)
    assert q["relative"] > 0.9  # recognisable: the old rule would have passed it
    assert q["diversity"] == pytest.approx(0.0, abs=1e-9) and COLLAPSED_BELOW > 0
    assert q["useless"] and "collapsed" in verdict(q)
    real = _digits_quality(data.x_val, data.y_val)
    assert 0.6 < real["diversity"] < 1.6 and not real["useless"] and verdict(real) == ""


def _quality(overrides, cache):
    config = resolve("digits", "federatedfactory", "silos", 0, parse_overrides(overrides))
    record, _ = execute(config, torch.device("cpu"), cache_dir=cache)
    return record.extra["sample_quality"]


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    """The diagnostic of the untrained generators' run, computed once for this module."""
    return _quality(UNTRAINED, tmp_path_factory.mktemp("untrained"))


@pytest.mark.slow
def test_untrained_generators_are_flagged(untrained):
    q = untrained
    assert q["reference"]["test_balanced_accuracy"] > 0.9  # the instrument itself works
    assert q["relative"] < USELESS_BELOW and q["useless"]
    assert set(q["classes"]) == {str(c) for c in range(10)}
    # noise is far from every class in the reference's feature space
    assert q["frechet_ratio"] > 5
    assert "close to chance" in verdict(q)


@pytest.mark.slow
def test_trained_generators_on_digits_are_not_flagged(tmp_path, untrained):
    q = _quality(TRAINED, tmp_path)
    assert q["relative"] > 0.6 and not q["useless"]
    assert verdict(q) == ""
    assert q["frechet_ratio"] < untrained["frechet_ratio"]


@pytest.mark.slow
def test_a_run_with_useless_generators_says_so_at_its_end(tmp_path, capsys):
    out = str(tmp_path / "results")
    args = [x for item in UNTRAINED for x in ("--set", item)]
    assert main(["run", "--methods", "federatedfactory", "--splits", "silos", *args,
                 "--executor", "sequential", "--out", out]) == 0
    captured = capsys.readouterr()
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith("warning: federatedfactory on digits silos seed 0") \
        and "close to chance" in last
    assert "Sample quality" in captured.out
    assert main(["table", "--out", out]) == 0
    assert "Sample quality" in capsys.readouterr().out
    assert main(["report", "--out", out]) == 0
    table = (tmp_path / "results" / "report" / "sample_quality.md").read_text()
    assert "| digits | federatedfactory | silos |" in table and "| 1 of 1 |" in table
    assert "close to chance" in capsys.readouterr().err
