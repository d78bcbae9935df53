"""du/dt along the MeanFlow tangent (v~, 0, 1) in (z, r, t): exact (forward-mode AD) or finite difference.

Strategies: "exact" (torch.func.jvp under no_grad, then a separate forward for u), "exact_fused" (u and du/dt from
one forward-mode pass, neuromf/meanflow/fast_jvp.py; the same values in float32, fewer passes; under bf16 autocast
a float32 tangent at the bf16 activations, ~2 % from "exact"), "fd" (finite difference, both points in float32
outside autocast). `time_derivative_parts` splits du/dt into d_t u + (d_z u) v~ (diagnostics).

Both return u = u_theta(z_t, r, t) *with* its autograd graph (the term that is trained) and du/dt without one
(it only enters the target through sg(.)). Shapes: z_t, v~, u, du/dt (B, C, D, H, W); r, t (B,).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel

from neuromf.meanflow.fast_jvp import jvp_exact_fused
from neuromf.meanflow.tensors import HALF_DTYPES, float32_if_half, per_sample

JVP_STRATEGIES = ("exact", "fd", "exact_fused")


def check_jvp_strategy(prediction_type: str, jvp: str) -> None:
    """x-prediction with a finite-difference JVP is refused: u = (z - x_hat) / t divides the O(step) FD error by t
    (and du/dt carries a 1/t^2 term), so the target error grows as O(1/t^2) near t = 0."""
    if jvp not in JVP_STRATEGIES:
        raise ValueError(f"loss.jvp={jvp!r}: expected one of {JVP_STRATEGIES}")
    if prediction_type == "x" and jvp == "fd":
        raise ValueError(
            "model.prediction_type=x with loss.jvp=fd is refused: with x-prediction u = (z_t - x_hat)/t, so the "
            "finite-difference error of du/dt grows as O(1/t^2) for small t and corrupts the MeanFlow target. "
            "Use loss.jvp=exact with x-prediction, or model.prediction_type=u with loss.jvp=fd."
        )


def jvp_exact(model, z_t: Tensor, r: Tensor, t: Tensor, v_tilde: Tensor) -> Tensor:
    """du/dt = d/ds u(z_t + s v~, r, t + s) at s = 0, by torch.func.jvp, no autograd graph kept.

    Runs outside autocast, in float32 (TF32 on GPU): under bf16 autocast forward-mode AD hands an fp32 tangent
    to a bf16-cast conv (an error on CPU), and a bf16 JVP was measured slower than TF32 on an H100 (408 vs
    334 ms at 4x48^3, batch 8). The trained primal u keeps the surrounding autocast.
    """
    return _jvp_float32(model, z_t, r, t, v_tilde, torch.ones_like(t))


def _jvp_float32(model, z_t: Tensor, r: Tensor, t: Tensor, dz: Tensor, dt: Tensor) -> Tensor:
    """d/ds u(z_t + s dz, r, t + s dt) at s = 0 (dz like z_t, dt (B,)), in float32 outside autocast, no graph."""
    z_t, r, t, dz, dt = map(float32_if_half, (z_t, r, t, dz, dt))
    # SDPA's flash / memory-efficient kernels have no forward-mode AD: a model built with
    # use_flash_attention=True (MONAI's SDPA path) takes its JVP through the math kernel
    with torch.no_grad(), torch.autocast(z_t.device.type, enabled=False), sdpa_kernel(SDPBackend.MATH):
        _, out = torch.func.jvp(lambda z, tt: model(z, r, tt), (z_t, t), (dz, dt))
    return out


def time_derivative_parts(model, z_t: Tensor, r: Tensor, t: Tensor, v_tilde: Tensor) -> tuple[Tensor, Tensor]:
    """The two terms of du/dt = d_t u + (d_z u) v~ at (z_t, r, t), each (B, C, D, H, W), float32, no graph.

    t-part d_t u: the JVP along (0, 0, 1) in (z, r, t); z-part (d_z u) v~: the JVP along (v~, 0, 0). By
    linearity of the JVP in its tangent their sum is du/dt of `jvp_exact`. Costs two JVPs (diagnostics only).
    """
    du_dt_t = _jvp_float32(model, z_t, r, t, torch.zeros_like(v_tilde), torch.ones_like(t))
    du_dt_z = _jvp_float32(model, z_t, r, t, v_tilde, torch.zeros_like(t))
    return du_dt_t, du_dt_z


def rms_norm(a: Tensor) -> Tensor:
    """Per-sample RMS of a (B, ...) tensor, averaged over the batch (float32 scalar), as `jvp_norm`."""
    return float32_if_half(a.detach()).flatten(1).pow(2).mean(1).sqrt().mean()


def jvp_fd(
    model, z_t: Tensor, r: Tensor, t: Tensor, v_tilde: Tensor, u: Tensor | None = None, step: float = 1e-4
) -> Tensor:
    """One-sided finite difference (u(z_t + s v~, r, t + s) - u(z_t, r, t)) / s, s = `step` (-`step` where
    t + step > 1), no autograd graph kept.

    Both points are evaluated in float32 outside autocast, as in `jvp_exact`: in bf16 the difference of two
    nearly equal outputs is rounding noise (relative error ~2 vs exact at step 1e-4). The trained primal `u` is
    reused as the base point only when it is already such an evaluation (full precision, autocast off);
    otherwise u(z_t, r, t) is evaluated again in float32 (one extra no-grad forward under autocast).
    """
    device = z_t.device.type
    reuse = u is not None and u.dtype not in HALF_DTYPES and not torch.is_autocast_enabled(device)
    z_t, r, t, v_tilde = map(float32_if_half, (z_t, r, t, v_tilde))
    s = torch.where(t + step <= 1.0, torch.full_like(t, step), torch.full_like(t, -step))
    with torch.no_grad(), torch.autocast(device, enabled=False):
        u_base = u.detach() if reuse else model(z_t, r, t)
        u_shift = model(z_t + per_sample(s, z_t) * v_tilde, r, t + s)
    return (u_shift - u_base) / per_sample(s, z_t)


def time_derivative(
    model,
    z_t: Tensor,
    r: Tensor,
    t: Tensor,
    v_tilde: Tensor,
    strategy: str = "exact",
    fd_step: float = 1e-4,
    with_v: bool = False,
) -> tuple[Tensor, ...]:
    """(u with grad, du/dt detached) for the chosen strategy.

    with_v: u comes from `model.u_and_v` and (u, du/dt, v_hat) is returned, v_hat the v-head output of the same
    pass as u, with its graph (iMF's auxiliary output: the v-head's loss costs no extra backbone pass)."""
    if strategy not in JVP_STRATEGIES:
        raise ValueError(f"loss.jvp={strategy!r}: expected one of {JVP_STRATEGIES}")
    if strategy == "exact_fused":
        return jvp_exact_fused(model, z_t, r, t, v_tilde, with_v=with_v)
    du_dt = jvp_exact(model, z_t, r, t, v_tilde) if strategy == "exact" else None
    u, v_hat = model.u_and_v(z_t, r, t) if with_v else (model(z_t, r, t), None)
    if strategy == "fd":
        du_dt = jvp_fd(model, z_t, r, t, v_tilde, u, fd_step)
    return (u, du_dt, v_hat) if with_v else (u, du_dt)
