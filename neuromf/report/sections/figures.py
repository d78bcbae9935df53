"""The objective per arm and the training curves."""

from __future__ import annotations

import re
from pathlib import Path

from neuromf.report.core import LOSS_TERMS, plot_curves, plot_objective_bars
from neuromf.tracking.keys import metric_base


def _figures(records, arms, runs, arms_df, metric, refs, obj_refs, tmp: Path) -> list:
    blocks = [("h2", "Plots")]
    if plot_objective_bars(arms_df, runs, metric, tmp / "objective_by_arm.png", obj_refs):
        blocks.append(("img", f"{metric} per arm", tmp / "objective_by_arm.png"))
    keys = [metric, *(k for _, k in LOSS_TERMS)]
    for key in dict.fromkeys(keys):
        fname = "curve_" + re.sub(r"[^A-Za-z0-9]+", "_", key).strip("_") + ".png"
        if plot_curves(records, arms, key, tmp / fname, refs.get(metric_base(key) or "", {})):
            blocks.append(("img", f"{key} vs training step", tmp / fname))
    return blocks


def blocks(ctx) -> list:
    return _figures(ctx.records, ctx.arms, ctx.runs, ctx.arms_df, ctx.metric, ctx.refs, ctx.obj_refs, ctx.tmp)
