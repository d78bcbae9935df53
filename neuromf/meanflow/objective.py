"""MeanFlow and improved-MeanFlow (iMF) objectives — all the maths in one place, in the papers' symbols.

  z_t = (1 - t) x + t eps           v = eps - x (conditional velocity)          h = t - r
  u = u_theta(z_t, r, t)            du/dt = JVP of u along the tangent (v~, 0, 1) in (z, r, t)
  MeanFlow:  v~ = v,         u_tgt = sg(v - h du/dt),   Delta_u = u - u_tgt
  iMF:       v~ = sg(v_hat), V = u + h sg(du/dt),       Delta_u = V - v,   Delta_v = v_hat - v
  (the two Delta_u are the same expression; only the tangent differs, and iMF adds the v-head term)
  iMF's v-head is evaluated twice (`imf_v_loss`):
    shared (default, as the official iMF code): v~ = v_hat(z_t | r = t) from a pass WITHOUT a graph, and Delta_v
      takes v_hat(z_t | r, t), the v-head output of the u pass itself (auxiliary output, `u_and_v`): the v-head's
      target v does not depend on h, so its optimum E[v | z_t] is the same at every h (and at r = t the two agree).
      Cost: one no-grad forward more than MeanFlow.
    separate: v_hat(z_t | r = t) from one pass WITH a graph gives both the tangent (detached) and Delta_v:
      a full extra forward + backward of the backbone.
  per-sample distance d = sum_c lambda_c mean_voxels(|Delta_c|^p) / sum_c lambda_c
  adaptive weight w = 1 / sg(d + norm_eps)^norm_p,  loss = mean_b(w d)  (one weight per term)
Shapes: x, eps, z_t, u, v (B, C, D, H, W); r, t, h (B,).

MeanFlow: Geng et al., "Mean Flows for One-step Generative Modeling", arXiv 2505.13447 (official code
github.com/Gsunshine/meanflow, PyTorch port github.com/Gsunshine/py-meanflow); iMF: improved MeanFlow
(github.com/Lyy-iiis/imeanflow, imf.py). Sampler: average-velocity jumps u(z_t, r, t).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from neuromf.meanflow.contract import JVP_PARTS, Objective, per_channel_distance  # noqa: F401 (re-exported)
from neuromf.meanflow.jvp import JVP_STRATEGIES, check_jvp_strategy, time_derivative
from neuromf.meanflow.tensors import float32_if_half, per_sample
from neuromf.meanflow.time_sampling import TimeSampler

IMF_V_LOSS = ("shared", "separate")


def _cosine(a: Tensor, b: Tensor) -> Tensor:
    return F.cosine_similarity(float32_if_half(a).flatten(1), float32_if_half(b).flatten(1), dim=1).mean()


@dataclass
class MeanFlowObjective(Objective):
    """Builds z_t, takes du/dt and returns (loss, raw loss, diagnostics) for MeanFlow or iMF.

    `use_v_head` comes from the network: with a v-head the objective is iMF, without it plain MeanFlow.
    """

    name: ClassVar[str] = "meanflow"
    sampler: ClassVar[str] = "average"

    jvp: Literal["exact", "fd", "exact_fused"] = "exact"
    fd_step: float = 1e-4
    p: float = 2.0
    norm_p: float = 1.0
    norm_eps: float = 0.01
    channel_weights: list[float] | None = None
    v_loss_weight: float = 1.0
    imf_v_loss: Literal["shared", "separate"] = "shared"
    time_sampler: TimeSampler = field(default_factory=TimeSampler)
    # optional drop-in for time_derivative (e.g. neuromf.bench.speed_options.compiled_time_derivative)
    derivative_fn: Callable | None = field(default=None, repr=False)
    # the tangent point of the last call, detached: {"z_t", "v_tilde": (B, C, D, H, W), "r", "t": (B,)}; the
    # diagnostics callback splits du/dt there into its t- and z-parts (time_derivative_parts)
    last_point: dict[str, Tensor] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.jvp not in JVP_STRATEGIES:
            raise ValueError(f"loss.jvp={self.jvp!r}: expected one of {JVP_STRATEGIES}")
        if self.imf_v_loss not in IMF_V_LOSS:
            raise ValueError(f"loss.imf_v_loss={self.imf_v_loss!r}: expected one of {IMF_V_LOSS}")
        if isinstance(self.time_sampler, dict):
            self.time_sampler = TimeSampler(**self.time_sampler)

    def check_model(self, model) -> None:
        """Refuse combinations that cannot train well (raises ValueError naming the keys)."""
        check_jvp_strategy(model.prediction_type, self.jvp)

    def draw_times(self, b: int, device, generator, step: int) -> tuple[Tensor, Tensor]:
        """(r, t), each (B,), from the time sampler (schedules of subclasses change it with the step)."""
        return self.time_sampler(b, device, generator)

    def gap_weight(self, h: Tensor, step: int) -> Tensor | None:
        """Per-sample weight (B,) of loss_u by the gap h = t - r; None: every sample weighs 1."""
        return None

    @classmethod
    def diagnostics(cls, cfg: dict) -> tuple[str, ...]:
        keys = ("jvp_norm", *JVP_PARTS, "cos_V_v", "fm_fraction", "loss_u_fm", "loss_u_mf")
        return (*keys, "cos_vhat_v") if cls.use_v_head(cfg) else keys

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
        """One training objective evaluation. Returns (loss to backprop, diagnostics with detached scalars).

        step: the global training step (unused here; schedules of subclasses read it)."""
        b = x.shape[0]
        if eps is None:
            eps = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        if r is None or t is None:
            r, t = self.draw_times(b, x.device, generator, step)
        r, t = r.to(x.dtype), t.to(x.dtype)
        h = t - r
        z_t = (1 - per_sample(t, x)) * x + per_sample(t, x) * eps
        v = eps - x

        imf = getattr(model, "use_v_head", False)
        shared = imf and self.imf_v_loss == "shared"
        derivative = self.derivative_fn or time_derivative
        if shared:  # tangent from a pass without a graph; v_hat for Delta_v from the u pass (below)
            with torch.no_grad():
                v_tilde = model.v(z_t, t)
        else:  # separate: the v-head pass at r = t with its graph gives the tangent and Delta_v
            v_hat = model.v(z_t, t) if imf else None
            v_tilde = v_hat.detach() if imf else v  # tangent along z
        if shared and self.v_loss_weight > 0:
            u, du_dt, v_hat = derivative(
                model, z_t, r, t, v_tilde, strategy=self.jvp, fd_step=self.fd_step, with_v=True
            )
        else:  # (shared with v_loss_weight 0: the v-head is not trained; Delta_v is reported at r = t)
            u, du_dt = derivative(model, z_t, r, t, v_tilde, strategy=self.jvp, fd_step=self.fd_step)
            if shared:
                v_hat = v_tilde
        self.last_point = {"z_t": z_t.detach(), "r": r.detach(), "t": t.detach(), "v_tilde": v_tilde.detach()}
        u_tgt = (v - per_sample(h, x) * du_dt).detach()  # sg(v - h du/dt)
        delta_u = u - u_tgt  # == V - v with V = u + h sg(du/dt)
        loss_u, d_u, per_ch = self.adaptive_loss(delta_u, mask, weight=self.gap_weight(h, step))
        loss, raw = loss_u, d_u
        diag: dict[str, Tensor] = {}
        if imf:
            loss_v, d_v, _ = self.adaptive_loss(v_hat - v, mask)
            loss = loss_u + self.v_loss_weight * loss_v
            raw = d_u + self.v_loss_weight * d_v
            diag["loss_v"] = d_v.mean().detach()
            diag["cos_vhat_v"] = _cosine(v_hat.detach(), v)
        with torch.no_grad():
            V = u.detach() + per_sample(h, x) * du_dt
            fm = r == t
            diag.update(
                loss=loss.detach(),
                loss_raw=raw.mean().detach(),
                loss_u=d_u.mean().detach(),
                jvp_norm=float32_if_half(du_dt).flatten(1).pow(2).mean(1).sqrt().mean(),
                cos_V_v=_cosine(V, v),
                fm_fraction=fm.float().mean(),
                # NaN when no sample of that kind (0/0); no data-dependent branch
                loss_u_fm=torch.where(fm, d_u, 0).sum().detach() / fm.sum(),
                loss_u_mf=torch.where(~fm, d_u, 0).sum().detach() / (~fm).sum(),
            )
            for c, value in enumerate(per_ch.mean(0)):
                diag[f"loss_ch{c}"] = value.detach()
        return loss, diag
