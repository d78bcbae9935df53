"""Bootstrap intervals of the feature metrics over the generated samples (one evaluation, one seed).

The features of the samples (M, F) and of the real sets are computed once; only the metric is resampled:
``scipy.stats.bootstrap`` draws (seeded) resamples of the sample indices, and each metric is recomputed from
precomputed pieces — the real Gaussian (``feat3d_fd``), the kernel matrices (``kid``), the real-to-sample
distances and k-NN radii (``precision``, ``recall``, ``density``, ``coverage``; the radii of the samples stay
those of the full set, as a resample's duplicates would otherwise have a radius of zero). The interval is the
spread of the estimate from the finite sample set, not of the training seed.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy import stats
from torchmetrics.image.kid import poly_kernel

from neuromf.evaluation.frechet import feature_stats

__all__ = ["feature_intervals"]


def _fd_kid(fake: torch.Tensor, real: torch.Tensor):
    """idx (M,) -> (feat3d_fd, kid) of fake[idx] against real (kernel, real statistics and sqrt(S_real)
    precomputed: tr sqrt(S_r S_f) = sum sqrt(eigvalsh(sqrt(S_r) S_f sqrt(S_r))), as ``frechet.trace_sqrt_product``
    with the real covariance's root computed once)."""
    real_stats = feature_stats(real)
    w, v = torch.linalg.eigh((real_stats.sigma + real_stats.sigma.T) / 2)
    root = (v * w.clamp_min(0).sqrt()) @ v.T
    tr_real = float(real_stats.sigma.trace())
    k_xx, k_yy, k_xy = (poly_kernel(a, b, 3, None, 1.0) for a, b in ((fake, fake), (real, real), (fake, real)))
    n = real.shape[0]
    syy = float((k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1)))

    def measure(idx: torch.Tensor) -> list[float]:
        m = idx.numel()
        kxx = k_xx[idx][:, idx]
        sxx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
        kid = float(sxx + syy - 2 * k_xy[idx].mean())
        st = feature_stats(fake[idx])
        m_ = root @ st.sigma @ root
        tr_sqrt = float(torch.linalg.eigvalsh((m_ + m_.T) / 2).clamp_min(0).sqrt().sum())
        fd = float((st.mu - real_stats.mu).pow(2).sum()) + float(st.sigma.trace()) + tr_real - 2.0 * tr_sqrt
        return [max(fd, 0.0), kid]

    return measure


def _prdc(fake: torch.Tensor, real: torch.Tensor, k: int):
    """idx (M,) -> (precision, recall, density, coverage) of fake[idx] against real, full-set radii."""
    r_real = torch.cdist(real, real).kthvalue(k + 1, dim=1).values  # (N,)
    r_fake = torch.cdist(fake, fake).kthvalue(k + 1, dim=1).values  # (M,)
    d = torch.cdist(real, fake)  # (N, M)
    inside_real, inside_fake = d < r_real[:, None], d < r_fake[None, :]
    count = inside_real.double().sum(0)  # (M,) real balls holding sample j
    in_any = inside_real.any(0).double()  # (M,)

    def measure(idx: torch.Tensor) -> list[float]:
        return [
            float(in_any[idx].mean()),
            float(inside_fake[:, idx].any(1).double().mean()),
            float(count[idx].sum() / (k * idx.numel())),
            float(inside_real[:, idx].any(1).double().mean()),
        ]

    return measure


def feature_intervals(
    fake: torch.Tensor,
    real: torch.Tensor,
    knn_real: torch.Tensor | None = None,
    k: int = 3,
    resamples: int = 200,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, dict[str, float]]:
    """Bootstrap standard error and percentile interval of the feature metrics of fake (M, F) against real
    (N, F) (k-NN metrics against knn_real (N', F), default real) -> {metric: {"se", "ci_lo", "ci_hi"}}.

    Only the metrics that can be computed are returned (M, N >= 2 for feat3d_fd / kid; M, N' > k for k-NN)."""
    fake, real = fake.detach().double().cpu(), real.detach().double().cpu()
    knn_real = real if knn_real is None else knn_real.detach().double().cpu()
    m = fake.shape[0]
    parts: list[tuple[tuple[str, ...], object]] = []
    if m >= 2 and real.shape[0] >= 2:
        parts.append((("feat3d_fd", "kid"), _fd_kid(fake, real)))
    if min(m, knn_real.shape[0]) > k:
        parts.append((("precision", "recall", "density", "coverage"), _prdc(fake, knn_real, k)))
    if not parts or resamples < 2:
        return {}
    names = [n for ns, _ in parts for n in ns]

    def statistic(idx: np.ndarray, axis: int = -1) -> np.ndarray:  # idx (batch, M) -> (metrics, batch)
        rows = np.atleast_2d(idx).astype(np.int64)
        out = [[v for _, f in parts for v in f(torch.from_numpy(r))] for r in rows]
        arr = np.asarray(out, dtype=float).T
        return arr if np.ndim(idx) > 1 else arr[:, 0]

    with warnings.catch_warnings():  # a metric constant over the resamples (e.g. precision 1.0) is fine
        warnings.simplefilter("ignore")
        res = stats.bootstrap(
            (np.arange(m),),
            statistic,
            n_resamples=int(resamples),
            confidence_level=confidence,
            method="percentile",
            vectorized=True,
            batch=50,
            rng=np.random.default_rng(seed),
        )
    lo, hi = np.atleast_1d(res.confidence_interval.low), np.atleast_1d(res.confidence_interval.high)
    se = np.atleast_1d(res.standard_error)
    return {n: {"se": float(se[i]), "ci_lo": float(lo[i]), "ci_hi": float(hi[i])} for i, n in enumerate(names)}
