"""Configuration differences between the arms, keys varying within arms and the fixed settings."""

from __future__ import annotations

import json

import pandas as pd

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
        if len(keys) > max(1, len(shown)):
            blocks.append(
                (
                    "p",
                    f"⚠ the arm label varies {', '.join(shown) or 'nothing'} but {len(keys)} resolved keys differ "
                    f"between the arms: {', '.join(keys)}. Each may explain a difference (a confound).",
                )
            )
        else:
            blocks.append(("p", f"The arm label {', '.join(shown)} resolves to: {', '.join(keys)}."))
    else:
        blocks.append(("p", "The arms' resolved configurations are identical (apart from the replicate keys)."))
    if within:
        blocks.append(("p", f"Keys that vary within arms (replicates): {', '.join(within)}."))
    fixed_df = pd.DataFrame({"value": [json.dumps(v, default=str) for v in fixed.values()]}, index=list(fixed))
    fixed_df.index.name = "key"
    blocks.append(("details", f"Fixed settings of the sweep ({len(fixed)} keys, equal in every run)", fixed_df))
    return blocks
