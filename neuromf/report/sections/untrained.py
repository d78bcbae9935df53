"""One ⚠ line per arm whose objective is not clearly better than noise or a collapsed sampler."""

from __future__ import annotations

from neuromf.report.core import untrained_warnings


def blocks(ctx) -> list:
    return untrained_warnings(ctx.arms_df, ctx.obj_refs, ctx.mode)
