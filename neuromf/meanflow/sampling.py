"""One-step and few-step samplers. The v-head is never used.

average (MeanFlow family): z_1 = eps, z_r = z_t - (t - r) u(z_t, r, t) on t_i = 1 - i/nfe.
instantaneous (plain flow matching): Euler on v(z, t) = u(z, t, t): z <- z - (t_i - t_{i+1}) u(z, t_i, t_i); the
network is only ever asked for r = t. Which one a network needs is its objective's `sampler`
(neuromf.meanflow.contract): callers pass it from the objective / checkpoint, never from memory.
"""

from __future__ import annotations

import torch
from torch import Tensor

from neuromf.meanflow.contract import SAMPLERS


def noise_like(shape: tuple[int, ...], seed: int, device=None, dtype=torch.float32) -> Tensor:
    """Seeded standard-normal noise eps (B, C, D, H, W), identical across devices (drawn on the CPU)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=dtype).to(device)


@torch.no_grad()
def sample(model, eps: Tensor, nfe: int = 1, sampler: str = "average") -> Tensor:
    """Euler steps t_i = 1 - i/nfe: z <- z - (t_i - t_{i+1}) u(z, t_{i+1}, t_i) ("average"; nfe = 1 gives
    x = eps - u(eps, 0, 1)) or z <- z - (t_i - t_{i+1}) u(z, t_i, t_i) ("instantaneous").

    eps (B, C, D, H, W) -> x (B, C, D, H, W). Deterministic given eps.
    """
    if nfe < 1:
        raise ValueError(f"nfe={nfe}: must be >= 1")
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler={sampler!r}: expected one of {SAMPLERS}")
    was_training = model.training
    model.eval()
    try:
        z = eps
        times = torch.linspace(1.0, 0.0, nfe + 1, device=eps.device, dtype=eps.dtype)
        for t_i, t_next in zip(times[:-1], times[1:]):
            b = z.shape[0]
            r = t_next if sampler == "average" else t_i
            z = z - (t_i - t_next) * model(z, r.expand(b), t_i.expand(b))
        return z
    finally:
        model.train(was_training)
