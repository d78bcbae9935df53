"""Frechet distance between feature distributions (MONAI's FIDMetric / compute_frechet_distance).

``FeatureStats`` holds the mean (F,) and covariance (F, F) of a feature set (float64), so real-data
statistics can be cached and reused; the distance itself is MONAI's implementation (scipy sqrtm).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from monai.metrics import FIDMetric
from monai.metrics.fid import compute_frechet_distance

__all__ = ["FeatureStats", "feature_stats", "frechet_distance", "fid_from_features"]


@dataclass
class FeatureStats:
    """Gaussian summary of features: mu (F,), sigma (F, F), both float64 on CPU; n = number of samples."""

    mu: torch.Tensor
    sigma: torch.Tensor
    n: int

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {"mu": self.mu.contiguous(), "sigma": self.sigma.contiguous(), "n": torch.tensor([self.n])}

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor]) -> FeatureStats:
        return cls(mu=t["mu"].double(), sigma=t["sigma"].double(), n=int(t["n"].item()))


def feature_stats(features: torch.Tensor) -> FeatureStats:
    """Mean and (unbiased) covariance of features (N, F) -> FeatureStats; needs N >= 2."""
    if features.dim() != 2:
        raise ValueError(f"features must be (N, F), got {tuple(features.shape)}")
    if features.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {features.shape[0]}")
    f = features.detach().double().cpu()
    return FeatureStats(mu=f.mean(0), sigma=torch.cov(f.T).reshape(f.shape[1], f.shape[1]), n=f.shape[0])


def frechet_distance(a: FeatureStats, b: FeatureStats) -> float:
    """Frechet distance between two Gaussians (MONAI's compute_frechet_distance).

    With few samples the covariances are rank-deficient; when scipy's sqrtm returns a large imaginary
    part, retry with a small ridge (1e-6 x mean variance) on both diagonals.
    """
    if a.mu.shape != b.mu.shape:
        raise ValueError(f"feature sizes differ: {tuple(a.mu.shape)} vs {tuple(b.mu.shape)}")
    try:
        d = compute_frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
    except ValueError:
        eps = 1e-6 * float(torch.cat([a.sigma.diagonal(), b.sigma.diagonal()]).mean().clamp_min(1e-12))
        eye = torch.eye(a.sigma.shape[0], dtype=a.sigma.dtype)
        d = compute_frechet_distance(a.mu, a.sigma + eps * eye, b.mu, b.sigma + eps * eye)
    return max(float(d), 0.0)


def fid_from_features(fake: torch.Tensor, real: torch.Tensor) -> float:
    """Frechet distance between two feature sets (N, F) and (M, F) with MONAI's FIDMetric."""
    return max(float(FIDMetric()(fake.detach().cpu(), real.detach().cpu())), 0.0)
