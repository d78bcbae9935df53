"""Flow-matching warm start, then MeanFlow / iMF: the r = t share and a gap weight as schedules in training steps
(or, with schedule_unit "run", in fractions of the run's training steps, turned into steps once its length is known).

  k the global step;  share(k) = 1 for k < fm_steps (pure flow matching: only r = t pairs), then linear from 1 to
  the time sampler's data_proportion over ramp_steps;  after that the MeanFlow / iMF objective unchanged.
  gap weight of loss_u (2511.19065's "small gaps first"): w_gap = (1 - h)^gamma(k), h = t - r, gamma(k) = gap_gamma
  until fm_steps, then linear to 0 over gap_anneal_steps (all gaps weigh alike at the end).
The targets are MeanFlowObjective's; only the time sampling and the weights follow the step.
Sampler: average-velocity jumps u(z_t, r, t).

Warm start: the MeanFlow paper's observation that the r = t share carries training (arXiv 2505.13447, official code
github.com/Gsunshine/meanflow); the schedule `loss=imf_schedule` follows Kim, Go et al., "Understanding,
Accelerating, and Improving MeanFlow Training", arXiv 2511.19065 (code github.com/seahl0119/ImprovedMeanFlow):
learn the instantaneous velocity first, then shift the weight of loss_u from short to long intervals. The
(1 - h)^gamma form of that shift is this project's parameterisation. Shapes: h (B,).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from neuromf.meanflow.objective import MeanFlowObjective


@dataclass
class WarmStartObjective(MeanFlowObjective):
    """MeanFlowObjective with a step-dependent r = t share and gap weight (both off by default)."""

    name: ClassVar[str] = "warm_start"
    schedule_fields: ClassVar[tuple[str, ...]] = ("fm_steps", "ramp_steps", "gap_anneal_steps")

    fm_steps: float = 0
    ramp_steps: float = 0
    gap_gamma: float = 0.0
    gap_anneal_steps: float = 0
    schedule_unit: str = "steps"  # "run": fm_steps, ramp_steps, gap_anneal_steps are fractions of the run's steps

    def __post_init__(self):
        super().__post_init__()
        self.check_schedule_unit()
        for key in ("fm_steps", "ramp_steps", "gap_anneal_steps"):
            if getattr(self, key) < 0:
                raise ValueError(f"loss.{key}={getattr(self, key)}: must be >= 0")
        if self.gap_gamma < 0:
            raise ValueError(f"loss.gap_gamma={self.gap_gamma}: must be >= 0")

    @classmethod
    def diagnostics(cls, cfg: dict) -> tuple[str, ...]:
        return ("fm_share", "gap_gamma", *super().diagnostics(cfg))

    @staticmethod
    def _ramp(step: int, start: int, length: int) -> float:
        """0 before `start`, linear to 1 over `length` steps (a step at `start` when length is 0)."""
        if step < start:
            return 0.0
        return 1.0 if length == 0 else min(1.0, (step - start) / length)

    def share(self, step: int) -> float:
        """The r = t share at `step`."""
        self.scheduled_in_steps()
        dp = self.time_sampler.data_proportion
        return 1.0 + (dp - 1.0) * self._ramp(step, self.fm_steps, self.ramp_steps)

    def gamma(self, step: int) -> float:
        """The gap-weight exponent at `step`."""
        self.scheduled_in_steps()
        return self.gap_gamma * (1.0 - self._ramp(step, self.fm_steps, self.gap_anneal_steps))

    def draw_times(self, b: int, device, generator, step: int) -> tuple[Tensor, Tensor]:
        return self.time_sampler(b, device, generator, data_proportion=self.share(step))

    def gap_weight(self, h: Tensor, step: int) -> Tensor | None:
        gamma = self.gamma(step)
        return None if gamma == 0 else (1 - h).clamp_min(0).pow(gamma)

    def __call__(self, model, x, eps=None, r=None, t=None, mask=None, generator=None, step: int = 0):
        loss, diag = super().__call__(model, x, eps, r, t, mask, generator, step)
        diag["fm_share"] = torch.tensor(self.share(step), device=x.device)
        diag["gap_gamma"] = torch.tensor(self.gamma(step), device=x.device)
        return loss, diag
