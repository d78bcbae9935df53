"""Set-to-set sample-quality metrics on features, and sample diversity on volumes.

* ``kid`` — Kernel Inception Distance maths (unbiased MMD^2 with the cubic polynomial kernel
  ``(x.y / F + 1)^3``) on precomputed features. The kernel is torchmetrics' ``poly_kernel``; torchmetrics'
  ``KernelInceptionDistance`` only takes images through its Inception network and its ``maximum_mean_discrepancy``
  assumes equal set sizes, so the unequal-size unbiased estimator (no subsets: all pairs) is hand-written here.
* ``prdc`` — precision / recall / density / coverage by k-nearest neighbours (Naeem et al. 2020, "Reliable
  fidelity and diversity metrics for generative models"). Hand-written (no installed library provides it;
  the ``prdc`` package is not a dependency); it follows that package's definitions (strict ``<`` to the
  k-th neighbour radius, self excluded). Coverage near 0 means the samples miss the real modes (collapse).
* ``pairwise_msssim`` — sample diversity: mean MS-SSIM over all pairs of a set of volumes (MONAI's
  ``MultiScaleSSIMMetric``; 1 = identical samples). Scales are chosen to fit the volume size; too small
  volumes fall back to single-scale SSIM (``SSIMMetric``) with one logged line.
"""

from __future__ import annotations

import logging
import math

import torch
from monai.metrics import MultiScaleSSIMMetric, SSIMMetric
from torchmetrics.image.kid import poly_kernel

from neuromf.evaluation.fid25d import _robust_unit_range

__all__ = ["kid", "msssim_weights", "pairwise_msssim", "prdc", "MSSSIM_WEIGHTS"]

log = logging.getLogger(__name__)

MSSSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # MONAI's / Wang et al.'s five scales
_warned: set[tuple] = set()


def _features(x: torch.Tensor, name: str, min_n: int) -> torch.Tensor:
    if x.dim() != 2:
        raise ValueError(f"{name} features must be (N, F), got {tuple(x.shape)}")
    if x.shape[0] < min_n:
        raise ValueError(f"{name}: {x.shape[0]} samples, need at least {min_n}")
    return x.detach().double().cpu()


def kid(
    fake: torch.Tensor, real: torch.Tensor, degree: int = 3, gamma: float | None = None, coef: float = 1.0
) -> float:
    """Unbiased MMD^2 with torchmetrics' polynomial kernel: fake (M, F), real (N, F) -> float (M, N >= 2).

    MMD^2_u = sum_{i!=j} k(x_i, x_j) / (M (M-1)) + sum_{i!=j} k(y_i, y_j) / (N (N-1)) - 2 sum k(x_i, y_j) / (M N).
    Can be slightly negative for close sets (it is unbiased); ~0 for identical distributions.
    """
    x, y = _features(fake, "fake", 2), _features(real, "real", 2)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature sizes differ: {x.shape[1]} vs {y.shape[1]}")
    m, n = x.shape[0], y.shape[0]
    k_xx, k_yy, k_xy = (poly_kernel(a, b, degree, gamma, coef) for a, b in ((x, x), (y, y), (x, y)))
    sxx = (k_xx.sum() - k_xx.diagonal().sum()) / (m * (m - 1))
    syy = (k_yy.sum() - k_yy.diagonal().sum()) / (n * (n - 1))
    return float(sxx + syy - 2 * k_xy.mean())


def prdc(fake: torch.Tensor, real: torch.Tensor, k: int = 3) -> dict[str, float]:
    """Precision, recall, density, coverage of fake (M, F) against real (N, F); needs N > k and M > k.

    r_real[i] / r_fake[j]: distance to the k-th nearest other real / fake sample.
    precision = mean_j [exists i: |f_j - r_i| < r_real[i]];  recall = mean_i [exists j: |r_i - f_j| < r_fake[j]];
    density = sum_{i,j} [|f_j - r_i| < r_real[i]] / (k M);   coverage = mean_i [min_j |r_i - f_j| < r_real[i]].
    """
    x, y = _features(fake, "fake", k + 1), _features(real, "real", k + 1)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature sizes differ: {x.shape[1]} vs {y.shape[1]}")
    r_real = torch.cdist(y, y).kthvalue(k + 1, dim=1).values  # (N,) the 1st value is the sample itself (0)
    r_fake = torch.cdist(x, x).kthvalue(k + 1, dim=1).values  # (M,)
    d = torch.cdist(y, x)  # (N, M) real-to-fake
    inside_real = d < r_real[:, None]  # fake j inside real i's ball
    return {
        "precision": float(inside_real.any(dim=0).double().mean()),
        "recall": float((d < r_fake[None, :]).any(dim=1).double().mean()),
        "density": float(inside_real.double().sum() / (k * x.shape[0])),
        "coverage": float((d.min(dim=1).values < r_real).double().mean()),
    }


def msssim_weights(spatial: tuple[int, ...], kernel_size: int) -> tuple[float, ...] | None:
    """The most MONAI MS-SSIM scales (<= 5, weights renormalised) that fit ``spatial`` with ``kernel_size``.

    A scale count s fits when MONAI's own check (size // (s-1)^2 > kernel_size - 1) passes and the coarsest
    level (size / 2^(s-1)) still holds a kernel. None: not even 2 scales fit (use single-scale SSIM).
    """
    for s in range(len(MSSSIM_WEIGHTS), 1, -1):
        if all(n // max(1, (s - 1) ** 2) > kernel_size - 1 and n // 2 ** (s - 1) >= kernel_size for n in spatial):
            w = MSSSIM_WEIGHTS[:s]
            return tuple(v / sum(w) for v in w)
    return None


@torch.no_grad()
def pairwise_msssim(volumes: torch.Tensor, kernel_size: int = 5, kernel_sigma: float = 1.5) -> float:
    """Mean MS-SSIM over all pairs i < j of volumes (B, 1, X, Y, Z) (B >= 2), each scaled to [0, 1] between its
    0.5/99.5 percentiles. 1 = all samples identical (collapse); lower = more diverse."""
    if volumes.dim() != 5 or volumes.shape[0] < 2:
        raise ValueError(f"need (B >= 2, C, X, Y, Z) volumes, got {tuple(volumes.shape)}")
    v = _robust_unit_range(volumes.detach().float().cpu())
    i, j = torch.triu_indices(v.shape[0], v.shape[0], offset=1)
    spatial = tuple(v.shape[2:])
    weights = msssim_weights(spatial, kernel_size)
    if weights is None:
        if (spatial, kernel_size) not in _warned:
            _warned.add((spatial, kernel_size))
            log.info("volumes %s too small for MS-SSIM with kernel %d: diversity uses SSIM", spatial, kernel_size)
        k = min(kernel_size, *spatial)
        metric = SSIMMetric(
            spatial_dims=3, data_range=1.0, win_size=k - 1 + k % 2, kernel_sigma=kernel_sigma, reduction="none"
        )
    else:
        metric = MultiScaleSSIMMetric(
            spatial_dims=3,
            data_range=1.0,
            kernel_size=kernel_size,
            kernel_sigma=kernel_sigma,
            weights=weights,
            reduction="none",
        )
    vals = torch.cat([metric(v[i[a : a + 16]], v[j[a : a + 16]]).flatten() for a in range(0, len(i), 16)])
    out = float(vals.double().mean())
    return out if math.isfinite(out) else math.nan
