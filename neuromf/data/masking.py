"""Random spatial masks for the training loss (mask_ratio of voxels excluded, same mask for every channel)."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def random_spatial_mask(
    shape: Sequence[int], mask_ratio: float, generator: torch.Generator | None = None, device=None
) -> torch.Tensor | None:
    """shape (B, C, D, H, W) -> mask (B, 1, D, H, W) float with exactly round(mask_ratio * D*H*W) zeros per
    sample (1 = voxel counts in the loss; broadcasts over channels), or None when mask_ratio == 0 (no effect).
    ``device`` must match the generator's device (default CPU)."""
    if len(shape) != 5:
        raise ValueError(f"random_spatial_mask: expected shape (B, C, D, H, W), got {tuple(shape)}")
    mask_ratio = float(mask_ratio)
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    if mask_ratio == 0.0:
        return None
    b, _, d, h, w = (int(s) for s in shape)
    n = d * h * w
    k = int(round(mask_ratio * n))
    # hand-written: exact-count masking (ranks of uniform noise), no library op does this
    scores = torch.rand((b, n), generator=generator, device=device)
    idx = scores.argsort(dim=1)[:, :k]
    mask = torch.ones((b, n), device=scores.device)
    mask.scatter_(1, idx, 0.0)
    return mask.view(b, 1, d, h, w)
