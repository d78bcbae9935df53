"""SplitMeanFlow: interval-splitting consistency, a JVP-free target for the average velocity.

  h = t - r,  lambda ~ U(0, 1),  s = (1 - lambda) t + lambda r   (t - s = lambda h,  s - r = (1 - lambda) h)
  identity:  (t - r) u(z_t, r, t) = (s - r) u(z_s, r, s) + (t - s) u(z_t, s, t)
  u2 = u_theta(z_t, s, t),  z_s = z_t - (t - s) u2,  u1 = u_theta(z_s, r, s)        (two forwards, no graph)
  u_tgt = sg((1 - lambda) u1 + lambda u2)  on r < t;   u_tgt = v = eps - x  on r = t (the boundary condition)
  loss_u = mean_b(w d(u_theta(z_t, r, t) - u_tgt))  (with a v-head also |v_hat(z_t | r, t) - v|^p, as iMF shared)
Sampler: average-velocity jumps u(z_t, r, t).

Chosen over SoFlow's flow-matching + consistency mix (github.com/zlab-princeton/SoFlow) because the right side
is an algebraic identity of the average velocity itself: at the true u it holds pointwise (z_s is then the exact
ODE point), so the target is unbiased without a JVP and with no extra schedule to tune; the conditional velocity
enters only through the r = t boundary samples, whose expected gradient vanishes at the true velocity.

"SplitMeanFlow: Interval Splitting Consistency in Few-Step Generative Modeling", arXiv 2507.16884
(no official code was published; this follows the paper's algorithm). Shapes: x, eps, z_t, u (B, C, D, H, W);
r, s, t, h, lambda (B,).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from neuromf.meanflow.contract import Objective
from neuromf.meanflow.tensors import per_sample
from neuromf.meanflow.time_sampling import TimeSampler


@dataclass
class SplitMeanFlowObjective(Objective):
    """u(z_t, r, t) regressed on the stop-gradient split (1 - lambda) u(z_s, r, s) + lambda u(z_t, s, t)."""

    name: ClassVar[str] = "splitmeanflow"
    sampler: ClassVar[str] = "average"

    p: float = 2.0
    norm_p: float = 1.0
    norm_eps: float = 0.01
    channel_weights: list[float] | None = None
    v_loss_weight: float = 1.0
    time_sampler: TimeSampler = field(default_factory=TimeSampler)
    # no JVP is taken: accepted (and unused) so the prediction=... groups, which set them, compose with this loss
    jvp: str = "exact"
    fd_step: float = 1e-4

    def __post_init__(self):
        if isinstance(self.time_sampler, dict):
            self.time_sampler = TimeSampler(**self.time_sampler)

    @classmethod
    def diagnostics(cls, cfg: dict) -> tuple[str, ...]:
        return ("fm_fraction", "loss_u_fm", "loss_u_mf")

    @staticmethod
    def split_target(model, z_t: Tensor, r: Tensor, t: Tensor, lam: Tensor) -> Tensor:
        """(1 - lambda) u(z_s, r, s) + lambda u(z_t, s, t), z_s = z_t - (t - s) u(z_t, s, t); no graph."""
        s = (1 - lam) * t + lam * r
        with torch.no_grad():
            u2 = model(z_t, s, t)
            z_s = z_t - per_sample(t - s, z_t) * u2
            u1 = model(z_s, r, s)
        return per_sample(1 - lam, z_t) * u1 + per_sample(lam, z_t) * u2

    def __call__(
        self,
        model,
        x: Tensor,
        eps: Tensor | None = None,
        r: Tensor | None = None,
        t: Tensor | None = None,
        mask: Tensor | None = None,
        generator: torch.Generator | None = None,
        step: int = 0,
        lam: Tensor | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Returns (loss to backprop, detached diagnostics); `lam` (B,) fixes the split point (default U(0, 1))."""
        b = x.shape[0]
        if eps is None:
            eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        if r is None or t is None:
            r, t = self.time_sampler(b, x.device, generator)
        if lam is None:
            lam = torch.rand(b, generator=generator, device=x.device)
        r, t, lam = r.to(x.dtype), t.to(x.dtype), lam.to(x.dtype)
        fm = t == r
        z_t = (1 - per_sample(t, x)) * x + per_sample(t, x) * eps
        v = eps - x
        u_tgt = torch.where(per_sample(fm, x), v, self.split_target(model, z_t, r, t, lam))
        loss, diag = self.regress_on_target(model, z_t, r, t, v, u_tgt, mask)
        return loss, diag
