"""Cost per arm (written to cost.csv)."""

from __future__ import annotations

from neuromf.report.core import cost_table


def blocks(ctx) -> list:
    cost = cost_table(ctx.records, ctx.arms)
    ctx.tables["cost.csv"] = cost
    return [("h2", "Cost per arm"), ("table", cost, False)]
