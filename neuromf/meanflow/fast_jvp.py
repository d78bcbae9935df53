"""One-pass exact JVP: u with its autograd graph and du/dt without one, from a single forward-mode pass.

`torch.func.jvp` / `torch.autograd.forward_ad` under grad mode record an autograd graph for the *tangent* ops
too (a conv's tangent conv(dx, W) depends on W, which requires grad), so taking u from the dual pass costs about
twice the activation memory of a plain forward. Here the heavy layers (Conv3d, Linear, GroupNorm, SiLU, MONAI's
SABlock) are swapped, in place and only while a fused pass is active, for autograd Functions whose forward/backward are
the usual ATen kernels and whose forward-mode rule (`jvp`) runs without recording a graph; MONAI's SABlock attention
core becomes SDPA in forward (no L x L matrix saved) with a hand-written tangent. Everything else (adds,
concatenation, nearest upsampling, reshapes) has a tangent that does not depend on a grad-requiring primal and
records nothing.

Hand-written because PyTorch has no "tangent without graph, primal with graph" mode; the jvp rules below are the
textbook derivatives and are tested against torch.func.jvp and finite differences (tests/test_bench_jvp.py).

Under autocast the primal kernels follow autocast's rules and every tangent rule runs in float32 (float32 weights
and tangents; du/dt is then the derivative at the bf16 activations, ~2 % from "exact": docs/performance.md).

Shapes: z_t, v~, u, du/dt (B, C, D, H, W); r, t (B,).
"""

from __future__ import annotations

import contextlib
import threading

import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from monai.networks.blocks.selfattention import SABlock
from torch import Tensor, nn
from torch.autograd import Function

from neuromf.meanflow.tensors import float32_if_half

_STATE = threading.local()


def fused_active() -> bool:
    """True inside `fused_jvp_mode()`: swapped layers route through the graph-free-tangent Functions."""
    return getattr(_STATE, "active", False)


@contextlib.contextmanager
def fused_jvp_mode(active: bool = True):
    prev = fused_active()
    _STATE.active = active
    try:
        yield
    finally:
        _STATE.active = prev


# ---- dtype helpers (autocast is honoured explicitly: the kernels run with autocast off) -----------------------
def _autocast_dtype(x: Tensor) -> torch.dtype | None:
    dev = x.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else None


def _cast(a: Tensor | None, dtype: torch.dtype | None) -> Tensor | None:
    return a if a is None or dtype is None or a.dtype == dtype else a.to(dtype)


def _tangent_dtype(*a: Tensor) -> torch.dtype:
    """Tangents are computed in float32 (float64 stays float64), whatever autocast gives the primal."""
    return torch.promote_types(float32_if_half(a[0]).dtype, float32_if_half(a[-1]).dtype)


def _no_autocast(x: Tensor):
    return torch.autocast(x.device.type, enabled=False)


# ---- Functions -------------------------------------------------------------------------------------------------
class _ConvFn(Function):
    """N-d convolution (zero padding, not transposed)."""

    @staticmethod
    def forward(x, w, b, stride, padding, dilation, groups, dtype):
        with _no_autocast(x):
            xc, wc, bc = _cast(x, dtype), _cast(w, dtype), _cast(b, dtype)
            return torch.ops.aten.convolution(xc, wc, bc, stride, padding, dilation, False, [0] * len(stride), groups)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, w, b, stride, padding, dilation, groups, dtype = inputs
        xc, wc = _cast(x, dtype), _cast(w, dtype)
        ctx.save_for_backward(xc, wc)
        ctx.save_for_forward(w)  # the full-precision weight: the tangent runs in float32 (see _tangent_dtype)
        ctx.set_materialize_grads(False)  # absent tangents/grads arrive as None, not zero tensors
        ctx.conf = (stride, padding, dilation, groups, dtype, b is not None)
        ctx.dtypes = (x.dtype, w.dtype, None if b is None else b.dtype)

    @staticmethod
    def backward(ctx, g):
        if g is None:
            return (None,) * 8
        xc, wc = ctx.saved_tensors
        stride, padding, dilation, groups, _, has_b = ctx.conf
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], has_b and ctx.needs_input_grad[2]]
        gx, gw, gb = torch.ops.aten.convolution_backward(
            g.to(xc.dtype),
            xc,
            wc,
            [wc.shape[0]] if has_b else None,
            stride,
            padding,
            dilation,
            False,
            [0] * len(stride),
            groups,
            mask,
        )
        dx, dw, db = ctx.dtypes
        return (
            gx.to(dx) if mask[0] else None,
            gw.to(dw) if mask[1] else None,
            gb.to(db) if mask[2] else None,
            None,
            None,
            None,
            None,
            None,
        )

    @staticmethod
    def jvp(ctx, tx, tw, tb, *_):
        if tx is None:
            return None
        (w,) = ctx.saved_tensors
        stride, padding, dilation, groups, _, _ = ctx.conf
        if tw is not None or tb is not None:
            raise NotImplementedError("fused JVP: parameter tangents are not supported")
        dt = _tangent_dtype(tx, w)
        with torch.no_grad(), _no_autocast(w):
            return torch.ops.aten.convolution(
                tx.to(dt), w.detach().to(dt), None, stride, padding, dilation, False, [0] * len(stride), groups
            )


class _LinearFn(Function):
    @staticmethod
    def forward(x, w, b, dtype):
        with _no_autocast(x):
            return F.linear(_cast(x, dtype), _cast(w, dtype), _cast(b, dtype))

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, w, b, dtype = inputs
        xc, wc = _cast(x, dtype), _cast(w, dtype)
        ctx.save_for_backward(xc, wc)
        ctx.save_for_forward(w)  # full-precision weight for the float32 tangent
        ctx.set_materialize_grads(False)  # absent tangents/grads arrive as None, not zero tensors
        ctx.dtypes = (x.dtype, w.dtype, None if b is None else b.dtype)

    @staticmethod
    def backward(ctx, g):
        if g is None:
            return (None,) * 4
        xc, wc = ctx.saved_tensors
        g = g.to(xc.dtype)
        gx = g @ wc if ctx.needs_input_grad[0] else None
        g2, x2 = g.reshape(-1, g.shape[-1]), xc.reshape(-1, xc.shape[-1])
        gw = g2.t() @ x2 if ctx.needs_input_grad[1] else None
        gb = g2.sum(0) if ctx.dtypes[2] is not None and ctx.needs_input_grad[2] else None
        dx, dw, db = ctx.dtypes
        return (
            None if gx is None else gx.to(dx),
            None if gw is None else gw.to(dw),
            None if gb is None else gb.to(db),
            None,
        )

    @staticmethod
    def jvp(ctx, tx, tw, tb, _):
        if tx is None:
            return None
        (w,) = ctx.saved_tensors
        if tw is not None or tb is not None:
            raise NotImplementedError("fused JVP: parameter tangents are not supported")
        dt = _tangent_dtype(tx, w)
        with torch.no_grad(), _no_autocast(w):
            return F.linear(tx.to(dt), w.detach().to(dt))


class _GroupNormFn(Function):
    """y = (x - mean_g) rstd_g * gamma + beta, rstd = 1/sqrt(var_g + eps); autocast runs it in float32."""

    @staticmethod
    def forward(ctx, x, w, b, groups, eps, dtype):
        n, c = x.shape[:2]
        with _no_autocast(x):
            xc, wc = _cast(x, dtype).contiguous(), _cast(w, dtype)
            out, mean, rstd = torch.ops.aten.native_group_norm(
                xc, wc, _cast(b, dtype), n, c, xc.numel() // (n * c), groups, eps
            )
        ctx.save_for_backward(xc, wc, mean, rstd)
        ctx.save_for_forward(xc, wc, mean, rstd)
        ctx.set_materialize_grads(False)
        ctx.conf = (groups, w is not None, b is not None)
        ctx.dtypes = (x.dtype, None if w is None else w.dtype, None if b is None else b.dtype)
        return out

    @staticmethod
    def backward(ctx, g):
        if g is None:
            return (None,) * 6
        xc, wc, mean, rstd = ctx.saved_tensors
        groups, has_w, has_b = ctx.conf
        n, c = xc.shape[:2]
        mask = [ctx.needs_input_grad[0], has_w and ctx.needs_input_grad[1], has_b and ctx.needs_input_grad[2]]
        gx, gw, gb = torch.ops.aten.native_group_norm_backward(
            g.to(xc.dtype).contiguous(), xc, mean, rstd, wc, n, c, xc.numel() // (n * c), groups, mask
        )
        dx, dw, db = ctx.dtypes
        return (
            gx.to(dx) if mask[0] else None,
            gw.to(dw) if mask[1] else None,
            gb.to(db) if mask[2] else None,
            None,
            None,
            None,
        )

    @staticmethod
    def jvp(ctx, tx, tw, tb, *_):
        if tx is None:
            return None
        xc, wc, mean, rstd = ctx.saved_tensors
        groups = ctx.conf[0]
        if tw is not None or tb is not None:
            raise NotImplementedError("fused JVP: parameter tangents are not supported")
        n, c = xc.shape[:2]
        with torch.no_grad(), _no_autocast(xc):
            # d xhat = rstd (dx - mean_g(dx) - xhat mean_g(xhat dx))  (rstd = 1/sqrt(var + eps))
            xg, tg = float32_if_half(xc.detach()).reshape(n, groups, -1), float32_if_half(tx).reshape(n, groups, -1)
            m, s = float32_if_half(mean.detach()).unsqueeze(-1), float32_if_half(rstd.detach()).unsqueeze(-1)
            xhat = (xg - m) * s
            dxhat = s * (tg - tg.mean(-1, keepdim=True) - xhat * (xhat * tg).mean(-1, keepdim=True))
            dy = dxhat.reshape(xc.shape)
            if wc is not None:
                dy = dy * float32_if_half(wc.detach()).view(1, c, *([1] * (xc.ndim - 2)))
            return dy


class _SiLUFn(Function):
    @staticmethod
    def forward(x):
        return F.silu(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        (x,) = inputs
        ctx.save_for_backward(x)
        ctx.save_for_forward(x)
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, g):
        if g is None:
            return None
        (x,) = ctx.saved_tensors
        return torch.ops.aten.silu_backward(g, x)

    @staticmethod
    def jvp(ctx, tx):
        if tx is None:
            return None
        (x,) = ctx.saved_tensors
        dt = _tangent_dtype(tx, x)
        with torch.no_grad(), _no_autocast(x):
            xf = x.detach().to(dt)
            s = torch.sigmoid(xf)
            return tx.to(dt) * (s * (1 + xf * (1 - s)))


class _AttentionFn(Function):
    """softmax(scale q k^T) v with q, k, v (B, heads, L, d). Forward: SDPA (flash/efficient kernels on CUDA), only
    q, k, v saved (no L x L matrix); backward recomputes SDPA under autograd; the tangent
    dO = P dv + (P * dS) v - rowsum(P * dS) O, dS = scale (dq k^T + q dk^T), is formed per sample without a graph."""

    @staticmethod
    def forward(q, k, v, scale):
        return F.scaled_dot_product_attention(q, k, v, scale=scale)

    @staticmethod
    def setup_context(ctx, inputs, output):
        q, k, v, scale = inputs
        ctx.save_for_backward(q, k, v)
        ctx.save_for_forward(q, k, v)
        ctx.scale = scale
        ctx.set_materialize_grads(False)

    @staticmethod
    def backward(ctx, g):
        if g is None:
            return None, None, None, None
        q, k, v = (a.detach().requires_grad_() for a in ctx.saved_tensors)
        with torch.enable_grad():
            o = F.scaled_dot_product_attention(q, k, v, scale=ctx.scale)
            gq, gk, gv = torch.autograd.grad(o, (q, k, v), g)
        return gq, gk, gv, None

    @staticmethod
    def jvp(ctx, dq, dk, dv, _):
        q, k, v = ctx.saved_tensors
        if dq is None and dk is None and dv is None:
            return None
        out = torch.empty(v.shape, dtype=float32_if_half(v).dtype, device=v.device)  # float32 tangent under autocast
        with torch.no_grad(), _no_autocast(v):
            for i in range(q.shape[0]):  # one sample at a time bounds the transient L x L matrices
                qi, ki, vi = (float32_if_half(a[i].detach()) for a in (q, k, v))
                p = torch.softmax(ctx.scale * qi @ ki.transpose(-1, -2), dim=-1)
                ds = torch.zeros_like(p)
                if dq is not None:
                    ds += float32_if_half(dq[i]) @ ki.transpose(-1, -2)
                if dk is not None:
                    ds += qi @ float32_if_half(dk[i]).transpose(-1, -2)
                pds = p * (ctx.scale * ds)
                do = pds @ vi - pds.sum(-1, keepdim=True) * (p @ vi)
                if dv is not None:
                    do += p @ float32_if_half(dv[i])
                out[i] = do
        return out


# ---- swappable layers (same parameters/state dict; plain behaviour outside fused_jvp_mode) -----------------------
class FusedJVPConv(nn.Conv3d):
    def forward(self, x: Tensor) -> Tensor:
        if not fused_active():
            return super().forward(x)
        return _ConvFn.apply(
            x,
            self.weight,
            self.bias,
            list(self.stride),
            list(self.padding),
            list(self.dilation),
            self.groups,
            _autocast_dtype(x),
        )


class FusedJVPLinear(nn.Linear):
    def forward(self, x: Tensor) -> Tensor:
        if not fused_active():
            return super().forward(x)
        return _LinearFn.apply(x, self.weight, self.bias, _autocast_dtype(x))


class FusedJVPGroupNorm(nn.GroupNorm):
    def forward(self, x: Tensor) -> Tensor:
        if not fused_active():
            return super().forward(x)
        return _GroupNormFn.apply(
            x,
            self.weight,
            self.bias,
            self.num_groups,
            self.eps,
            torch.float32 if _autocast_dtype(x) is not None else None,
        )


class FusedJVPSiLU(nn.SiLU):
    def forward(self, x: Tensor) -> Tensor:
        return _SiLUFn.apply(x) if fused_active() else super().forward(x)


class FusedJVPSABlock(SABlock):
    """MONAI SABlock whose attention core is _AttentionFn inside a fused pass (plain SABlock otherwise, and for
    relative positions, causal masks, attention masks or active attention dropout)."""

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        plain = (
            not fused_active()
            or attn_mask is not None
            or self.causal
            or self.rel_positional_embedding is not None
            or self.save_attn
            or self.attention_dtype is not None
            or (self.training and self.drop_weights.p > 0)
        )
        if plain:
            return super().forward(x, attn_mask)
        if self.use_combined_linear:
            qkv = self.input_rearrange(self.qkv(x))
            q, k, v = qkv[0], qkv[1], qkv[2]
        else:
            q, k, v = (self.input_rearrange(f(x)) for f in (self.to_q, self.to_k, self.to_v))
        dtype = _autocast_dtype(x)  # under autocast the projections already give `dtype`
        # contiguous: a view input made autograd hand back the tangent in the primal dtype (bf16 under autocast)
        q, k, v = (_cast(a, dtype).contiguous() for a in (q, k, v))
        y = self.out_rearrange(_AttentionFn.apply(q, k, v, self.scale))
        if self.include_fc:
            y = self.out_proj(y)
        return self.drop_output(y)


_SWAPS = {
    SABlock: FusedJVPSABlock,
    nn.Conv3d: FusedJVPConv,
    nn.Linear: FusedJVPLinear,
    nn.GroupNorm: FusedJVPGroupNorm,
    nn.SiLU: FusedJVPSiLU,
}


def prepare_fused_jvp(model: nn.Module) -> nn.Module:
    """Swap (in place, idempotent) every exact nn.Conv3d (zero padding), nn.Linear, nn.GroupNorm and nn.SiLU for
    its fused-JVP subclass. Parameters, buffers and state-dict keys are unchanged; outside `fused_jvp_mode()` the
    swapped layers run their parent's forward."""
    if getattr(model, "_fused_jvp_ready", False):
        return model
    for m in model.modules():
        new = _SWAPS.get(type(m))
        if new is None:
            continue
        if isinstance(m, nn.Conv3d) and (m.padding_mode != "zeros" or isinstance(m.padding, str)):
            continue
        m.__class__ = new
    model._fused_jvp_ready = True
    return model


def jvp_exact_fused(
    model: nn.Module, z_t: Tensor, r: Tensor, t: Tensor, v_tilde: Tensor, with_v: bool = False
) -> tuple[Tensor, ...]:
    """(u with autograd graph, du/dt detached) from ONE forward-mode pass along (v~, 0, 1) in (z, r, t).

    with_v: the pass is `model.u_and_v` and (u, du/dt, v_hat) is returned, v_hat the v-head's output of the same
    pass with its graph and no tangent (iMF's auxiliary output)."""
    prepare_fused_jvp(model)
    with fwAD.dual_level(), fused_jvp_mode():
        z_dual = fwAD.make_dual(z_t, v_tilde.to(z_t.dtype))
        t_dual = fwAD.make_dual(t, torch.ones_like(t))
        if with_v:
            out, v_hat = model.u_and_v(z_dual, r, t_dual)
            v_hat = fwAD.unpack_dual(v_hat).primal
        else:
            out, v_hat = model(z_dual, r, t_dual), None
        u, du_dt = fwAD.unpack_dual(out)
    if du_dt is None:  # the output does not depend on (z, t)
        du_dt = torch.zeros_like(u)
    return (u, du_dt.detach(), v_hat) if with_v else (u, du_dt.detach())
