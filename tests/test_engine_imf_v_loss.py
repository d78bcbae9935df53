"""iMF's v-head loss: `shared` (default, official iMF: Delta_v from the v-head output of the u pass, tangent from a
no-grad pass at r = t) and `separate` (the former form) against the objective written out directly."""

import pytest
import torch
from engine_helpers import tiny_model

from neuromf.meanflow import MeanFlowObjective

B5 = (-1, 1, 1, 1, 1)


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 2, 8, 8, 8, generator=g, dtype=torch.float64)
    eps = torch.randn(2, 2, 8, 8, 8, generator=g, dtype=torch.float64)
    return x, eps, torch.tensor([0.2, 0.4], dtype=torch.float64), torch.tensor([0.7, 0.4], dtype=torch.float64)


def _weighted(delta, norm_eps=0.01):
    """mean_b(w d), d = mean_voxels |delta|^2 (equal channel weights), w = 1 / sg(d + norm_eps)."""
    d = delta.pow(2).flatten(1).mean(1)
    return (d / (d.detach() + norm_eps)).mean()


def _reference(model, x, eps, r, t, form, jvp, fd_step=1e-4):
    """The iMF loss written out from the network's parts (no time_derivative / u_and_v)."""
    z = (1 - t).view(B5) * x + t.view(B5) * eps
    v = eps - x

    def v_head(rr):  # the v-head on the backbone pass with the embedding of (rr, t)
        emb = model._embed(z, rr, t)
        return model._to_velocity(model.v_head(model._features(z, emb), emb), z, t)

    if form == "shared":
        with torch.no_grad():
            v_tilde = v_head(t)  # r = t, no graph
        v_hat = v_head(r)  # the u pass's (r, t) embedding
    else:
        v_hat = v_head(t)
        v_tilde = v_hat.detach()
    u = model(z, r, t)
    with torch.no_grad():
        if jvp == "fd":
            du_dt = (model(z + fd_step * v_tilde, r, t + fd_step) - model(z, r, t)) / fd_step
        else:
            du_dt = torch.func.jvp(lambda zz, tt: model(zz, r, tt), (z, t), (v_tilde, torch.ones_like(t)))[1]
    V = u + (t - r).view(B5) * du_dt
    return _weighted(V - v) + _weighted(v_hat - v)


def _loss_and_grads(model, fn):
    model.zero_grad(set_to_none=True)
    loss = fn()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("form", ["shared", "separate"])
@pytest.mark.parametrize("jvp", ["exact", "exact_fused", "fd"])
@pytest.mark.parametrize("prediction_type,conditioning", [("u", "t_h"), ("x", "dual")])
def test_imf_loss_and_gradients_equal_the_written_out_objective(form, jvp, prediction_type, conditioning):
    if prediction_type == "x" and jvp == "fd":
        pytest.skip("refused combination")
    model = tiny_model(
        use_v_head=True, v_head_num_res_blocks=1, prediction_type=prediction_type, conditioning=conditioning
    ).double()
    x, eps, r, t = _batch()
    obj = MeanFlowObjective(jvp=jvp, imf_v_loss=form)
    loss, grads = _loss_and_grads(model, lambda: obj(model, x, eps=eps, r=r, t=t)[0])
    ref, ref_grads = _loss_and_grads(model, lambda: _reference(model, x, eps, r, t, form, jvp))
    torch.testing.assert_close(loss, ref, rtol=1e-10, atol=0)
    assert grads.keys() == ref_grads.keys() and any(n.startswith("v_head") for n in grads)
    for name, g in ref_grads.items():
        torch.testing.assert_close(grads[name], g, rtol=1e-8, atol=1e-12, msg=name)


def test_forms_agree_when_r_equals_t_and_differ_otherwise():
    """At r = t the u pass's v-head IS v_hat(z_t, t): both forms give the same loss; at r < t Delta_v differs."""
    model = tiny_model(use_v_head=True).double()
    x, eps, _, t = _batch()
    losses = {
        f: MeanFlowObjective(imf_v_loss=f)(model, x, eps=eps, r=t.clone(), t=t)[0] for f in ("shared", "separate")
    }
    torch.testing.assert_close(losses["shared"], losses["separate"], rtol=1e-12, atol=0)
    r = t * 0.5
    _, d_shared = MeanFlowObjective(imf_v_loss="shared")(model, x, eps=eps, r=r, t=t)
    _, d_sep = MeanFlowObjective(imf_v_loss="separate")(model, x, eps=eps, r=r, t=t)
    torch.testing.assert_close(d_shared["loss_u"], d_sep["loss_u"])  # same tangent, same u
    assert not torch.allclose(d_shared["loss_v"], d_sep["loss_v"])


def test_shared_form_runs_one_graph_pass_and_the_default_is_shared():
    assert MeanFlowObjective().imf_v_loss == "shared"
    with pytest.raises(ValueError, match="imf_v_loss"):
        MeanFlowObjective(imf_v_loss="both")
    model = tiny_model(use_v_head=True)
    calls = []
    model.unet.conv_in.register_forward_hook(lambda *a: calls.append(torch.is_grad_enabled()))
    x, eps, r, t = (a.float() for a in _batch())
    for form, expected in [("shared", [False, True]), ("separate", [True, True])]:
        calls.clear()
        MeanFlowObjective(jvp="exact_fused", imf_v_loss=form)(model, x, eps=eps, r=r, t=t)
        assert calls == expected, form  # backbone passes: (tangent, u) ; graph-recording or not
