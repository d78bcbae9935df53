"""Plain flow matching on the r = t output of the same network: the multi-step reference level of every arm.

  z_t = (1 - t) x + t eps,  v = eps - x,  Delta = u_theta(z_t, t, t) - v,  loss_fm = mean_b(w d(Delta))
  (with a v-head also Delta_v = v_hat(z_t | t, t) - v from the same pass, as iMF's shared v-loss)
Sampler: instantaneous Euler on v(z, t) = u(z, t, t); the network is never trained at r < t, so its one-step
jump u(eps, 0, 1) is not an average velocity and is never asked for.

Flow matching: Lipman et al., "Flow Matching for Generative Modeling", arXiv 2210.02747; rectified flow: Liu et
al., arXiv 2209.03003 (the z_t = (1 - t) x + t eps path MeanFlow uses; official code github.com/gnobitab/RectifiedFlow).
Shapes: x, eps, z_t, u, v (B, C, D, H, W); t (B,).
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
class FlowMatchingObjective(Objective):
    """|u(z_t, t, t) - v|^p with t from the time sampler's distribution (its pairing and r = t share unused)."""

    name: ClassVar[str] = "fm"
    sampler: ClassVar[str] = "instantaneous"

    p: float = 2.0
    norm_p: float = 0.0
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
    def terms(cls, cfg: dict) -> tuple[str, ...]:
        return ("loss_fm", "loss_v") if cls.use_v_head(cfg) else ("loss_fm",)

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
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Returns (loss to backprop, detached diagnostics). `r` is ignored: flow matching trains r = t only."""
        if eps is None:
            eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        if t is None:
            t = self.time_sampler.draw(x.shape[0], x.device, generator)
        t = t.to(x.dtype)
        z_t = (1 - per_sample(t, x)) * x + per_sample(t, x) * eps
        v = eps - x
        imf = getattr(model, "use_v_head", False)
        u, v_hat = model.u_and_v(z_t, t, t) if imf and self.v_loss_weight > 0 else (model(z_t, t, t), None)
        loss, d, per_ch = self.adaptive_loss(u - v, mask)
        raw = d
        diag: dict[str, Tensor] = {}
        if v_hat is not None:
            loss_v, d_v, _ = self.adaptive_loss(v_hat - v, mask)
            loss, raw = loss + self.v_loss_weight * loss_v, d + self.v_loss_weight * d_v
            diag["loss_v"] = d_v.mean().detach()
        diag.update(loss=loss.detach(), loss_raw=raw.mean().detach(), loss_fm=d.mean().detach())
        for c, value in enumerate(per_ch.mean(0)):
            diag[f"loss_ch{c}"] = value.detach()
        return loss, diag
