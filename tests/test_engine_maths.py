"""MeanFlow maths against closed-form answers."""

import pytest
import torch
from engine_helpers import GaussianFlow, tiny_model

from neuromf.meanflow import MeanFlowObjective, TimeSampler, sample, time_derivative
from neuromf.meanflow.objective import per_channel_distance


@pytest.fixture(autouse=True)
def _float64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def _batch(b=6, shape=(1, 4, 4, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn((b, *shape), generator=g)
    eps = torch.randn((b, *shape), generator=g)
    t = torch.rand(b, generator=g) * 0.8 + 0.15
    r = t * torch.rand(b, generator=g) * 0.9
    return x, eps, r, t


@pytest.mark.parametrize("strategy", ["exact", "fd"])
def test_mean_flow_identity_on_gaussian_flow(strategy):
    """Exact average velocity u and marginal tangent: V = u + h du/dt equals v(z, t) (the MeanFlow identity)."""
    flow = GaussianFlow(mu=1.5, s=0.5)
    x, eps, r, t = _batch()
    x = 1.5 + 0.5 * x
    z = (1 - t).view(-1, 1, 1, 1, 1) * x + t.view(-1, 1, 1, 1, 1) * eps
    u, du_dt = time_derivative(flow, z, r, t, flow.v(z, t), strategy=strategy, fd_step=1e-6)
    V = u + (t - r).view(-1, 1, 1, 1, 1) * du_dt
    tol = 1e-9 if strategy == "exact" else 1e-4
    torch.testing.assert_close(V, flow.v(z, t), atol=tol, rtol=tol)


def test_imf_target_equals_marginal_velocity():
    """iMF: tangent = the v-head (here the exact marginal v) -> Delta_u = V - v = v_marg - v_cond exactly."""
    flow = GaussianFlow(mu=-0.7, s=1.3)
    x, eps, r, t = _batch(seed=1)
    x = -0.7 + 1.3 * x
    obj = MeanFlowObjective(jvp="exact", norm_p=0.0)  # norm_p = 0: unit weights, loss = raw distance
    loss, diag = obj(flow, x, eps=eps, r=r, t=t)
    z = (1 - t).view(-1, 1, 1, 1, 1) * x + t.view(-1, 1, 1, 1, 1) * eps
    expected_u = ((flow.v(z, t) - (eps - x)) ** 2).flatten(1).mean(1).mean()
    expected_v = expected_u  # the v-head is the same exact v_marg
    torch.testing.assert_close(diag["loss_u"], expected_u)
    torch.testing.assert_close(diag["loss_v"], expected_v)
    torch.testing.assert_close(loss, expected_u + expected_v)


def test_meanflow_loss_is_zero_at_the_truth_for_point_mass_data():
    """Data = a point mu: u(z, r, t) = (z - mu)/t exactly, and the MeanFlow loss with tangent v = eps - x is 0."""
    flow = GaussianFlow(mu=0.8, s=0.0, use_v_head=False)
    _, eps, r, t = _batch(seed=2)
    x = torch.full_like(eps, 0.8)
    for strategy in ["exact", "fd"]:
        _, diag = MeanFlowObjective(jvp=strategy, fd_step=1e-6)(flow, x, eps=eps, r=r, t=t)
        assert diag["loss_raw"] < (1e-18 if strategy == "exact" else 1e-8)


def test_r_equals_t_reduces_to_flow_matching():
    """r = t: h = 0 so u_tgt = v and the loss is |u(z_t, t, t) - v|^2, whatever du/dt is; V = u."""
    model = tiny_model(use_v_head=False, conditioning="t_h").double()
    x, eps, _, t = _batch(shape=(2, 8, 8, 8))
    _, diag = MeanFlowObjective(jvp="exact", norm_p=0.0)(model, x, eps=eps, r=t.clone(), t=t)
    z = (1 - t).view(-1, 1, 1, 1, 1) * x + t.view(-1, 1, 1, 1, 1) * eps
    with torch.no_grad():
        fm = ((model(z, t, t) - (eps - x)) ** 2).flatten(1).mean(1).mean()
    torch.testing.assert_close(diag["loss_raw"], fm)
    assert diag["fm_fraction"] == 1.0


def test_adaptive_weight_and_per_channel_distance():
    delta = torch.zeros(2, 2, 2, 2, 2)
    delta[0, 0] = 1.0  # sample 0: channel 0 all ones -> per-channel means (1, 0)
    delta[1] = 2.0  # sample 1: both channels 2 -> (4, 4) for p=2
    torch.testing.assert_close(per_channel_distance(delta, 2.0), torch.tensor([[1.0, 0.0], [4.0, 4.0]]))
    obj = MeanFlowObjective(norm_p=1.0, norm_eps=0.01)
    loss, d, _ = obj.adaptive_loss(delta)
    torch.testing.assert_close(d, torch.tensor([0.5, 4.0]))
    torch.testing.assert_close(loss, torch.tensor(((0.5 / 0.51) + (4.0 / 4.01)) / 2))
    weighted = MeanFlowObjective(channel_weights=[3.0, 1.0], norm_p=0.0)
    _, d_w, _ = weighted.adaptive_loss(delta)
    torch.testing.assert_close(d_w, torch.tensor([0.75, 4.0]))
    mask = torch.zeros(2, 1, 2, 2, 2)
    mask[:, :, 0] = 1  # keep half of the voxels
    delta[0, 1, 0] = 3.0
    torch.testing.assert_close(per_channel_distance(delta, 2.0, mask)[0], torch.tensor([1.0, 9.0]))


def test_adaptive_weight_gradient_is_stopped():
    """w = 1/sg(d + c)^p: the gradient of w*d w.r.t. delta is w * dd/ddelta (no gradient through w)."""
    delta = torch.full((1, 1, 1, 1, 1), 2.0, requires_grad=True)
    loss, _, _ = MeanFlowObjective(norm_p=1.0, norm_eps=0.0).adaptive_loss(delta)
    loss.backward()
    torch.testing.assert_close(delta.grad.flatten(), torch.tensor([2 * 2.0 / 4.0]))


def test_time_sampler():
    sampler = TimeSampler(mu=-0.4, sigma=1.0, data_proportion=0.75)
    r, t = sampler(4000, generator=torch.Generator().manual_seed(0))
    assert (t >= r).all() and (r >= 0).all() and (t <= 1).all()
    assert abs(float((r == t).float().mean()) - 0.75) < 0.03  # Bernoulli(0.75): sd 0.007 at B = 4000
    # the max of two logit-normals has median sigmoid(mu + sigma * Phi^-1(sqrt(1/2)))
    q = torch.distributions.Normal(0, 1).icdf(torch.tensor(0.5**0.5))
    assert abs(float(t.median()) - float(torch.sigmoid(-0.4 + q))) < 0.02
    ru, tu = TimeSampler(distribution="uniform", data_proportion=0.0)(4000, generator=torch.Generator().manual_seed(1))
    assert abs(float((tu - ru).mean()) - 1 / 3) < 0.02  # E|U1 - U2| = 1/3
    with pytest.raises(ValueError, match="data_proportion"):
        TimeSampler(data_proportion=1.5)


@pytest.mark.parametrize("data_proportion", [0.25, 0.5, 0.75])
@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_time_sampler_share_of_r_equals_t_holds_in_expectation_at_small_batches(batch_size, data_proportion):
    """r = t per sample with probability data_proportion: over 4000 samples the share is within 4.5 standard
    deviations (<= 0.036) of it, at B = 1 too (a fixed round(p B) per batch gave 0 or 1 at B = 1, 2/3 at B = 3)."""
    sampler, g = TimeSampler(data_proportion=data_proportion), torch.Generator().manual_seed(batch_size)
    n = 4000 // batch_size
    fm = torch.stack([torch.eq(*sampler(batch_size, generator=g)) for _ in range(n)])  # (n, B)
    sd = (data_proportion * (1 - data_proportion) / fm.numel()) ** 0.5
    assert abs(float(fm.float().mean()) - data_proportion) < 4.5 * sd
    per_batch = fm.float().mean(1)
    assert (per_batch == 0).any() and (per_batch == 1).any()  # some batches all r != t, some all r = t
    for pos in range(batch_size):  # every position in the batch gets its share, not just the first ones
        assert abs(float(fm[:, pos].float().mean()) - data_proportion) < 4.5 * sd * batch_size**0.5


@pytest.mark.parametrize("nfe", [1, 2, 5])
def test_samplers_transport_exactly_with_the_true_average_velocity(nfe):
    """Euler steps with the exact u are exact: eps -> mu + s * eps for Gaussian data."""
    flow = GaussianFlow(mu=2.0, s=0.3)
    eps = torch.randn(3, 1, 4, 4, 4, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(sample(flow, eps, nfe=nfe), 2.0 + 0.3 * eps)


def test_one_step_sample_formula_and_determinism():
    model = tiny_model(use_v_head=True).double()
    eps = torch.randn(2, 2, 8, 8, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = eps - model(eps, torch.zeros(2), torch.ones(2))
    torch.testing.assert_close(sample(model, eps, 1), expected)
    torch.testing.assert_close(sample(model, eps, 3), sample(model, eps, 3))
    assert not torch.allclose(sample(model, eps, 1), sample(model, eps, 3))
