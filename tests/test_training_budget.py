"""Equal training compute: a FLOP budget turned into each arm's step count (neuromf/training/budget.py)."""

from __future__ import annotations

import json

import pytest
import torch
from hydra import compose, initialize_config_dir
from training_helpers import CONF, TINY_TRAIN

from neuromf.meanflow import AlphaFlowObjective, FlowMatchingObjective, MeanFlowObjective
from neuromf.models import MeanFlowUNet
from neuromf.training.budget import resolve_budget, steps_for_budget, training_step_flops


def test_steps_for_a_constant_cost_are_the_budget_over_the_step_cost():
    calls = []

    def cost(k):
        calls.append(k)
        return 7

    def phase(k):
        return None

    phase.constant = True
    assert steps_for_budget(70, cost, phase) == 10
    assert steps_for_budget(76, cost, phase) == 10 and steps_for_budget(6, cost, phase) == 0
    assert len(calls) == 3  # counted once per call, never per step


def test_steps_for_a_phased_cost_add_up_each_phase():
    # cost 1 for steps 0-4, 3 after: 11 FLOPs pay 5 x 1 + 2 x 3 = 11 (a third costly step would make 14)
    counted = []

    def cost(k):
        counted.append(k)
        return 1 if k < 5 else 3

    assert steps_for_budget(11, cost, lambda k: k < 5) == 7
    assert counted == [0, 5]  # once per phase, at its first step
    assert steps_for_budget(13, cost, lambda k: k < 5) == 7 and steps_for_budget(14, cost, lambda k: k < 5) == 8


def _net(v_head: bool) -> MeanFlowUNet:
    torch.manual_seed(0)
    net = MeanFlowUNet(in_channels=1, num_channels=(8, 8, 16), attention_levels=(False, False, False),
                       norm_num_groups=4, num_head_channels=8, use_v_head=v_head)  # fmt: skip
    with torch.no_grad():  # zero-initialised output convs would make the gradients trivial (not the counts)
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return net


def test_a_step_is_counted_without_disturbing_training():
    net, x = _net(v_head=True), torch.randn(2, 1, 16, 16, 16)
    state = torch.get_rng_state()
    fm = training_step_flops(FlowMatchingObjective(), net, x)
    imf = training_step_flops(MeanFlowObjective(jvp="exact"), net, x)
    assert training_step_flops(MeanFlowObjective(jvp="exact"), net, x) == imf  # deterministic
    assert imf > 1.3 * fm > 0  # the JVP and the tangent pass cost more than one forward + backward
    assert all(p.grad is None for p in net.parameters())
    assert torch.equal(torch.get_rng_state(), state)


def test_alphaflow_is_budgeted_phase_by_phase():
    net, x = _net(v_head=False), torch.randn(2, 1, 16, 16, 16)
    af = AlphaFlowObjective(anneal_start=0, anneal_end=10, schedule="linear", clamp=0.0)
    assert [af.cost_phase(k) for k in (0, 5, 10, 11)] == ["alpha=1", "0<alpha<1", "alpha=0", "alpha=0"]
    fm = training_step_flops(FlowMatchingObjective(), net, x)
    c = {k: training_step_flops(af, net, x, step=k) for k in (0, 5, 10)}
    assert c[0] < c[5] < c[10]  # no extra forward < one no-grad forward more < the JVP
    budget = 40 * fm
    got = resolve_budget({"fm_steps": 40}, af, net, x)
    spent, k = 0, 0
    while spent + c[0 if k == 0 else 5 if k < 10 else 10] <= budget:
        spent += c[0 if k == 0 else 5 if k < 10 else 10]
        k += 1
    assert got["steps"] == k and got["fm_step_flops"] == fm
    assert got["step_flops"] == {"alpha=1": c[0], "0<alpha<1": c[5], "alpha=0": c[10]}


def test_bad_budgets_name_the_key():
    net, x = _net(v_head=False), torch.randn(1, 1, 16, 16, 16)
    with pytest.raises(ValueError, match="budget.flops and budget.fm_steps"):
        resolve_budget({"flops": 1e9, "fm_steps": 3}, FlowMatchingObjective(), net, x)
    with pytest.raises(ValueError, match="does not pay for one training step"):
        resolve_budget({"flops": 10.0}, FlowMatchingObjective(), net, x)
    assert resolve_budget({"flops": None, "fm_steps": None}, FlowMatchingObjective(), net, x) is None


def _cfg(*extra):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        return compose(config_name="train", overrides=[*TINY_TRAIN, *extra])


def _budgeted(run_dir, *overrides):
    """(cfg, module, budget record) of a run composed with `overrides`, its budget applied before fit."""
    from neuromf.data.datamodule import datamodule_for_run
    from neuromf.train import apply_budget, build_module

    cfg = _cfg(*overrides)
    dm = datamodule_for_run(cfg, run_dir)
    dm.prepare_data()
    dm.setup("fit")
    module = build_module(cfg)
    return cfg, module, apply_budget(cfg, module, dm)


def test_arms_of_one_budget_get_the_steps_their_cost_pays_for(demo_latents, tmp_path):
    """fm at budget.fm_steps=8 trains 8 steps; iMF, dearer per step, fewer: floor(8 FM steps / its step cost),
    rounded down to a multiple of budget.validations, validated at equal intervals ending at the last step."""
    steps = {}
    for loss in ("fm", "imf"):
        cfg, _, budget = _budgeted(tmp_path / loss, f"loss={loss}", "budget.fm_steps=8", "budget.validations=2")
        ratio = budget["step_flops"]["all"] / budget["fm_step_flops"]
        assert budget["budget_steps"] == int(8 // ratio) and budget["steps"] == budget["budget_steps"] // 2 * 2
        assert cfg.trainer.max_steps == budget["steps"] and cfg.trainer.max_epochs == -1
        assert cfg.trainer.check_val_every_n_epoch is None and cfg.trainer.val_check_interval == budget["steps"] // 2
        steps[loss] = budget["steps"]
    assert steps["fm"] == 8 and 0 < steps["imf"] < 8


@pytest.mark.slow
def test_a_budgeted_run_trains_its_steps_and_records_them(demo_latents, tmp_path):
    from neuromf.train import train

    run = tmp_path / "run"
    cfg = _cfg("loss=imf", "budget.fm_steps=6", "budget.validations=1", "+trainer.limit_val_batches=1")
    train(cfg, run)
    budget = json.loads((run / "budget.json").read_text())
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "completed" and status["budget_steps"] == budget["steps"] >= 1
    assert status["global_step"] == budget["steps"]
    rows = (run / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    steps = [r.split(",") for r in rows[1:]]
    val_steps = {int(float(r[header.index("step")])) for r in steps if r[header.index("val/loss_raw")]}
    assert max(val_steps) == budget["steps"] - 1  # validated at the last step (Lightning logs step - 1)


def _spent(af: AlphaFlowObjective, n: int, c: dict[str, int]) -> int:
    return sum(c[af.cost_phase(k)] for k in range(n))


def test_a_schedule_in_fractions_of_the_run_completes_within_the_budgeted_run():
    """AlphaFlow with alpha annealed over the first 2/3 of the run (schedule_unit=run): the budget buys the largest K
    whose summed phase costs, with the schedule fitted to K itself, fit the budget (known answer by enumeration),
    and alpha reaches 0 (the MeanFlow target) inside those K steps."""
    net, x = _net(v_head=False), torch.randn(2, 1, 16, 16, 16)
    af = AlphaFlowObjective(schedule_unit="run", anneal_start=0.0, anneal_end=0.667, schedule="linear", clamp=0.0)
    fm = training_step_flops(FlowMatchingObjective(), net, x)
    got = resolve_budget({"fm_steps": 30}, af, net, x)
    c = got["step_flops"]
    assert set(c) == {"alpha=1", "0<alpha<1", "alpha=0"}
    fits = [n for n in range(1, 31) if _spent(af.for_run_length(n), n, c) <= 30 * fm]
    assert got["steps"] == max(fits)
    fitted = af.for_run_length(got["steps"])
    assert got["schedule"] == {"anneal_start": 0, "anneal_end": round(0.667 * got["steps"])}
    assert fitted.alpha(got["steps"] - 1) == 0.0 and fitted.alpha(0) == 1.0  # the curriculum ends inside the run


def test_run_fractions_are_fitted_to_the_run_length_and_refused_unfitted():
    af = AlphaFlowObjective(schedule_unit="run", anneal_start=0.0, anneal_end=0.667)
    with pytest.raises(RuntimeError, match="for_run_length"):
        af.alpha(0)  # a fraction is not a step: never used as one
    fitted = af.for_run_length(300)
    assert (fitted.anneal_start, fitted.anneal_end, fitted.schedule_unit) == (0, 200, "steps")
    assert fitted.alpha(0) == 1.0 and fitted.alpha(200) == 0.0 and 0 < fitted.alpha(100) < 1
    assert af.for_run_length(1).anneal_end == 1  # a one-step run still anneals over one step
    steps_af = AlphaFlowObjective(anneal_start=0, anneal_end=50)
    assert steps_af.for_run_length(300) is steps_af  # a schedule in steps is kept as it is
    with pytest.raises(ValueError, match="loss.anneal_end=1.5"):
        AlphaFlowObjective(schedule_unit="run", anneal_start=0.0, anneal_end=1.5)
    with pytest.raises(ValueError, match="finite run length"):
        af.for_run_length(float("inf"))


@pytest.mark.parametrize("loss", ["alphaflow", "fm_warmstart", "imf_schedule"])
def test_every_scheduled_objective_finishes_its_schedule_within_its_budget(loss, demo_latents, tmp_path):
    """sweep=objectives gives each arm the steps its cost pays for; the scheduled objectives' configs are in
    fractions of the run, so each one's last phase (alpha = 0, the full MeanFlow / iMF objective) starts inside
    the steps it gets."""
    _, module, budget = _budgeted(tmp_path / loss, f"loss={loss}", "budget.fm_steps=12", "budget.validations=1")
    fitted = module.objective.for_run_length(budget["steps"])
    last = budget["steps"] - 1
    if loss == "alphaflow":
        assert fitted.alpha(last) == 0.0 and budget["schedule"]["anneal_end"] <= last
    else:
        assert fitted.share(last) == fitted.time_sampler.data_proportion  # out of the warm start
        assert fitted.fm_steps + fitted.ramp_steps <= last and fitted.gamma(last) == 0.0


@pytest.mark.slow
@pytest.mark.parametrize(("loss", "key", "first", "last"), [("alphaflow", "alpha", 1.0, 0.0),
                                                            ("fm_warmstart", "fm_share", 1.0, 0.5)])  # fmt: skip
def test_a_training_run_fits_its_schedule_to_its_length(loss, key, first, last, demo_latents, tmp_path):
    """trainer.max_steps=9, no budget: the schedule (fractions of the run) is fitted when fit starts, so the logged
    alpha / r = t share starts at the curriculum's start and ends at its end within the 9 steps."""
    import csv

    from neuromf.train import train

    run = tmp_path / "run"
    cfg = _cfg(f"loss={loss}", "trainer.max_steps=9", "trainer.max_epochs=-1", "+trainer.limit_val_batches=1",
               "callbacks.diagnostics.every_n_steps=1", "loss.time_sampler.data_proportion=0.5")  # fmt: skip
    train(cfg, run)
    with open(run / "metrics.csv") as f:
        values = [float(r[f"train/{key}"]) for r in csv.DictReader(f) if r.get(f"train/{key}")]
    assert len(values) >= 2 and values[0] == pytest.approx(first) and values[-1] == pytest.approx(last)
