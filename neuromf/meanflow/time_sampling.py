"""Sampling of (r, t) with t >= r: logit-normal (or uniform) pairs, r = t with probability `data_proportion`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class TimeSampler:
    """Draws (r, t), each (B,), in [0, 1] with t >= r.

    distribution: "logit_normal" (t = sigmoid(mu + sigma n)) or "uniform". Two draws are ordered so t >= r;
    each sample independently gets r = t (flow matching) with probability data_proportion, so the share holds in
    expectation at every batch size, B = 1 included; MeanFlow used 0.75, iMF 0.5.
    """

    distribution: str = "logit_normal"
    mu: float = -0.4
    sigma: float = 1.0
    data_proportion: float = 0.75

    def __post_init__(self):
        if self.distribution not in ("logit_normal", "uniform"):
            raise ValueError(f"loss.time_sampler.distribution={self.distribution!r}: expected logit_normal or uniform")
        if not 0.0 <= self.data_proportion <= 1.0:
            raise ValueError(f"loss.time_sampler.data_proportion={self.data_proportion}: must lie in [0, 1]")

    def draw(self, n: int, device=None, generator: torch.Generator | None = None) -> Tensor:
        """One time per sample, (n,), from the distribution (no pairing): flow matching's t."""
        return self._draw(n, device, generator)

    def _draw(self, n: int, device, generator) -> Tensor:
        if self.distribution == "uniform":
            return torch.rand(n, generator=generator, device=device)
        return torch.sigmoid(self.mu + self.sigma * torch.randn(n, generator=generator, device=device))

    def __call__(
        self,
        batch_size: int,
        device=None,
        generator: torch.Generator | None = None,
        data_proportion: float | None = None,
    ) -> tuple[Tensor, Tensor]:
        """data_proportion: the share of r = t for this draw (a schedule's current value); default the field's."""
        share = self.data_proportion if data_proportion is None else data_proportion
        a, b = self._draw(batch_size, device, generator), self._draw(batch_size, device, generator)
        t, r = torch.maximum(a, b), torch.minimum(a, b)
        fm = torch.rand(batch_size, generator=generator, device=device) < share  # Bernoulli(share)
        return torch.where(fm, t, r), t
