"""Equal training compute: a budget in counted FLOPs turned into the run's step count before it starts.

Arms whose steps cost differently (an extra no-grad forward, a JVP, a second pass) are compared at equal compute
when each trains for  max_steps = the largest K with  sum_{k < K} F(k) <= budget,  F(k) the FLOPs of training
step k of this run's objective on this run's network and batch, counted with torch's FlopCounterMode (conv /
matmul / attention, forward-mode tangent ops included, elementwise ops not; deterministic for a given network,
batch shape and objective). An objective whose step cost follows a schedule (AlphaFlow: FM-like while alpha = 1,
one extra forward while 0 < alpha < 1, a JVP at alpha = 0) declares `cost_phase(step)`; F is counted once per phase.

budget.flops       the budget in FLOPs, or
budget.fm_steps    the budget as that many steps of plain flow matching (one forward + backward of u(z, t, t))
                   on the same network and batch: `budget.fm_steps=300` gives every arm the compute of 300 FM steps.
The result is written to <run>/budget.json and status.json, and replaces trainer.max_steps (max_epochs -> -1).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.autograd.forward_ad as fwAD
from torch.utils._python_dispatch import _disable_current_modes
from torch.utils.flop_counter import FlopCounterMode

MAX_STEPS = 10**8  # a budget that buys more steps than this is a mistake in its units


@contextlib.contextmanager
def countable_forward_ad():
    """fwAD.make_dual/unpack_dual outside dispatch modes: under FlopCounterMode the dual is otherwise built by the
    native kernel and trips an internal assert (PyTorch 2.13). Counting only; restored on exit."""
    make, unpack = fwAD.make_dual, fwAD.unpack_dual

    def make_dual(*a, **k):
        with _disable_current_modes():
            return make(*a, **k)

    def unpack_dual(*a, **k):
        with _disable_current_modes():
            return unpack(*a, **k)

    fwAD.make_dual, fwAD.unpack_dual = make_dual, unpack_dual
    try:
        yield
    finally:
        fwAD.make_dual, fwAD.unpack_dual = make, unpack


def count_flops(step: Callable[[], object]) -> int:
    """FLOPs that FlopCounterMode counts while step() runs (conv/matmul/attention, forward-mode tangent ops included,
    elementwise ops not). A torch.compile'd function runs eagerly under the counter: its eager FLOPs are counted."""
    counter = FlopCounterMode(display=False)
    with countable_forward_ad(), counter:
        step()
    return counter.get_total_flops()


def training_step_flops(objective, net: torch.nn.Module, x: torch.Tensor, step: int = 0) -> int:
    """FLOPs of one training step (objective forward + backward) at global step `step` on the batch x (B, C, D, H,
    W); a seeded generator of its own, and the network's gradients cleared after (training is not disturbed)."""
    gen = torch.Generator(device=x.device).manual_seed(0)

    def one_step():
        loss, _ = objective(net, x, generator=gen, step=step)
        loss.backward()

    try:
        return count_flops(one_step)
    finally:
        net.zero_grad(set_to_none=True)
        if hasattr(objective, "last_point"):
            objective.last_point = None


def steps_for_budget(budget: float, step_flops: Callable[[int], int], phase: Callable[[int], object]) -> int:
    """The largest K with sum_{k<K} step_flops(k) <= budget; step_flops is called once per distinct phase(k)."""
    cost: dict[object, int] = {}
    spent, k = 0.0, 0
    while k < MAX_STEPS:
        p = phase(k)
        if p not in cost:
            cost[p] = int(step_flops(k))
            if cost[p] <= 0:
                raise ValueError(f"a training step at step {k} counts {cost[p]} FLOPs: cannot budget it")
        if spent + cost[p] > budget:
            return k
        spent += cost[p]
        k += 1
        if len(cost) == 1 and getattr(phase, "constant", False):  # one phase for ever: closed form
            return int(budget // cost[p])
    raise ValueError(f"budget {budget:.3g} FLOPs buys more than {MAX_STEPS} steps: check budget.* units")


def _phase_cost(objective, net, x, phases: dict[str, int], k: int) -> int:
    """FLOPs of training step k: its phase's count in `phases`, counted (at step k) the first time the phase comes."""
    phase_of = getattr(objective, "cost_phase", None)
    key = str(phase_of(k)) if phase_of else "all"
    if key not in phases:
        phases[key] = training_step_flops(objective, net, x, step=k)
    return phases[key]


def _counted_steps(total: float, objective, net, x, phases: dict[str, int]) -> int:
    """steps_for_budget for an objective whose schedule is in steps; FLOPs counted once per phase (into phases)."""
    phase_of = getattr(objective, "cost_phase", None)

    def step_cost(k: int) -> int:
        return _phase_cost(objective, net, x, phases, k)

    if phase_of is None:

        def phase_of_step(k):
            return None

        phase_of_step.constant = True  # type: ignore[attr-defined]
    else:
        phase_of_step = phase_of
    return steps_for_budget(total, step_cost, phase_of_step)


def _steps_within(total: float, objective, net, x, phases: dict[str, int], fm_cost: int) -> int:
    """The run's step count K. A schedule in fractions of the run (schedule_unit "run") depends on K itself: K is
    the fixed point of K -> steps_for_budget(schedule fitted to K), started from the FM step count (a cycle of
    rounding is broken at its smallest K), then lowered until the fitted schedule's summed FLOPs fit the budget."""
    if getattr(objective, "schedule_unit", "steps") != "run":
        return _counted_steps(total, objective, net, x, phases)
    k = max(1, int(total // fm_cost))
    seen: list[int] = []
    while k not in seen and len(seen) < 50:
        seen.append(k)
        k = max(1, _counted_steps(total, objective.for_run_length(k), net, x, phases))
    k = min(seen[seen.index(k) :]) if k in seen else k

    def spent(n: int) -> int:
        fitted = objective.for_run_length(max(n, 1))
        return sum(_phase_cost(fitted, net, x, phases, i) for i in range(n))

    while k > 0 and spent(k) > total:
        k -= 1
    return k


def resolve_budget(budget_cfg: dict | None, objective, net: torch.nn.Module, x: torch.Tensor) -> dict | None:
    """{'steps', 'budget_flops', 'step_flops' per phase, 'fm_step_flops', 'batch_shape'} for the run's budget
    config (None when no budget is set). Raises ValueError naming the key on a bad budget."""
    budget_cfg = dict(budget_cfg or {})
    flops, fm_steps = budget_cfg.get("flops"), budget_cfg.get("fm_steps")
    if flops is None and fm_steps is None:
        return None
    if flops is not None and fm_steps is not None:
        raise ValueError("budget.flops and budget.fm_steps are both set: give the budget one way")
    from neuromf.meanflow import FlowMatchingObjective

    fm_cost = training_step_flops(FlowMatchingObjective(), net, x)
    if fm_steps is not None:
        if not float(fm_steps) > 0:
            raise ValueError(f"budget.fm_steps={fm_steps}: must be > 0")
        total = float(fm_steps) * fm_cost
    else:
        if not float(flops) > 0:
            raise ValueError(f"budget.flops={flops}: must be > 0")
        total = float(flops)
    phases: dict[str, int] = {}
    steps = _steps_within(total, objective, net, x, phases, fm_cost)
    if steps < 1:
        raise ValueError(
            f"budget {total:.3g} FLOPs does not pay for one training step of this objective "
            f"({min(phases.values()):.3g} FLOPs): raise budget.flops / budget.fm_steps"
        )
    return {
        "steps": steps,
        "budget_flops": total,
        "budget_fm_steps": None if fm_steps is None else float(fm_steps),
        "fm_step_flops": fm_cost,
        "step_flops": phases,
        "step_cost_vs_fm": {p: round(c / fm_cost, 4) for p, c in phases.items()},
        "batch_shape": list(x.shape),
        # a schedule in fractions of the run, in steps of this budget (the run fits it to its final step count)
        "schedule": objective.for_run_length(steps).schedule_points() if hasattr(objective, "for_run_length") else {},
    }
