"""Configuration differences between the arms, keys varying within arms and the fixed settings."""

from __future__ import annotations

import json

import pandas as pd

from neuromf.report.attribution import Attribution, attribute
from neuromf.report.core import (
    pool_ignored,
)


def blocks(ctx) -> list:
    records = ctx.records
    diff = ctx.diff
    fixed = ctx.fixed
    within = ctx.within
    blocks = []
    blocks.append(("h2", "Configuration differences between arms"))
    labelled = {k for r in records for k in r.arm}
    if len(diff):
        blocks.append(("table", diff, True))
        shown = sorted(k for k in labelled if len({r.arm.get(k) for r in records}) > 1)
        keys = [k for k in diff.index if not pool_ignored(k)]
        blocks.append(("p", _attribution_text(keys, shown, attribute(keys, records, ctx.arms))))
    else:
        blocks.append(("p", "The arms' resolved configurations are identical (apart from the replicate keys)."))
    if within:
        blocks.append(("p", f"Keys that vary within arms (replicates): {', '.join(within)}."))
    fixed_df = pd.DataFrame({"value": [json.dumps(v, default=str) for v in fixed.values()]}, index=list(fixed))
    fixed_df.index.name = "key"
    blocks.append(("details", f"Fixed settings of the sweep ({len(fixed)} keys, equal in every run)", fixed_df))
    return blocks


def _attribution_text(keys: list[str], shown: list[str], why: Attribution) -> str:
    """One paragraph: what the label sets, what the equal-compute budget sets, and what neither explains."""
    varies = ", ".join(shown) or "nothing"
    budget = (
        f" Set by the equal-compute budget (each arm's step count for the same training FLOPs, in its budget.json): "
        f"{', '.join(why.budget)}."
        if why.budget
        else ""
    )
    if why.label is None:  # the labels did not compose: every other difference may be a confound
        if not why.unexplained or len(keys) <= max(1, len(shown)):
            return f"The arm label {varies} resolves to: {', '.join(k for k in keys if k not in why.budget)}.{budget}"
        return (
            f"⚠ the arm label varies {varies} but {len(why.unexplained)} resolved keys differ between the arms: "
            f"{', '.join(why.unexplained)}. Each may explain a difference (a confound).{budget}"
        )
    text = f"The arm label {varies} resolves to: {', '.join(why.label) or 'no key'}.{budget}"
    if why.unexplained:
        text = (
            f"⚠ the arm label varies {varies} but {len(why.unexplained)} resolved keys differ between the arms that "
            f"it does not set: {', '.join(why.unexplained)}. Each may explain a difference (a confound). {text}"
        )
    return text
