"""The MAISI wrapper: conditioning modes, heads, exact JVP, gradients, loading plain MAISI weights."""

import itertools

import pytest
import torch
from engine_helpers import TINY, tiny_model
from monai.apps.generation.maisi.networks.diffusion_model_unet_maisi import DiffusionModelUNetMaisi

from neuromf.meanflow import MeanFlowObjective, sample
from neuromf.meanflow.jvp import jvp_exact


def _inputs(b=2, c=2, s=8, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, c, s, s, s, generator=g, dtype=dtype)
    t = torch.tensor([0.7, 0.4], dtype=dtype)[:b]
    r = torch.tensor([0.2, 0.1], dtype=dtype)[:b]
    return z, r, t


@pytest.mark.parametrize("conditioning", ["dual", "h", "t_h"])
@pytest.mark.parametrize("prediction_type", ["u", "x"])
@pytest.mark.parametrize("time_scale,step,tol", [(1.0, 1e-3, 1e-4), (1000.0, 1e-5, 5e-3)])
def test_exact_jvp_matches_central_finite_difference(conditioning, prediction_type, time_scale, step, tol):
    """float64 model; tol is relative to max|du/dt|. MONAI's timestep embedding casts t to float32, which bounds
    the finite-difference reference's accuracy at time_scale=1000 (sin(1000 t) needs tiny steps)."""
    model = tiny_model(conditioning=conditioning, prediction_type=prediction_type, time_scale=time_scale).double()
    z, r, t = _inputs(dtype=torch.float64)
    tangent = torch.randn_like(z)
    du_dt = jvp_exact(model, z, r, t, tangent)
    with torch.no_grad():
        fd = (model(z + step * tangent, r, t + step) - model(z - step * tangent, r, t - step)) / (2 * step)
    scale = du_dt.abs().max()
    assert scale > 1e-2  # a non-trivial derivative
    assert (du_dt - fd).abs().max() / scale < tol


def test_conditioning_modes_use_r_and_t_as_documented():
    z, r, t = _inputs()
    for mode in ["dual", "h", "t_h"]:
        model = tiny_model(conditioning=mode).eval()
        with torch.no_grad():
            base = model(z, r, t)
            shift_both = model(z, r + 0.1, t + 0.1)  # same h, different t
            shift_r = model(z, r + 0.1, t)  # same t, different r and h
        if mode == "h":
            torch.testing.assert_close(base, shift_both)  # sees only h = t - r
        else:
            assert not torch.allclose(base, shift_both)
        assert not torch.allclose(base, shift_r)


def test_plain_maisi_state_dict_loads_and_gives_the_same_output():
    torch.manual_seed(1)
    plain = DiffusionModelUNetMaisi(spatial_dims=3, in_channels=2, out_channels=2, **TINY)
    with torch.no_grad():
        for p in plain.out[-1].parameters():
            p.normal_(0, 0.05)
    z, _, t = _inputs()
    for mode in ["dual", "h", "t_h"]:
        model = tiny_model(conditioning=mode, randomise=False, use_v_head=True)
        model.load_maisi_state_dict(plain.state_dict(), flip_velocity=True)
        with torch.no_grad():
            expected = -plain(z, t * 1000.0)  # MAISI predicts x - eps; MeanFlow's velocity is eps - x
            # r = t, so h = 0: dual/t_h extra embeddings start at zero and 'h' mode sees t - r = 0
            got = model(z, t if mode != "h" else torch.zeros(2), t if mode != "h" else torch.zeros(2))
            if mode == "h":
                expected = -plain(z, torch.zeros(2))
        torch.testing.assert_close(got, expected)


def _randomised_grads(model, obj, seed=0):
    z, _, _ = _inputs(seed=seed)
    loss, _ = obj(model, z, generator=torch.Generator().manual_seed(seed))
    loss.backward()
    return {n: p.grad for n, p in model.named_parameters()}


def test_gradients_reach_every_parameter_of_both_heads():
    model = tiny_model(use_v_head=True, v_head_num_res_blocks=1, conditioning="t_h")
    obj = MeanFlowObjective(jvp="exact", time_sampler={"data_proportion": 0.5})
    grads = _randomised_grads(model, obj)
    missing = [n for n, g in grads.items() if g is None or g.abs().sum() == 0]
    assert not missing, missing
    assert any(n.startswith("v_head.blocks") for n in grads)


def test_u_term_sends_no_gradient_into_the_v_head():
    """The tangent is sg(v_hat): only the v-head's own loss trains it."""
    model = tiny_model(use_v_head=True, v_head_num_res_blocks=1)
    grads = _randomised_grads(model, MeanFlowObjective(jvp="exact", v_loss_weight=0.0))
    v_grads = [g for n, g in grads.items() if n.startswith("v_head")]
    assert v_grads and all(g is None or g.abs().sum() == 0 for g in v_grads)


def test_plain_meanflow_has_no_v_head_and_all_parameters_train():
    model = tiny_model(use_v_head=False, conditioning="dual")
    grads = _randomised_grads(model, MeanFlowObjective(jvp="exact", time_sampler={"data_proportion": 0.5}))
    assert not any(n.startswith("v_head") for n in grads)
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values())


def test_v_head_is_not_evaluated_at_inference(monkeypatch):
    model = tiny_model(use_v_head=True)
    monkeypatch.setattr(model, "v", lambda *a, **k: pytest.fail("v-head used at inference"))
    model.v_head.register_forward_hook(lambda *a: pytest.fail("v-head used at inference"))
    z, _, _ = _inputs()
    sample(model, z, nfe=2)


COMBOS = list(itertools.product(["x", "u"], ["exact", "fd"], ["dual", "h", "t_h"], [True, False]))


@pytest.mark.parametrize("prediction_type,jvp,conditioning,use_v_head", COMBOS)
def test_every_configuration_builds_and_steps_or_is_refused(prediction_type, jvp, conditioning, use_v_head):
    model = tiny_model(prediction_type=prediction_type, conditioning=conditioning, use_v_head=use_v_head)
    obj = MeanFlowObjective(jvp=jvp)
    if prediction_type == "x" and jvp == "fd":
        with pytest.raises(ValueError, match=r"prediction_type=x with loss\.jvp=fd.*1/t\^2"):
            obj.check_model(model)
        return
    obj.check_model(model)
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in model.parameters()]
    z, _, _ = _inputs()
    loss, diag = obj(model, z, generator=torch.Generator().manual_seed(0))
    loss.backward()
    opt.step()
    assert torch.isfinite(loss) and torch.isfinite(diag["loss_raw"])
    assert ("loss_v" in diag) == use_v_head
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_exact_jvp_under_bf16_autocast_runs_in_float32_and_trains():
    model = tiny_model(use_v_head=True)
    z, r, t = _inputs()
    tangent = torch.randn_like(z)
    reference = jvp_exact(model, z, r, t, tangent)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = jvp_exact(model, z, r, t, tangent)
        loss, diag = MeanFlowObjective(jvp="exact")(model, z, generator=torch.Generator().manual_seed(0))
    assert inside.dtype == torch.float32
    torch.testing.assert_close(inside, reference)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in model.parameters())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="flash attention needs CUDA")
def test_exact_jvp_with_flash_attention_takes_the_math_kernel():
    """A model built with use_flash_attention=True (SDPA) still gets an exact JVP equal to the einsum path's."""
    flash = tiny_model(use_flash_attention=True).cuda()
    plain = tiny_model(use_flash_attention=False).cuda()
    plain.load_state_dict(flash.state_dict())
    z, r, t = (a.cuda() for a in _inputs())
    tangent = torch.randn_like(z)
    torch.testing.assert_close(
        jvp_exact(flash, z, r, t, tangent), jvp_exact(plain, z, r, t, tangent), atol=1e-4, rtol=1e-3
    )
