"""The loss terms per term, compared across arms only where they measure the same quantity."""

from __future__ import annotations

from neuromf.report.core import (
    incomparable_terms,
    metric_summary,
)


def blocks(ctx) -> list:
    records = ctx.records
    arms_df = ctx.arms_df
    refs = ctx.refs
    blocks = []
    blocks.append(("h2", "Loss terms (per term, like for like)"))
    blocks.append(
        (
            "p",
            "train/loss_raw and val/loss_raw are not compared: they are the sum of each arm's own loss terms. A term "
            "is compared across arms only where it measures the same quantity in each (same objective, tangent, "
            "time sampler and distance; — where an arm does not log it).",
        )
    )
    loss = metric_summary(arms_df, refs, ("final train/loss", "best val/loss"))
    skipped = incomparable_terms(records)
    if len(loss) and skipped:
        loss = loss[[i.split(" ")[1] not in skipped for i in loss.index]]
    for key, why in skipped.items():
        blocks.append(
            (
                "p",
                f"⚠ `{key}` is not compared across these arms: it measures a different quantity in them "
                f"({why} differ), so a perfect model scores differently under each; compare the evaluation "
                "metrics instead.",
            )
        )
    if len(loss):
        blocks.append(("table", loss, True))
    elif skipped:
        blocks.append(("p", "No loss term measures the same quantity in every arm: no loss comparison."))
    else:
        blocks.append(("p", "No run logged per-term losses (train/loss_u): older runs; no loss comparison."))
    return blocks
