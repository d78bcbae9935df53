"""Frechet distance (the eigenvalue form against MONAI FIDMetric / compute_frechet_distance): known answers."""

import pytest
import torch
from monai.metrics import FIDMetric

from neuromf.evaluation.frechet import feature_stats, frechet_distance


def monai_fid(fake: torch.Tensor, real: torch.Tensor) -> float:
    """The reference: MONAI's FIDMetric (scipy sqrtm) on two feature sets (N, F) and (M, F), clamped >= 0."""
    return max(float(FIDMetric()(fake, real)), 0.0)


def test_identical_features_give_zero():
    f = torch.randn(200, 8, generator=torch.Generator().manual_seed(0))
    assert monai_fid(f, f.clone()) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(feature_stats(f), feature_stats(f)) == pytest.approx(0.0, abs=1e-6)


def test_two_gaussians_closed_form():
    # N(mu1, diag(s1^2)) vs N(mu2, diag(s2^2)): |mu1-mu2|^2 + sum (s1 - s2)^2 (commuting covariances)
    g = torch.Generator().manual_seed(1)
    n, d = 20000, 4
    mu1, mu2 = torch.tensor([0.0, 1.0, -1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0, -1.0])
    s1, s2 = torch.tensor([1.0, 2.0, 0.5, 1.0]), torch.tensor([1.0, 1.0, 1.5, 3.0])
    a = mu1 + s1 * torch.randn(n, d, generator=g, dtype=torch.float64)
    b = mu2 + s2 * torch.randn(n, d, generator=g, dtype=torch.float64)
    expected = ((mu1 - mu2) ** 2).sum() + ((s1 - s2) ** 2).sum()
    assert monai_fid(a, b) == pytest.approx(expected.item(), rel=0.03)
    assert frechet_distance(feature_stats(a), feature_stats(b)) == pytest.approx(monai_fid(a, b), rel=1e-6)


def test_rank_deficient_covariances_still_finite():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(6, 32, generator=g), torch.randn(6, 32, generator=g) + 3.0
    d = frechet_distance(feature_stats(a), feature_stats(b))
    assert d > 32 * 9 * 0.5  # the mean term alone is ~ 288


def test_bad_shapes():
    with pytest.raises(ValueError, match="at least 2"):
        feature_stats(torch.randn(1, 4))
    with pytest.raises(ValueError, match="feature sizes differ"):
        frechet_distance(feature_stats(torch.randn(5, 3)), feature_stats(torch.randn(5, 4)))


def test_eigenvalue_trace_matches_scipy_sqrtm():
    """The eigenvalue form equals MONAI's compute_frechet_distance (scipy sqrtm), full-rank and rank-deficient."""
    from monai.metrics.fid import compute_frechet_distance

    g = torch.Generator().manual_seed(3)
    for n in (500, 12):  # full-rank 64-D covariances, then rank 11
        a = torch.randn(n, 64, generator=g, dtype=torch.float64) @ torch.randn(64, 64, generator=g, dtype=torch.float64)
        b = 0.5 * torch.randn(n, 64, generator=g, dtype=torch.float64) + 0.3
        sa, sb = feature_stats(a), feature_stats(b)
        expected = float(compute_frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma))
        assert frechet_distance(sa, sb) == pytest.approx(expected, rel=1e-6)
    from neuromf.evaluation.frechet import trace_sqrt_product

    s = torch.diag(torch.tensor([1.0, 4.0, 9.0], dtype=torch.float64))
    assert trace_sqrt_product(s, s) == pytest.approx(14.0)  # tr sqrt(S^2) = tr S
