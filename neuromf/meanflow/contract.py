"""The objective contract: what every training objective declares, so the rest of the code reads it from there.

An objective (one class per file under neuromf/meanflow/, selected with `loss=<name>`) is called as
`objective(model, x, eps=None, r=None, t=None, mask=None, generator=None, step=0) -> (loss, diagnostics)` and
declares, as class attributes and class methods that work from a resolved run config alone (no network built):

  name         the `loss=` choice it is the objective of
  sampler      "average": jumps z_r = z_t - (t - r) u(z_t, r, t) (MeanFlow family), or "instantaneous": Euler on
               v(z, t) = u(z, t, t) (plain flow matching; its network is never trained at r < t)
  terms(cfg)        the named loss terms, each logged as train/<term> and val/<term> (the first is the headline
                    term of the progress lines)
  diagnostics(cfg)  the other train/<key> it logs (through the diagnostics callback)
  quantity(cfg, term)  what a term measures, as a string: two arms' values of a term are comparable only where
                    these strings are equal (the report compares a term across arms on that condition)
  schedule_fields   the fields that are points of a training schedule (AlphaFlow's anneal, the warm start's
                    phases); with the field `schedule_unit: run` they are fractions of the run's training steps,
                    turned into steps by `for_run_length(total_steps)` once the run's length is known (the budget
                    of an equal-compute arm, or trainer.max_steps / max_epochs), so a schedule always completes
                    within its run whatever number of steps the arm gets

Shapes: x, eps (B, C, D, H, W); r, t (B,).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import ClassVar

import torch
from torch import Tensor

from neuromf.meanflow.tensors import float32_if_half

SAMPLERS = ("average", "instantaneous")
JVP_PARTS = ("jvp_t_norm", "jvp_z_norm")  # logged by the diagnostics callback where an objective keeps last_point


def dotted_get(cfg: dict, dotted: str, default=None):
    """``cfg["a"]["b"]`` for ``"a.b"`` in a plain (resolved) config dict; `default` where a part is missing."""
    for part in dotted.split("."):
        if not isinstance(cfg, dict) or part not in cfg:
            return default
        cfg = cfg[part]
    return cfg


def per_channel_distance(delta: Tensor, p: float, mask: Tensor | None = None) -> Tensor:
    """Per-sample, per-channel mean of |delta|^p over voxels (masked mean when `mask` (B,1,...) is given): (B, C)."""
    err = float32_if_half(delta).abs().pow(p)
    if mask is None:
        return err.flatten(2).mean(-1)
    mask = mask.to(err.dtype).expand_as(err)
    return (err * mask).flatten(2).sum(-1) / mask.flatten(2).sum(-1).clamp_min(1.0)


class Objective:
    """Base of every objective: the contract (class attributes / class methods) and the adaptively weighted
    distance d = sum_c lambda_c mean_voxels(|Delta_c|^p) / sum_c lambda_c, w = 1 / sg(d + norm_eps)^norm_p.

    Subclasses are dataclasses with the fields p, norm_p, norm_eps, channel_weights.
    """

    name: ClassVar[str] = ""
    sampler: ClassVar[str] = "average"
    schedule_fields: ClassVar[tuple[str, ...]] = ()
    SCHEDULE_UNITS: ClassVar[tuple[str, ...]] = ("steps", "run")

    def check_schedule_unit(self) -> None:
        """Validate `schedule_unit` and, for `run`, that every schedule field is a fraction in [0, 1]."""
        unit = getattr(self, "schedule_unit", "steps")
        if unit not in self.SCHEDULE_UNITS:
            raise ValueError(f"loss.schedule_unit={unit!r}: expected one of {self.SCHEDULE_UNITS}")
        if unit == "run":
            for key in self.schedule_fields:
                if not 0.0 <= float(getattr(self, key)) <= 1.0:
                    raise ValueError(
                        f"loss.{key}={getattr(self, key)}: with loss.schedule_unit=run a schedule point is a "
                        "fraction of the run's training steps, in [0, 1]"
                    )

    def scheduled_in_steps(self) -> None:
        """Raise when the schedule is still in fractions of the run (for_run_length was not called)."""
        if getattr(self, "schedule_unit", "steps") == "run":
            raise RuntimeError(
                f"{type(self).__name__}: the schedule is in fractions of the run (loss.schedule_unit=run); "
                "call for_run_length(total_steps) once the run's length is known"
            )

    def for_run_length(self, total_steps: int) -> Objective:
        """This objective with its schedule in training steps: each schedule field (a fraction of the run when
        `schedule_unit` is `run`) times `total_steps`, rounded; unchanged when the schedule is already in steps."""
        if getattr(self, "schedule_unit", "steps") != "run":
            return self
        if not (isinstance(total_steps, int) or float(total_steps).is_integer()) or not 0 < total_steps < math.inf:
            raise ValueError(
                f"loss.schedule_unit=run needs a finite run length (got {total_steps} training steps): set "
                "trainer.max_steps or trainer.max_epochs, or give the schedule in steps (loss.schedule_unit=steps)"
            )
        steps = {k: int(round(float(getattr(self, k)) * int(total_steps))) for k in self.schedule_fields}
        return dataclasses.replace(self, schedule_unit="steps", **self.rounded_schedule(steps))

    @staticmethod
    def rounded_schedule(steps: dict[str, int]) -> dict[str, int]:
        """Schedule points in steps after rounding (a subclass keeps them consistent, e.g. an interval >= 1 step)."""
        return steps

    def schedule_points(self) -> dict[str, int]:
        """The schedule points in steps (after for_run_length), for the run's records."""
        return {k: getattr(self, k) for k in self.schedule_fields}

    @staticmethod
    def use_v_head(cfg: dict) -> bool:
        return bool(dotted_get(cfg, "model.use_v_head", False))

    @classmethod
    def terms(cls, cfg: dict) -> tuple[str, ...]:
        """Loss terms: loss_u, plus loss_v (the v-head's |v_hat - v|^p) where the model has a v-head."""
        return ("loss_u", "loss_v") if cls.use_v_head(cfg) else ("loss_u",)

    @classmethod
    def diagnostics(cls, cfg: dict) -> tuple[str, ...]:
        return ()

    @classmethod
    def quantity(cls, cfg: dict, term: str) -> str:
        """Objective, tangent / head, time sampling and distance settings: what makes two values the same measure."""
        loss = dict(dotted_get(cfg, "loss", {}) or {})
        loss.pop("jvp", None), loss.pop("fd_step", None), loss.pop("derivative_fn", None)  # how, not what
        head = "v_hat" if cls.use_v_head(cfg) else "v"
        return json.dumps({"objective": cls.name, "term": term, "v_head": head, "loss": loss}, sort_keys=True)

    def check_model(self, model) -> None:
        """Refuse combinations that cannot train well (raises ValueError naming the keys)."""

    def adaptive_loss(
        self, delta: Tensor, mask: Tensor | None = None, weight: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Adaptively weighted loss of one term, times a per-sample `weight` (B,) when given.
        Returns (weighted loss (), per-sample d (B,), per-channel (B, C))."""
        per_ch = per_channel_distance(delta, self.p, mask)
        lam = (
            torch.ones(per_ch.shape[1], device=per_ch.device)
            if self.channel_weights is None
            else torch.as_tensor(self.channel_weights, dtype=per_ch.dtype, device=per_ch.device)
        )
        if lam.numel() != per_ch.shape[1]:
            raise ValueError(
                f"loss.channel_weights has {lam.numel()} entries but latents have {per_ch.shape[1]} channels"
            )
        d = (per_ch * lam).sum(1) / lam.sum()
        w = 1.0 / (d.detach() + self.norm_eps).pow(self.norm_p)
        if weight is not None:
            w = w * weight.to(w.dtype)
        return (w * d).mean(), d, per_ch

    def regress_on_target(
        self, model, z_t: Tensor, r: Tensor, t: Tensor, v: Tensor, u_tgt: Tensor, mask=None, weight=None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The JVP-free objectives' shared step: Delta_u = u(z_t, r, t) - sg(u_tgt) (weighted per sample by
        `weight` (B,)), plus the v-head term Delta_v = v_hat - v where the network has one (from the same pass).
        Returns (loss, diagnostics: loss, loss_raw, loss_u[, loss_v], fm_fraction, loss_u_fm / _mf, loss_ch<c>)."""
        imf = getattr(model, "use_v_head", False)
        u, v_hat = model.u_and_v(z_t, r, t) if imf else (model(z_t, r, t), None)
        loss, d_u, per_ch = self.adaptive_loss(u - u_tgt.detach(), mask, weight=weight)
        raw = d_u
        diag: dict[str, Tensor] = {}
        if imf:
            loss_v, d_v, _ = self.adaptive_loss(v_hat - v, mask)
            loss, raw = loss + self.v_loss_weight * loss_v, d_u + self.v_loss_weight * d_v
            diag["loss_v"] = d_v.mean().detach()
        fm = t == r
        with torch.no_grad():
            diag.update(
                loss=loss.detach(),
                loss_raw=raw.mean().detach(),
                loss_u=d_u.mean().detach(),
                fm_fraction=fm.float().mean(),
                # NaN when no sample of that kind (0/0); no data-dependent branch
                loss_u_fm=torch.where(fm, d_u, 0).sum().detach() / fm.sum(),
                loss_u_mf=torch.where(~fm, d_u, 0).sum().detach() / (~fm).sum(),
            )
            for c, value in enumerate(per_ch.mean(0)):
                diag[f"loss_ch{c}"] = value.detach()
        return loss, diag
