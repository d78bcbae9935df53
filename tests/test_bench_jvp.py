"""Fused exact JVP (one forward-mode pass) and the speed/memory options: same maths as the reference paths."""

import pytest
import torch
from engine_helpers import tiny_model

from neuromf.bench.measure import saved_tensor_bytes
from neuromf.bench.speed_options import (
    channels_last_3d,
    compiled_time_derivative,
    decompose_group_norm,
    enable_gradient_checkpointing,
)
from neuromf.meanflow import MeanFlowObjective, check_jvp_strategy, time_derivative
from neuromf.meanflow.fast_jvp import jvp_exact_fused, prepare_fused_jvp


def _inputs(b=2, c=2, s=8, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, c, s, s, s, generator=g, dtype=dtype)
    tangent = torch.randn(b, c, s, s, s, generator=g, dtype=dtype)
    return z, torch.tensor([0.2, 0.1], dtype=dtype)[:b], torch.tensor([0.7, 0.4], dtype=dtype)[:b], tangent


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("conditioning,prediction_type", [("t_h", "u"), ("dual", "x"), ("h", "u")])
def test_fused_jvp_matches_central_finite_difference(conditioning, prediction_type):
    """Same check as the exact strategy's (float64, time_scale=1, tol relative to max|du/dt|)."""
    model = tiny_model(conditioning=conditioning, prediction_type=prediction_type, time_scale=1.0).double()
    z, r, t, tangent = _inputs()
    u, du_dt = jvp_exact_fused(model, z, r, t, tangent)
    step = 1e-3
    with torch.no_grad():
        fd = (model(z + step * tangent, r, t + step) - model(z - step * tangent, r, t - step)) / (2 * step)
        plain = model(z, r, t)
    scale = du_dt.abs().max()
    assert scale > 1e-2
    assert (du_dt - fd).abs().max() / scale < 1e-4
    torch.testing.assert_close(u.detach(), plain, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("use_v_head", [False, True])
@pytest.mark.parametrize("prediction_type", ["u", "x"])
def test_fused_equals_exact_values_and_parameter_gradients(use_v_head, prediction_type):
    model = tiny_model(use_v_head=use_v_head, prediction_type=prediction_type, v_head_num_res_blocks=1).double()
    z, r, t, tangent = _inputs()
    u_ref, du_ref = time_derivative(model, z, r, t, tangent, strategy="exact")
    u, du = time_derivative(model, z, r, t, tangent, strategy="exact_fused")
    assert u.requires_grad and u.grad_fn is not None and du.grad_fn is None
    torch.testing.assert_close(u, u_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(du, du_ref, rtol=1e-10, atol=1e-10 * float(du_ref.abs().max()))
    grads = {}
    for strategy in ["exact", "exact_fused"]:
        model.zero_grad(set_to_none=True)
        obj = MeanFlowObjective(jvp=strategy, time_sampler={"data_proportion": 0.5})
        loss, _ = obj(model, z, generator=torch.Generator().manual_seed(3))
        loss.backward()
        grads[strategy] = _grads(model)
    assert grads["exact"].keys() == grads["exact_fused"].keys() and grads["exact"]
    for name, g in grads["exact"].items():
        torch.testing.assert_close(grads["exact_fused"][name], g, rtol=1e-9, atol=1e-12, msg=name)


def test_fused_pass_keeps_no_tangent_graph():
    """Naive fused (torch.func.jvp under grad mode) also saves the tangent's graph; the fused pass saves less than
    even the plain forward (its attention keeps no L x L matrix)."""
    model = tiny_model(use_v_head=False)
    z, r, t, tangent = (a.float() for a in _inputs(s=16))

    def naive():
        return torch.func.jvp(lambda zz, tt: model(zz, r, tt), (z, t), (tangent, torch.ones_like(t)))

    fused = saved_tensor_bytes(lambda: jvp_exact_fused(model, z, r, t, tangent))
    forward = saved_tensor_bytes(lambda: model(z, r, t))
    assert fused < forward < saved_tensor_bytes(naive)


def test_swapped_layers_are_transparent_outside_the_fused_pass():
    model = tiny_model()
    keys = list(model.state_dict())
    z, r, t, _ = (a.float() for a in _inputs())
    with torch.no_grad():
        before = model(z, r, t)
        prepare_fused_jvp(model)
        after = model(z, r, t)
    assert list(model.state_dict()) == keys
    assert type(model.unet.conv_in.conv).__name__ == "FusedJVPConv"
    torch.testing.assert_close(after, before, rtol=0, atol=0)


def test_strategy_checks():
    check_jvp_strategy("x", "exact_fused")  # x-prediction with an exact JVP is fine
    with pytest.raises(ValueError, match=r"prediction_type=x with loss\.jvp=fd"):
        check_jvp_strategy("x", "fd")
    with pytest.raises(ValueError, match="expected one of"):
        MeanFlowObjective(jvp="fused")


def test_decomposed_group_norm_matches_and_state_dict_round_trips():
    model = tiny_model()
    z, r, t, _ = (a.float() for a in _inputs())
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        ref = model(z, r, t)
        decompose_group_norm(model)
        out = model(z, r, t)
    assert not any(type(m) is torch.nn.GroupNorm for m in model.modules())
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    fresh = tiny_model(seed=7)
    decompose_group_norm(fresh)
    fresh.load_state_dict(model.state_dict(), strict=True)
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in state.items())


@pytest.mark.parametrize("strategy", ["exact", "exact_fused"])
def test_gradient_checkpointing_gives_the_same_loss_and_gradients(strategy):
    results = []
    for ckpt in [False, True]:
        model = tiny_model(use_v_head=True, v_head_num_res_blocks=1).double()
        if ckpt:
            enable_gradient_checkpointing(model)
        z, _, _, _ = _inputs()
        loss, _ = MeanFlowObjective(jvp=strategy, time_sampler={"data_proportion": 0.5})(
            model, z, generator=torch.Generator().manual_seed(5)
        )
        loss.backward()
        results.append((loss.detach(), _grads(model)))
    (l0, g0), (l1, g1) = results
    torch.testing.assert_close(l1, l0, rtol=1e-12, atol=0)
    assert g0.keys() == g1.keys()
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-9, atol=1e-12, msg=name)


def test_channels_last_3d_gives_the_same_jvp():
    model = tiny_model()
    z, r, t, tangent = (a.float() for a in _inputs())
    u_ref, du_ref = jvp_exact_fused(model, z, r, t, tangent)
    channels_last_3d(model)
    cl = torch.channels_last_3d
    u, du = jvp_exact_fused(model, z.contiguous(memory_format=cl), r, t, tangent.contiguous(memory_format=cl))
    torch.testing.assert_close(u, u_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(du, du_ref, rtol=1e-4, atol=1e-4 * float(du_ref.abs().max()))


@pytest.mark.slow
def test_compiled_fused_derivative_matches_eager():
    """torch.compile (aot_eager backend on CPU) of the fused torch.func.jvp: same u, du/dt and gradients."""
    model = tiny_model(use_v_head=False)
    z, r, t, tangent = (a.float() for a in _inputs())
    u_ref, du_ref = time_derivative(model, z, r, t, tangent, strategy="exact")
    u_ref.square().mean().backward()
    g_ref = _grads(model)
    model.zero_grad(set_to_none=True)
    fn = compiled_time_derivative(model, "exact_fused", backend="aot_eager")
    u, du = fn(model, z, r, t, tangent)
    assert du.grad_fn is None
    u.square().mean().backward()
    torch.testing.assert_close(u, u_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(du, du_ref, rtol=1e-4, atol=1e-5 * float(du_ref.abs().max()))
    for name, g in g_ref.items():
        torch.testing.assert_close(_grads(model)[name], g, rtol=1e-3, atol=1e-6, msg=name)
