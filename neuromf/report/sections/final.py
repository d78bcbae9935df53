"""The final table: each run's selected checkpoint scored on the test split (python -m neuromf.evaluate)."""

from __future__ import annotations

from neuromf.report.core import (
    CONFIDENCE,
    final_tables,
)


def final_blocks(records, arms, metric, mode) -> list:
    """The final table: each run's selected checkpoint scored on the test split (python -m neuromf.evaluate)."""
    per_arm, per_run = final_tables(records, arms, metric, mode)
    blocks = [("h2", "Final evaluation (test split)")]
    if per_arm.empty:
        return blocks + [
            (
                "p",
                "No run has a final evaluation: the objective above is the selection (the best of several validation "
                "passes on the same set), not an estimate of sample quality; `python -m neuromf.evaluate <sweep dir>` "
                "scores each run's selected checkpoint on the test split.",
            )
        ]
    text = (
        "Each run's checkpoint selected by the validation objective (the selection column, which is optimistic: the "
        "best of several passes on one set) scored once on the held-out test split with more samples, at every "
        f"configured step count (mean ± std [Student t {CONFIDENCE:.0%} CI] over the arm's runs)."
    )
    missing = len(records) - len(per_run)
    if missing:
        text += f" {missing} run(s) have no final evaluation and are not in this table."
    notes = sorted({n for n in per_run["note"] if n})
    blocks += [("p", text), ("table", per_arm, False)]
    blocks += [("p", f"Note: {n}") for n in notes]
    blocks.append(("details", f"Final evaluation per run ({len(per_run)} runs)", per_run.set_index("arm")))
    return blocks


def blocks(ctx) -> list:
    return final_blocks(ctx.records, ctx.arms, ctx.metric, ctx.mode)
