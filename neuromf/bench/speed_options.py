"""Speed/memory options for MeanFlowUNet training: GroupNorm decomposition (for torch.compile of the JVP),
channels-last 3D, gradient checkpointing of the UNet blocks, and a compiled du/dt function for the objective.

All are opt-in and keep parameters and state-dict keys unchanged.
Shapes: z_t, v~, u, du/dt (B, C, D, H, W); r, t (B,).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from neuromf.meanflow.fast_jvp import fused_active, fused_jvp_mode
from neuromf.meanflow.jvp import JVP_STRATEGIES, jvp_fd
from neuromf.meanflow.tensors import float32_if_half


class DecomposedGroupNorm(nn.GroupNorm):
    """nn.GroupNorm computed with var_mean/rsqrt (same parameters). torch.compile of torch.func.jvp fails on the
    fused group_norm kernel (pytorch/pytorch#152185); this form traces. Reductions run in float32 for half inputs."""

    def forward(self, x: Tensor) -> Tensor:
        n, c = x.shape[:2]
        xg = x.reshape(n, self.num_groups, -1)
        xg = float32_if_half(xg)
        var, mean = torch.var_mean(xg, dim=-1, keepdim=True, correction=0)
        y = ((xg - mean) * torch.rsqrt(var + self.eps)).reshape(x.shape)
        if self.affine:
            shape = (1, c, *([1] * (x.ndim - 2)))
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y  # float32 for half inputs, as autocast runs nn.GroupNorm


def decompose_group_norm(module: nn.Module) -> nn.Module:
    """Swap (in place) every nn.GroupNorm (and subclass without its own maths) for DecomposedGroupNorm."""
    for m in module.modules():
        if type(m) is nn.GroupNorm or type(m).__name__ == "FusedJVPGroupNorm":
            m.__class__ = DecomposedGroupNorm
    return module


def channels_last_3d(module: nn.Module) -> nn.Module:
    """Conv weights in channels_last_3d (NDHWC) layout; feed inputs with x.to(memory_format=torch.channels_last_3d)."""
    return module.to(memory_format=torch.channels_last_3d)


def enable_gradient_checkpointing(model: nn.Module) -> nn.Module:
    """Non-reentrant torch.utils.checkpoint around every down/middle/up block of the MAISI UNet (and the v-head's
    res blocks): their activations are recomputed in backward. Composes with torch.func.jvp under no_grad (nothing
    is saved there) and with the forward-AD pass of jvp=exact_fused. Idempotent."""
    unet = getattr(model, "unet", model)
    blocks = [*unet.down_blocks, unet.middle_block, *unet.up_blocks]
    v_head = getattr(model, "v_head", None)
    if v_head is not None:
        blocks += list(v_head.blocks)
    for block in blocks:
        if getattr(block, "_checkpointed", False):
            continue
        plain = block.forward

        @functools.wraps(plain)
        def forward(*args, _plain=plain, **kwargs):
            if not torch.is_grad_enabled():
                return _plain(*args, **kwargs)
            fused = fused_active()

            def run(*a, **k):  # the recomputation in backward must use the same layers as the forward
                with fused_jvp_mode(fused):
                    return _plain(*a, **k)

            return checkpoint(run, *args, use_reentrant=False, **kwargs)

        block.forward = forward
        block._checkpointed = True
    return model


def compiled_time_derivative(
    model: nn.Module, strategy: str = "exact", fd_step: float = 1e-3, **compile_kwargs
) -> Callable:
    """A drop-in for neuromf.meanflow.jvp.time_derivative with the JVP (and the u forward) under torch.compile.

    Returns fn(model, z_t, r, t, v_tilde, strategy=..., fd_step=..., with_v=False) -> (u with graph, du/dt
    detached) [+ v_hat, the v-head output of the u pass, with `with_v`]; set it as MeanFlowObjective.derivative_fn.
    GroupNorms are decomposed first (pytorch#152185).
    exact:       compiled torch.func.jvp under no_grad + compiled forward for u (two passes, no tangent graph).
    exact_fused: one compiled torch.func.jvp under grad mode returning (u, sg(du/dt)): AOTAutograd drops the
                 tangent's backward, so only what u's backward needs is saved (the eager fused path instead uses
                 neuromf.meanflow.fast_jvp).
    """
    if strategy not in JVP_STRATEGIES:
        raise ValueError(f"loss.jvp={strategy!r}: expected one of {JVP_STRATEGIES}")
    decompose_group_norm(model)
    plain = model.forward
    plain_uv = getattr(model, "u_and_v", None)

    def _jvp(z: Tensor, r: Tensor, t: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        return torch.func.jvp(lambda zz, tt: plain(zz, r, tt), (z, t), (v, torch.ones_like(t)))

    def _fused(z: Tensor, r: Tensor, t: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        u, du = _jvp(z, r, t, v)
        return u, du.detach()

    def _fused_uv(z: Tensor, r: Tensor, t: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        # v_hat is an auxiliary output of the u pass: no tangent is taken of it
        u, du, v_hat = torch.func.jvp(lambda zz, tt: plain_uv(zz, r, tt), (z, t), (v, torch.ones_like(t)), has_aux=True)
        return u, du.detach(), v_hat

    jvp_c, fused_c, fwd_c = (torch.compile(f, **compile_kwargs) for f in (_jvp, _fused, plain))
    fused_uv_c = torch.compile(_fused_uv, **compile_kwargs) if plain_uv is not None else None
    fwd_uv_c = torch.compile(plain_uv, **compile_kwargs) if plain_uv is not None else None

    def derivative(_model, z_t, r, t, v_tilde, strategy: str = strategy, fd_step: float = fd_step, with_v=False):
        if strategy == "exact":
            with torch.no_grad():
                _, du_dt = jvp_c(z_t, r, t, v_tilde)
            if with_v:
                u, v_hat = fwd_uv_c(z_t, r, t)
                return u, du_dt, v_hat
            return fwd_c(z_t, r, t), du_dt
        if strategy == "exact_fused":
            return fused_uv_c(z_t, r, t, v_tilde) if with_v else fused_c(z_t, r, t, v_tilde)
        if strategy == "fd":
            u, v_hat = fwd_uv_c(z_t, r, t) if with_v else (fwd_c(z_t, r, t), None)
            du_dt = jvp_fd(fwd_c, z_t, r, t, v_tilde, u, fd_step)
            return (u, du_dt, v_hat) if with_v else (u, du_dt)
        raise ValueError(f"loss.jvp={strategy!r}: expected one of {JVP_STRATEGIES}")

    derivative.forward = fwd_c  # the compiled u forward, for a flow-matching baseline
    return derivative
