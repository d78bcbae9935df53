"""KID and precision / recall / density / coverage on small hand-worked examples (exact values), and the bootstrap
intervals of the feature metrics over the generated samples."""

import pytest
import torch

from neuromf.evaluation.bootstrap import feature_intervals
from neuromf.evaluation.sample_metrics import kid, prdc
from neuromf.evaluation.suite import MetricSuite


def _col(*values):
    return torch.tensor(values, dtype=torch.float64)[:, None]  # (N, 1) one-dimensional features


def test_kid_hand_worked_cubic_kernel_unbiased():
    # F = 1, so k(x, y) = (x y / F + 1)^3 = (x y + 1)^3.
    # fake {1, 2}: the one off-diagonal pair k(1, 2) = 3^3 = 27 (counted twice, / (2 * 1)) -> 27
    # real {0, 1, -1}: k(0,1) = 1, k(0,-1) = 1, k(1,-1) = 0 -> 2 (1 + 1 + 0) / (3 * 2) = 2/3
    # cross: x=1: 1, 8, 0; x=2: 1, 27, -1 -> 36 / 6 = 6
    # KID = 27 + 2/3 - 2 * 6 = 47/3
    assert kid(_col(1, 2), _col(0, 1, -1)) == pytest.approx(47 / 3, abs=1e-12)
    # fake {1, 2}, real {0, 1}: 27 + 1 - 2 * (1 + 8 + 1 + 27) / 4 = 9.5
    assert kid(_col(1, 2), _col(0, 1)) == pytest.approx(9.5, abs=1e-12)
    # the unbiased estimator leaves out the diagonal: a set against a copy of itself can be below 0
    assert kid(_col(0, 1), _col(0, 1)) == pytest.approx(1 + 1 - 2 * (1 + 1 + 1 + 8) / 4, abs=1e-12)


def test_prdc_hand_worked_fractional_values():
    # real {0, 1, 3, -5}, k = 1: radii to the nearest other real 1, 1, 2, 5
    # fake {0.5, 0.6, 10}: radii to the nearest other fake 0.1, 0.1, 9.4
    # balls of real 0 and 1 hold 0.5 and 0.6 (4 memberships), none holds 10:
    #   precision 2/3, density 4 / (k M) = 4/3, coverage (reals 0, 1) 2/4
    # recall: reals 1 (|1-10| = 9 < 9.4) and 3 (7 < 9.4) are inside a fake ball, 0 and -5 are not: 2/4
    r = prdc(_col(0.5, 0.6, 10), _col(0, 1, 3, -5), k=1)
    assert r == pytest.approx({"precision": 2 / 3, "recall": 0.5, "density": 4 / 3, "coverage": 0.5}, abs=1e-12)
    # fake {0.5, 2.5, 10}: memberships real 0 <- 0.5, real 1 <- 0.5, real 3 <- 2.5 (|3 - 2.5| < 2): 3 / 3 = 1.0;
    # precision 2/3; coverage 3/4 (not -5); recall: 0, 1 (to 0.5, radius 2), 3 (to 2.5) yes, -5 no: 3/4
    r = prdc(_col(0.5, 2.5, 10), _col(0, 1, 3, -5), k=1)
    assert r == pytest.approx({"precision": 2 / 3, "recall": 0.75, "density": 1.0, "coverage": 0.75}, abs=1e-12)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_density_is_exactly_one_for_the_real_set_itself(k):
    # each real ball (radius: the k-th other real, strict <) holds the sample itself and k - 1 others: k per ball,
    # N k memberships / (k N) = 1 exactly (continuous features: no ties)
    real = torch.randn(40, 8, generator=torch.Generator().manual_seed(k))
    r = prdc(real.clone(), real, k=k)
    assert r["density"] == 1.0 and r["precision"] == r["recall"] == r["coverage"] == 1.0


def _sets(m=24, n=48, d=6, seed=0, shift=0.5):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, d, generator=g) + shift, torch.randn(n, d, generator=g), torch.randn(64, d, generator=g)


def test_intervals_hold_the_estimate_and_are_seeded():
    fake, real, knn = _sets()
    suite = MetricSuite(decode=None, knn_k=3)
    point = suite.feature_metrics(fake, real, knn)
    iv = feature_intervals(fake, real, knn, k=3, resamples=200, seed=0)
    assert set(iv) == set(point) == {"feat3d_fd", "kid", "precision", "recall", "density", "coverage"}
    for m, b in iv.items():
        assert b["ci_lo"] <= b["ci_hi"] and b["se"] > 0, m
        # the percentile interval of a resampled estimate brackets the full-set value (bias of FD aside)
        assert b["ci_lo"] - 2 * b["se"] <= point[m] <= b["ci_hi"] + 2 * b["se"], m
    assert feature_intervals(fake, real, knn, k=3, resamples=200, seed=0) == iv
    assert feature_intervals(fake, real, knn, k=3, resamples=200, seed=1) != iv


def test_intervals_of_one_repeated_sample_are_a_point():
    # every resample of M copies of one sample is the same set: se 0, interval = the value
    _, real, knn = _sets()
    fake = real[:1].repeat(12, 1)
    point = MetricSuite(decode=None, knn_k=3).feature_metrics(fake, real, knn)
    iv = feature_intervals(fake, real, knn, k=3, resamples=50, seed=0)
    for m in ("feat3d_fd", "kid", "precision", "density", "coverage"):
        assert iv[m]["se"] == pytest.approx(0.0, abs=1e-9), m
        assert (iv[m]["ci_lo"], iv[m]["ci_hi"]) == pytest.approx((point[m], point[m]), abs=1e-9), m


def test_intervals_shrink_with_more_samples():
    small = feature_intervals(*_sets(m=8, seed=3), k=3, resamples=200)
    large = feature_intervals(*_sets(m=96, seed=3), k=3, resamples=200)
    for m in ("feat3d_fd", "kid", "precision", "density"):  # (coverage tends to 1 as samples grow)
        assert large[m]["se"] < small[m]["se"], m


def test_knn_reference_set_unsaturates_precision():
    # 4 real samples with k = 3: every ball reaches the farthest other real, and a shifted set looks perfect
    g = torch.Generator().manual_seed(0)
    real_few, real_many = torch.randn(4, 6, generator=g), torch.randn(64, 6, generator=g)
    fake = torch.randn(16, 6, generator=g) + 1.0
    suite = MetricSuite(decode=None, knn_k=3)
    few = suite.feature_metrics(fake, real_few)
    many = suite.feature_metrics(fake, real_few, real_many)
    assert few["precision"] == 1.0 and few["coverage"] == 1.0
    assert 0 < many["precision"] < 1 and 0 < many["coverage"] < 1
    assert many["feat3d_fd"] == few["feat3d_fd"]  # the Frechet distance keeps the validation reference


def test_resampled_frechet_distance_is_the_frechet_distance():
    # the bootstrap's Frechet distance (real root computed once) equals frechet_distance on the resampled set
    from neuromf.evaluation.bootstrap import _fd_kid
    from neuromf.evaluation.frechet import feature_stats, frechet_distance

    fake, real, _ = _sets(d=12)
    fake, real = fake.double(), real.double()
    idx = torch.randint(0, fake.shape[0], (fake.shape[0],), generator=torch.Generator().manual_seed(0))
    fd, k = _fd_kid(fake, real)(idx)
    assert fd == pytest.approx(frechet_distance(feature_stats(fake[idx]), feature_stats(real)), rel=1e-9)
    assert k == pytest.approx(kid(fake[idx], real), rel=1e-9)
