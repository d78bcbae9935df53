"""The opening statistics: how the objective is compared, notes on pooling and partial sweeps, the ranked arms."""

from __future__ import annotations

import math

from neuromf.report.core import (
    CONFIDENCE,
    NO_STATS,
    POOL_IGNORED,
    REFERENCE_NAMES,
    arm_summary,
)
from neuromf.report.quality import one_step_gap, step_counts


def blocks(ctx) -> list:
    sweep_dirs = ctx.sweep_dirs
    metric = ctx.metric
    mode = ctx.mode
    runs = ctx.runs
    arms_df = ctx.arms_df
    obj_refs = ctx.obj_refs
    n_max = int(arms_df["n"].max()) if len(arms_df) else 0
    intro = (
        f"Objective: `{metric}` ({'lower' if mode == 'min' else 'higher'} is better), best value over validation "
        "epochs of each run (the selection: it chose each run's checkpoint). Statistics over completed runs with a "
        f"finite objective: mean ± sample std (ddof=1) [Student t {CONFIDENCE:.0%} CI of the mean, n - 1 degrees of "
        "freedom: valid at small n, 3 seeds included, for roughly normal values]. Each arm is compared with the "
        "best: seed-paired t-test and paired t-interval of the difference when they share >= 2 seeds, else Welch's "
        "t-test and interval when both have n >= 2; p-values Holm-adjusted across the arms."
    )
    if obj_refs:
        intro += " Reference levels of the objective's metric: " + ", ".join(
            f"{name} {obj_refs[level]:.4g}" for level, name in REFERENCE_NAMES.items() if level in obj_refs
        )
    blocks = [("p", intro)]
    if len(sweep_dirs) > 1:
        blocks.append(
            (
                "p",
                f"Runs from the {len(sweep_dirs)} sweep dirs are pooled into one arm when their resolved configs are "
                "equal apart from the seed and the launch, logging and path keys (" + ", ".join(POOL_IGNORED) + ").",
            )
        )
    if n_max <= 1:
        blocks.append(("p", f"⚠ {NO_STATS}: every arm has at most one completed run; add seeds for CIs and tests."))
    running = int((runs["status"] == "running").sum())
    if running:
        blocks.append(
            ("p", f"⚠ partial sweep: {running} run(s) still running (marked); they are not in the statistics.")
        )
    table = arm_summary(arms_df)
    gap = one_step_gap(ctx)
    if gap:
        counts = step_counts(ctx.runs, ctx.metric)
        col = f"1-step gap (nfe{counts[0]} / nfe{counts[-1]})"
        table.insert(table.columns.get_loc("objective") + 1, col, [gap.get(a, math.nan) for a in table["arm"]])
    blocks += [("h2", "Arms (ranked)"), ("table", table, False)]
    return blocks
