"""The evaluation metrics per arm with the reference levels: one table per evaluated step count, one row per metric
(each run's best value; mean ± std over the arm's runs); keys without a step count (legacy aliases, timings) in
one more table; the last validation's values and the bootstrap bounds folded away."""

from __future__ import annotations

import re

from neuromf.evaluation.registry import split_interval
from neuromf.report.core import metric_summary

_NFE = re.compile(r"^(best|final) val/([^/]+)/nfe(\d+) \((.)\)$")


def _label(row: str) -> str:
    return row.split(" ", 1)[1]


def blocks(ctx) -> list:
    out = [("h2", "Evaluation metrics (best per run; ↓ lower / ↑ higher is better) and reference levels")]
    evals = metric_summary(ctx.arms_df, ctx.refs, ("best val/", "final val/"))
    if len(evals):
        keep = [
            not _label(i).startswith("val/loss") and split_interval(_label(i).rsplit(" ", 1)[0])[1] is None
            for i in evals.index
        ]
        evals = evals[keep]
    if not len(evals):
        return out + [("p", "No evaluation metrics logged.")]
    best = evals[[i.startswith("best ") for i in evals.index]]
    steps: dict[int, list] = {}
    other = []
    for row in best.index:
        m = _NFE.match(row)
        if m:
            steps.setdefault(int(m.group(3)), []).append((row, f"{m.group(2)} ({m.group(4)})"))
        else:
            other.append(row)
    for nfe in sorted(steps):
        rows = steps[nfe]
        table = best.loc[[r for r, _ in rows]].rename(index=dict(rows))
        table.index.name = "metric"
        out += [("h3", f"{nfe} sampling step{'s' if nfe != 1 else ''}"), ("table", table, True)]
    if other:
        out += [("h3", "Not per step count" if steps else "Metrics"), ("table", best.loc[other], True)]
    final = evals[[i.startswith("final ") for i in evals.index]]
    if len(final):
        out.append(("details", f"The last validation's values ({len(final)} metrics)", final))
    return out
