"""Sliced Wasserstein distance (SWD) between two sets of latents.

Hand-written: no installed library computes SWD on torch tensors (POT is not a dependency).

Definition used here (``p`` = 2 by default)::

    SWD_p(X, Y) = ( mean_k  W_p^p( <theta_k, X>, <theta_k, Y> ) )^(1/p)

with ``theta_k`` unit vectors drawn uniformly on the sphere (normalised Gaussians from a seeded CPU
``torch.Generator``) and ``W_p^p`` the exact 1D Wasserstein distance between the projected empirical
distributions (sorted projections for equal set sizes, exact quantile-function integral otherwise).

Known answer: if ``Y = X + s`` (constant shift), each projection shifts by ``<theta, s>`` and
``W_2^2 = <theta, s>^2``, so ``SWD_2^2 = E[<theta, s>^2] = |s|^2 / d`` in ``d`` dimensions.
"""

from __future__ import annotations

import torch

__all__ = ["patch_sliced_wasserstein", "projection_chunks", "random_patches", "sliced_wasserstein"]

_SALT = 0x5D15C0DE
_CHUNK = 32  # projections generated (and applied) per chunk: bounds memory for large latents (d ~ 4*48^3)


def projection_chunks(dim: int, num_projections: int, seed: int, chunk_size: int = _CHUNK):
    """The unit directions :func:`sliced_wasserstein` uses for these arguments, in chunks (k, dim) of at most
    ``chunk_size``, float32 on CPU, deterministic in ``seed``."""
    # salted: directions drawn from the same stream as seeded noise (e.g. the evaluation noise, seed 0) would
    # align the first direction with the first sample and inflate its projection by sqrt(d)
    gen = torch.Generator(device="cpu").manual_seed(int(seed) ^ _SALT)
    done = 0
    while done < num_projections:
        k = min(chunk_size, num_projections - done)
        theta = torch.randn(k, dim, generator=gen, dtype=torch.float32)
        yield theta / theta.norm(dim=1, keepdim=True)
        done += k


def _flatten(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.dim() < 2:
        raise ValueError(f"{name}: expected a batch (N, ...) of latents, got shape {tuple(x.shape)}")
    if x.shape[0] < 1:
        raise ValueError(f"{name}: empty set")
    return x.reshape(x.shape[0], -1)


def _quantile_grid(n: int, m: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact 1D OT between empirical measures of sizes n and m via their quantile functions.

    Returns (ix, iy, w): on each interval between consecutive breakpoints {i/n} U {j/m} both quantile
    functions are constant (sorted[ix], sorted[iy]); w are the interval lengths (sum to 1).
    """
    u = torch.cat([torch.arange(1, n + 1, dtype=torch.float64) / n, torch.arange(1, m + 1, dtype=torch.float64) / m])
    u = torch.unique(u)  # sorted
    w = torch.diff(u, prepend=torch.zeros(1, dtype=torch.float64))
    mid = u - w / 2
    ix = (mid * n).floor().long().clamp(0, n - 1)
    iy = (mid * m).floor().long().clamp(0, m - 1)
    return ix.to(device), iy.to(device), w.to(device)


@torch.no_grad()
def sliced_wasserstein(
    x: torch.Tensor,
    y: torch.Tensor,
    num_projections: int = 256,
    p: float = 2.0,
    seed: int = 0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Sliced Wasserstein distance between two sets of latents.

    Args:
        x: (N, C, D, H, W) or any (N, ...) — flattened to (N, d).
        y: (M, ...) with the same per-sample size d.
        num_projections: number of random unit directions.
        p: order of the Wasserstein distance (>= 1).
        seed: seed of the CPU generator that draws the directions (same seed -> same directions).
        reduction: "mean" -> scalar ``(mean_k W_p^p)^(1/p)``; "none" -> per-projection ``W_p^p`` (P,).

    Returns:
        scalar tensor (float64) or (P,) tensor (float64).

    Equal sizes use sorted projections (exact 1D optimal transport); unequal sizes integrate the
    difference of the two empirical quantile functions exactly (piecewise constant on {i/N} U {j/M}).
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    if p < 1:
        raise ValueError(f"p must be >= 1, got {p}")
    xf, yf = _flatten(x, "x"), _flatten(y, "y")
    if xf.shape[1] != yf.shape[1]:
        raise ValueError(f"x and y have different sample sizes: {tuple(x.shape[1:])} vs {tuple(y.shape[1:])}")
    dtype = torch.promote_types(torch.promote_types(xf.dtype, yf.dtype), torch.float32)
    xf, yf = xf.to(dtype), yf.to(dtype=dtype, device=xf.device)
    n, m = xf.shape[0], yf.shape[0]
    grid = _quantile_grid(n, m, xf.device) if n != m else None
    per_proj = []
    for theta in projection_chunks(xf.shape[1], num_projections, seed):
        theta = theta.to(device=xf.device, dtype=dtype)
        px, _ = (xf @ theta.T).sort(dim=0)  # (N, k)
        py, _ = (yf @ theta.T).sort(dim=0)  # (M, k)
        if grid is None:
            per_proj.append((px - py).abs().double().pow(p).mean(dim=0))
        else:
            ix, iy, w = grid
            per_proj.append(((px[ix] - py[iy]).abs().double().pow(p) * w[:, None]).sum(dim=0))
    w = torch.cat(per_proj).cpu()
    if reduction == "none":
        return w
    return w.mean().pow(1.0 / p)


def random_patches(volumes: torch.Tensor, patch_size: int, per_volume: int, seed: int = 0) -> torch.Tensor:
    """Seeded random cubic patches of each volume as descriptors: (N, C, D, H, W) -> (N * per_volume, C * patch^3).

    Hand-written (a gather of seeded corners). Local descriptors give SWD many low-dimensional samples that see
    structure; projections of whole volumes onto random directions in ~10^4-10^5 dimensions are close to
    Gaussian for noise and brains alike and barely tell them apart.
    """
    n, c, *spatial = volumes.shape
    if any(patch_size > s for s in spatial):
        raise ValueError(f"patch_size={patch_size} exceeds the volume shape {tuple(spatial)}")
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    corners = [torch.randint(0, s - patch_size + 1, (n, per_volume), generator=gen) for s in spatial]
    offsets = torch.arange(patch_size)
    idx = [(corner[..., None] + offsets).to(volumes.device) for corner in corners]  # 3 x (N, P, patch)
    batch = torch.arange(n, device=volumes.device)[:, None, None, None, None]
    patches = volumes.permute(0, 2, 3, 4, 1)[
        batch, idx[0][:, :, :, None, None], idx[1][:, :, None, :, None], idx[2][:, :, None, None, :]
    ]  # (N, P, patch, patch, patch, C)
    return patches.reshape(n * per_volume, -1)


def patch_sliced_wasserstein(
    x: torch.Tensor,
    y: torch.Tensor,
    patch_size: int = 4,
    per_volume: int = 128,
    num_projections: int = 256,
    p: float = 2.0,
    seed: int = 0,
) -> torch.Tensor:
    """SWD between the sets of local patches of two sets of volumes (the patch-based SWD of Karras et al. 2018,
    single scale, in 3D): (N, C, D, H, W), (M, C, D, H, W) -> scalar. Patch locations are seeded."""
    return sliced_wasserstein(
        random_patches(x, patch_size, per_volume, seed),
        random_patches(y, patch_size, per_volume, seed + 1),
        num_projections=num_projections,
        p=p,
        seed=seed,
    )
