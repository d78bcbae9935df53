"""The evaluation metrics per arm with the reference levels."""

from __future__ import annotations

from neuromf.report.core import (
    metric_summary,
)


def blocks(ctx) -> list:
    arms_df = ctx.arms_df
    refs = ctx.refs
    blocks = []
    evals = metric_summary(arms_df, refs, ("best val/", "final val/"))
    evals = evals[[not i.split(" ", 1)[1].startswith("val/loss") for i in evals.index]] if len(evals) else evals
    blocks.append(("h2", "Evaluation metrics (best per run; ↓ lower / ↑ higher is better) and reference levels"))
    blocks.append(("table", evals, True) if len(evals) else ("p", "No evaluation metrics logged."))
    return blocks
