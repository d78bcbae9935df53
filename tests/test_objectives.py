"""The objectives (neuromf/meanflow/) against known answers on Gaussian data x ~ N(mu, s^2 I), where the flow
map is linear and the exact average velocity u(z_t, r, t) = (z_t - z_r)/(t - r) is known in closed form."""

import pytest
import torch
from engine_helpers import PerturbedGaussianFlow, tiny_model

from neuromf.meanflow import (
    AlphaFlowObjective,
    FlowMatchingObjective,
    MeanFlowObjective,
    SplitMeanFlowObjective,
    TimeSampler,
    WarmStartObjective,
    sample,
)

MU, S = 0.5, 0.6


@pytest.fixture(autouse=True)
def _float64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def _gaussian_batch(b=256, shape=(1, 4, 4, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    return MU + S * torch.randn((b, *shape), generator=g), g


def _grad(objective, delta: float, use_v_head=False, seed=0, **call) -> float:
    """d loss / d delta at the perturbed exact flow, one large Monte Carlo batch (fixed seed)."""
    flow = PerturbedGaussianFlow(MU, S, use_v_head=use_v_head, delta=delta)
    x, g = _gaussian_batch(seed=seed)
    loss, _ = objective(flow, x, generator=g, **call)
    (grad,) = torch.autograd.grad(loss, flow.delta)
    return float(grad)


SAMPLER = TimeSampler(distribution="uniform", data_proportion=0.25)
UNBIASED = {  # norm_p = 0: the adaptive weight would bias the expected gradient
    "fm": (FlowMatchingObjective(norm_p=0.0, time_sampler=SAMPLER), False),
    "meanflow": (MeanFlowObjective(norm_p=0.0, time_sampler=SAMPLER), False),
    "imf": (MeanFlowObjective(norm_p=0.0, time_sampler=SAMPLER), True),
    "splitmeanflow": (SplitMeanFlowObjective(norm_p=0.0, time_sampler=SAMPLER), False),
    "imf_schedule": (
        WarmStartObjective(
            norm_p=0.0, time_sampler=SAMPLER, fm_steps=10, ramp_steps=10, gap_gamma=4.0, gap_anneal_steps=100
        ),  # fmt: skip
        True,
    ),
    "alphaflow@alpha=0": (AlphaFlowObjective(norm_p=0.0, time_sampler=SAMPLER, anneal_end=10), True),
}


@pytest.mark.parametrize("name", list(UNBIASED))
def test_expected_gradient_vanishes_at_the_exact_u_and_not_at_a_perturbed_one(name):
    objective, v_head = UNBIASED[name]
    step = 50 if name != "alphaflow@alpha=0" else 20  # mid-schedule / past the anneal (alpha = 0)
    at_exact = _grad(objective, 0.0, v_head, step=step)
    perturbed = _grad(objective, 0.5, v_head, step=step)
    assert abs(at_exact) < 0.03, (name, at_exact)  # Monte Carlo noise at 256 x 64 draws
    assert abs(perturbed) > 0.15, (name, perturbed)  # > 5x the bound at the exact u


def test_alphaflow_at_alpha_zero_equals_meanflow_loss_and_gradients():
    model = tiny_model(use_v_head=True).double()
    x = torch.randn(3, 2, 8, 8, 8, generator=torch.Generator().manual_seed(1))
    alpha = AlphaFlowObjective(anneal_start=0, anneal_end=100)
    assert alpha.alpha(101) == 0.0 and alpha.alpha(0) == 1.0 and 0 < alpha.alpha(50) < 1
    grads = []
    for objective, step in ((alpha, 200), (MeanFlowObjective(), 200)):
        model.zero_grad()
        loss, diag = objective(model, x, generator=torch.Generator().manual_seed(7), step=step)
        loss.backward()
        grads.append((loss.detach(), diag["loss_u"], [p.grad.clone() for p in model.parameters()]))
    (la, ua, ga), (lm, um, gm) = grads
    torch.testing.assert_close(la, lm)
    torch.testing.assert_close(ua, um)
    for a, m in zip(ga, gm, strict=True):
        torch.testing.assert_close(a, m)


def test_alphaflow_discrete_target_bias_shrinks_as_alpha_goes_to_zero():
    """0 < alpha < 1: the Euler point z_t - alpha h v is off the ODE path, so even the exact u has a non-zero
    expected gradient; the bias vanishes with alpha (alpha = 0 is the unbiased MeanFlow target)."""

    def bias(a: float) -> float:
        obj = AlphaFlowObjective(norm_p=0.0, time_sampler=TimeSampler("uniform", data_proportion=0.0),
                                 alpha_start=a, alpha_end=a, clamp=0.0)  # fmt: skip
        return abs(_grad(obj, 0.0, seed=3)) / a  # the samples with r < t are weighted by alpha

    large, small = bias(0.9), bias(0.05)
    assert large > 0.1 and small < large / 5, (large, small)


def test_alphaflow_at_alpha_one_targets_v_without_an_extra_forward():
    calls = []
    flow = PerturbedGaussianFlow(MU, S)
    flow.register_forward_hook(lambda m, a, o: calls.append(a))
    x, g = _gaussian_batch(b=4)
    r, t = torch.full((4,), 0.2), torch.full((4,), 0.9)
    obj = AlphaFlowObjective(norm_p=0.0, alpha_start=1.0, alpha_end=1.0)
    eps = torch.randn(x.shape, generator=g)
    _, diag = obj(flow, x, eps=eps, r=r, t=t, step=0)
    z = 0.1 * x + 0.9 * eps
    expected = ((flow(z, r, t) - (eps - x)) ** 2).mean()
    torch.testing.assert_close(diag["loss_u"], expected.detach())
    assert len(calls) == 2  # the trained pass and the check above: no target forward


@pytest.mark.parametrize("delta", [0.0, 0.2])
def test_splitting_identity_holds_for_the_exact_u_and_fails_for_a_perturbed_one(delta):
    flow = PerturbedGaussianFlow(MU, S, delta=delta)
    g = torch.Generator().manual_seed(5)
    z = torch.randn(16, 1, 3, 3, 3, generator=g)
    t = torch.rand(16, generator=g) * 0.8 + 0.2
    r = t * torch.rand(16, generator=g) * 0.9
    lam = torch.rand(16, generator=g)
    with torch.no_grad():
        err = (SplitMeanFlowObjective.split_target(flow, z, r, t, lam) - flow(z, r, t)).abs().max()
    if delta == 0.0:
        assert err < 1e-12
    else:
        assert err > 1e-2


def test_fm_equals_the_r_equals_t_part_of_meanflow():
    model = tiny_model(use_v_head=False).double()
    x = torch.randn(4, 2, 8, 8, 8, generator=torch.Generator().manual_seed(2))
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    t = torch.tensor([0.2, 0.4, 0.6, 0.9])
    fm_loss, fm = FlowMatchingObjective(norm_p=1.0)(model, x, eps=eps, t=t)
    fm_grads = torch.autograd.grad(fm_loss, list(model.parameters()))
    mf_loss, mf = MeanFlowObjective(norm_p=1.0)(model, x, eps=eps, r=t.clone(), t=t)
    mf_grads = torch.autograd.grad(mf_loss, list(model.parameters()))
    torch.testing.assert_close(fm["loss_fm"], mf["loss_u_fm"])
    torch.testing.assert_close(fm_loss, mf_loss)
    for a, b in zip(fm_grads, mf_grads, strict=True):
        torch.testing.assert_close(a, b)


def test_instantaneous_sampler_never_asks_for_r_below_t_and_integrates_the_exact_flow():
    """Euler on v(z, t) = u(z, t, t) of the exact flow converges to its map z_0 = mu + s eps (first order)."""
    flow = PerturbedGaussianFlow(MU, S)
    seen = []
    flow.register_forward_hook(lambda m, a, o: seen.append(bool((a[1] == a[2]).all())))
    eps = torch.randn(8, 1, 2, 2, 2, generator=torch.Generator().manual_seed(0))
    errors = [(sample(flow, eps, nfe=n, sampler="instantaneous") - (MU + S * eps)).abs().max() for n in (50, 100)]
    assert all(seen) and len(seen) == 150
    assert errors[1] < 0.05 and errors[1] < 0.6 * errors[0]  # halves with the step
    with pytest.raises(ValueError, match="sampler"):
        sample(flow, eps, sampler="jump")


def test_warm_start_schedules():
    obj = WarmStartObjective(time_sampler=TimeSampler(data_proportion=0.5), fm_steps=10, ramp_steps=20,
                             gap_gamma=4.0, gap_anneal_steps=40)  # fmt: skip
    assert [obj.share(k) for k in (0, 9, 10, 20, 30, 99)] == [1.0, 1.0, 1.0, 0.75, 0.5, 0.5]
    assert [obj.gamma(k) for k in (0, 10, 30, 50, 60)] == [4.0, 4.0, 2.0, 0.0, 0.0]
    r, t = obj.draw_times(64, None, torch.Generator().manual_seed(0), step=5)
    assert torch.equal(r, t)  # warm start: flow matching only
    h = torch.tensor([0.0, 0.5, 1.0])
    torch.testing.assert_close(obj.gap_weight(h, 30), torch.tensor([1.0, 0.25, 0.0]))
    assert obj.gap_weight(h, 60) is None


def test_report_compares_a_term_only_where_it_measures_the_same_quantity(tmp_path):
    """meanflow (tangent v, 75 % r = t) vs imf (tangent v_hat, 50 %): loss_u is not the same quantity (a perfect
    model scores differently under each), so the report leaves it out and says why; u vs x prediction: compared."""
    import yaml
    from test_report_sweep import make_run

    from neuromf.report import build_report, incomparable_terms
    from neuromf.tracking.metrics import load_sweep

    loss = {"_target_": "neuromf.meanflow.MeanFlowObjective", "time_sampler": {"data_proportion": 0.75}}
    arms = {"u": (False, 0.75), "x": (True, 0.5)}
    for job, (pred, (v_head, dp)) in enumerate(arms.items()):
        run = tmp_path / "s" / str(job)
        make_run(run, pred, 0, 0.1 + job)
        cfg = {"seed": 0, "model": {"use_v_head": v_head}, "loss": loss | {"time_sampler": {"data_proportion": dp}}}
        (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    (tmp_path / "s" / "multirun.yaml").write_text("{}\n")
    why = incomparable_terms(load_sweep(tmp_path / "s"))
    assert set(why) == {"train/loss_u"}
    assert "the tangent (v-head v_hat or conditional v)" in why["train/loss_u"]
    assert "loss.time_sampler.data_proportion" in why["train/loss_u"]
    build_report([tmp_path / "s"])
    md = (tmp_path / "s" / "report" / "report.md").read_text()
    assert "⚠ `train/loss_u` is not compared across these arms" in md
    assert not any(line.startswith("| final train/loss_u") for line in md.splitlines())
    # the same objective with another prediction type: the same quantity, compared
    for job in (0, 1):
        cfg = {"seed": 0, "model": {"use_v_head": True}, "loss": loss}
        (tmp_path / "s" / str(job) / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert incomparable_terms(load_sweep(tmp_path / "s")) == {}


@pytest.mark.parametrize(
    "loss, terms, sampler",
    [
        ("imf", ["loss_u", "loss_v"], "average"),
        ("meanflow", ["loss_u"], "average"),
        ("fm", ["loss_fm"], "instantaneous"),
        ("alphaflow", ["loss_u", "loss_v"], "average"),
        ("splitmeanflow", ["loss_u", "loss_v"], "average"),
        ("fm_warmstart", ["loss_u", "loss_v"], "average"),
        ("imf_schedule", ["loss_u", "loss_v"], "average"),
    ],
)
def test_each_loss_choice_declares_its_terms_keys_and_sampler(loss, terms, sampler):
    from neuromf.dashboards import compose
    from neuromf.meanflow import sampler_of
    from neuromf.tracking.keys import expected_keys
    from neuromf.training.module import MeanFlowModule

    cfg = compose([f"loss={loss}"])
    keys = expected_keys(cfg)
    assert keys["train"][2 : 2 + len(terms)] == [f"train/{t}" for t in terms]
    assert keys["val"][1 : 1 + len(terms)] == [f"val/{t}" for t in terms]
    assert sampler_of(cfg["loss"]) == sampler
    module = MeanFlowModule(model=cfg["model"], loss=cfg["loss"], optim=cfg["optim"])
    assert module.sampler == sampler and list(module.loss_terms) == terms
    module.double()
    x = torch.randn(2, 1, 16, 16, 16)
    diag = {}  # at the start and the end of the schedules (AlphaFlow logs the JVP terms only once alpha = 0)
    objective = module.objective.for_run_length(100)  # a schedule in fractions of the run, fitted as fit() does
    for step in (0, 10**6):
        diag |= objective(module.net, x, generator=torch.Generator().manual_seed(0), step=step)[1]
    logged = {f"train/{k}" for k in diag} | {"train/jvp_t_norm", "train/jvp_z_norm"}  # the callback adds those two
    assert set(terms) <= set(diag) and set(keys["diagnostics"]) <= logged
