"""KID, precision/recall/density/coverage, MS-SSIM diversity and the metric suite: known answers, bad input."""

import logging
import math

import pytest
import torch

from neuromf.evaluation.sample_metrics import kid, msssim_weights, pairwise_msssim, prdc
from neuromf.evaluation.suite import MetricSuite


def _feats(n, seed, shift=0.0, d=16):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed)) + shift


def test_identical_sets():
    x = _feats(20, 0)
    assert kid(x, x.clone()) == pytest.approx(0.0, abs=0.05 * kid(x, _feats(20, 1, shift=3.0)))
    r = prdc(x, x.clone(), k=3)
    assert r["precision"] == r["recall"] == r["coverage"] == 1.0 and r["density"] > 0.9


def test_kid_unbiased_and_growing_with_shift():
    # same distribution, independent samples: unbiased estimator averages to ~0 (biased MMD would be > 0)
    vals = [kid(_feats(30, s), _feats(40, 100 + s)) for s in range(10)]
    far = kid(_feats(30, 0), _feats(40, 1, shift=1.0))
    assert abs(sum(vals) / len(vals)) < 0.05 * far
    assert kid(_feats(30, 0), _feats(40, 1, shift=0.3)) < far < kid(_feats(30, 0), _feats(40, 1, shift=3.0))


def test_disjoint_far_apart_sets():
    r = prdc(_feats(10, 0, shift=100.0), _feats(10, 1), k=3)
    assert r == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_one_repeated_sample_is_a_collapse():
    real = _feats(20, 0)
    fake = real[:1].repeat(10, 1)
    r = prdc(fake, real, k=3)
    assert r["recall"] == 0.0 and r["coverage"] <= 0.1 and r["precision"] == 1.0
    vols = torch.rand(1, 1, 32, 32, 32, generator=torch.Generator().manual_seed(0)).repeat(4, 1, 1, 1, 1)
    assert pairwise_msssim(vols) == pytest.approx(1.0, abs=1e-4)
    other = torch.rand(4, 1, 32, 32, 32, generator=torch.Generator().manual_seed(1))
    assert pairwise_msssim(other) < 0.5


def test_msssim_scales_fit_the_volume(caplog):
    assert len(msssim_weights((32, 32, 32), 5)) == 3 and len(msssim_weights((64, 64, 64), 5)) == 4
    assert sum(msssim_weights((64, 64, 64), 5)) == pytest.approx(1.0)
    assert msssim_weights((8, 8, 8), 5) is None
    vols = torch.rand(3, 1, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    with caplog.at_level(logging.INFO):
        v = pairwise_msssim(vols)
    assert v < 0.5 and sum("uses SSIM" in r.message for r in caplog.records) == 1


def test_too_few_samples_are_skipped_with_a_log_line(caplog):
    suite = MetricSuite(decode=None, knn_k=3)
    with caplog.at_level(logging.INFO):
        out = suite.feature_metrics(_feats(3, 0), _feats(10, 1))
    assert set(out) == {"feat3d_fd", "kid"}  # k-NN metrics left out, not 0
    assert [r.message for r in caplog.records if "skipped" in r.message] == [
        "evaluation: precision, recall, density, coverage skipped "
        "(3 generated / 10 real samples, k-NN with k=3 needs more than k of each)"
    ]
    with pytest.raises(ValueError, match="at least 4"):
        prdc(_feats(3, 0), _feats(10, 1), k=3)


def test_template_correlation_known_answers():
    from neuromf.evaluation.suite import template_correlation

    g = torch.Generator().manual_seed(0)
    template = torch.randn(1, 8, 8, 8, generator=g)
    noise = torch.randn(64, 1, 8, 8, 8, generator=g)
    sets = torch.stack([3 * template + 1, -template, template + noise[0]])
    corr = template_correlation(sets, template)
    assert corr[0] == pytest.approx(1.0) and corr[1] == pytest.approx(-1.0)
    assert corr[2] == pytest.approx(1 / 2**0.5, abs=0.1)  # equal-variance signal + independent noise
    assert template_correlation(noise, template).abs().mean() < 0.1


def test_non_finite_samples_get_the_worst_values_and_a_log_line(caplog):
    from neuromf.evaluation.suite import FEAT3D_METRICS, HIGHER_IS_BETTER, RealReference

    suite = MetricSuite(decode=None, feat3d=object(), knn_k=3)  # the extractor is never reached
    g = torch.Generator().manual_seed(0)
    real = torch.randn(6, 1, 8, 8, 8, generator=g)
    samples = torch.randn(5, 1, 8, 8, 8, generator=g)
    samples[1, 0, 0, 0, 0] = float("nan")
    samples[3] = float("inf")
    with caplog.at_level(logging.WARNING):
        out = suite(samples, RealReference(latents=real, feat3d=_feats(6, 1)))
    assert {m: out[m] for m in FEAT3D_METRICS} == {
        m: (0.0 if m in HIGHER_IS_BETTER else math.inf) for m in FEAT3D_METRICS
    }
    assert [r.message for r in caplog.records] == [
        "evaluation: 2 of 5 samples are not finite: feature metrics set to their worst values (0 / inf)"
    ]
