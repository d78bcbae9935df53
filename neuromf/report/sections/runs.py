"""The runs: a compact view (arm, seed, state, objective, notes) in the page; every column in the linked runs.csv."""

from __future__ import annotations

COMPACT = ["arm", "sweep", "seed", "status", "used", "objective", "notes"]


def blocks(ctx) -> list:
    runs = ctx.runs
    cols = [c for c in COMPACT if c in runs.columns and (c != "sweep" or runs["sweep"].nunique() > 1)]
    view = runs[cols].assign(used=runs["used"].map({True: "yes", False: "excluded"}))
    wide = len(runs.columns) - 1  # without the path
    return [
        ("h2", "Runs"),
        ("table", view, False),
        ("link", f"All {wide} columns of every run (loss terms, every metric, path): runs.csv", "runs.csv"),
    ]
