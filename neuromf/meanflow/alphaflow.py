"""AlphaFlow: the alpha-curriculum from trajectory flow matching (alpha = 1) to MeanFlow (alpha = 0).

  h = t - r,  dt = alpha h  (dt = 0 on the r = t samples),  v = eps - x
  alpha > 0:  u_tgt = sg[(dt v + (t - dt - r) u_theta(z_t - dt v, r, t - dt)) / h]   (r = t: u_tgt = v)
              one extra forward without a graph, no JVP; the samples with r < t are weighted by alpha
  alpha = 0:  the MeanFlow / iMF target sg(v - h du/dt) (MeanFlowObjective, JVP and v-head as configured)
  alpha(k), k the global training step (k_start, k_end in steps, or with schedule_unit "run" fractions of the run's
  training steps, turned into steps once its length is known): `schedule` "sigmoid" (the official default shape)
      alpha = a0 + (a1 - a0) sigmoid(gamma (k - k_mid) / (k_end - k_start)),  k_mid = (k_start + k_end) / 2,
  or "linear"; alpha = a0 before k_start and a1 after k_end; values below `clamp` snap to 0 and above 1 - clamp
  to 1, so the curriculum ends on the exact MeanFlow target.
  loss = mean_b(w_b d_b), w_b = (alpha on r < t, 1 on r = t) / sg(d_b + norm_eps)^norm_p
For 0 < alpha < 1 the target is biased even at the true u: the Euler point z_t - dt v is not on the ODE path
(the bias vanishes as alpha -> 0), which is why the curriculum anneals alpha to 0.
Sampler: average-velocity jumps u(z_t, r, t).

"AlphaFlow: Understanding and Improving MeanFlow Models" (Snap Research, 2025); official code
github.com/snap-research/alphaflow (src/training/loss.py, AlphaFlowLoss: dt = alpha (t - r), the alpha weight
on the discrete samples, the target clip `clamp_utgt`). Shapes: x, eps, z_t, u (B, C, D, H, W); r, t, h (B,).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from neuromf.meanflow.objective import MeanFlowObjective
from neuromf.meanflow.tensors import per_sample

ALPHA_SCHEDULES = ("sigmoid", "linear")


@dataclass
class AlphaFlowObjective(MeanFlowObjective):
    """MeanFlowObjective whose target follows AlphaFlow's alpha(step); alpha = 0 is MeanFlowObjective itself."""

    name: ClassVar[str] = "alphaflow"
    schedule_fields: ClassVar[tuple[str, ...]] = ("anneal_start", "anneal_end")

    alpha_start: float = 1.0
    alpha_end: float = 0.0
    anneal_start: float = 0
    anneal_end: float = 1000
    schedule_unit: str = "steps"  # "run": anneal_start / anneal_end are fractions of the run's training steps
    schedule: str = "sigmoid"
    gamma: float = 25.0
    clamp: float = 0.005
    target_clip: float | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.schedule not in ALPHA_SCHEDULES:
            raise ValueError(f"loss.schedule={self.schedule!r}: expected one of {ALPHA_SCHEDULES}")
        self.check_schedule_unit()
        if self.anneal_end <= self.anneal_start:
            raise ValueError(f"loss.anneal_end={self.anneal_end} must exceed loss.anneal_start={self.anneal_start}")

    @classmethod
    def diagnostics(cls, cfg: dict) -> tuple[str, ...]:
        return ("alpha", *super().diagnostics(cfg))

    @staticmethod
    def rounded_schedule(steps: dict[str, int]) -> dict[str, int]:
        """A run too short to tell the fractions apart still anneals over one step."""
        return {**steps, "anneal_end": max(steps["anneal_end"], steps["anneal_start"] + 1)}

    def cost_phase(self, step: int) -> str:
        """What a training step at `step` computes (neuromf/training/budget.py): alpha = 1 the target v (no extra
        forward), 0 < alpha < 1 one no-grad forward more, alpha = 0 MeanFlow's JVP."""
        a = self.alpha(step)
        return "alpha=1" if a == 1.0 else "alpha=0" if a == 0.0 else "0<alpha<1"

    def alpha(self, step: int) -> float:
        """alpha at global step `step` (clamped to exactly 0 / 1 near the ends)."""
        self.scheduled_in_steps()
        a0, a1, k0, k1 = self.alpha_start, self.alpha_end, self.anneal_start, self.anneal_end
        if step < k0:
            a = a0
        elif step > k1:
            a = a1
        elif self.schedule == "linear":
            a = a0 + (a1 - a0) * (step - k0) / (k1 - k0)
        else:
            a = a0 + (a1 - a0) / (1 + math.exp(-self.gamma * (step - (k0 + k1) / 2) / (k1 - k0)))
        return 0.0 if a < self.clamp else 1.0 if a > 1 - self.clamp else a

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
        alpha = self.alpha(step)
        if alpha == 0.0:
            loss, diag = super().__call__(model, x, eps, r, t, mask, generator, step)
            diag["alpha"] = torch.zeros((), device=x.device)
            return loss, diag
        if eps is None:
            eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        if r is None or t is None:
            r, t = self.draw_times(x.shape[0], x.device, generator, step)
        r, t = r.to(x.dtype), t.to(x.dtype)
        h = t - r
        fm = h == 0
        z_t = (1 - per_sample(t, x)) * x + per_sample(t, x) * eps
        v = eps - x
        dt = alpha * h
        with torch.no_grad():
            if alpha < 1.0:  # alpha = 1: t - dt - r = 0, the target is v and needs no forward
                u_next = model(z_t - per_sample(dt, x) * v, r, t - dt)
                h_or_1 = per_sample(torch.where(fm, 1, h), x)
                u_tgt = (per_sample(dt, x) * v + per_sample(t - dt - r, x) * u_next) / h_or_1
                u_tgt = torch.where(per_sample(fm, x), v, u_tgt)
            else:
                u_tgt = v
            if self.target_clip is not None:
                u_tgt = u_tgt.clamp(-self.target_clip, self.target_clip)
        self.last_point = None  # no tangent at alpha > 0: the du/dt split is not logged
        weight = torch.where(fm, 1.0, alpha).to(x.dtype)
        loss, diag = self.regress_on_target(model, z_t, r, t, v, u_tgt, mask, weight=weight)
        diag["alpha"] = torch.tensor(alpha, device=x.device)
        return loss, diag
