"""Two tensor helpers the objectives, the JVP strategies and the benchmark share (no neuromf imports: any module of
neuromf/meanflow/ may import it).

  float32_if_half(a)   float16 / bfloat16 -> float32 (reductions, tangents); float32 / float64 stay as they are
  per_sample(s, like)  a per-sample value s (B,) as (B, 1, ..., 1) with like.ndim dims, to broadcast against like
                       (MONAI's ``unsqueeze_right``)
"""

from __future__ import annotations

import torch
from monai.utils import unsqueeze_right
from torch import Tensor

__all__ = ["HALF_DTYPES", "float32_if_half", "per_sample"]

HALF_DTYPES = (torch.float16, torch.bfloat16)


def float32_if_half(a: Tensor) -> Tensor:
    """Half-precision tensors in float32; float32 / float64 (and non-float) tensors unchanged."""
    return a.float() if a.dtype in HALF_DTYPES else a


def per_sample(s: Tensor, like: Tensor) -> Tensor:
    """(B,) -> (B, 1, 1, 1, 1) for a (B, C, D, H, W) `like`: one value per sample, broadcast over the rest."""
    return unsqueeze_right(s, like.ndim)
