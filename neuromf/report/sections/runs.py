"""The runs: one row per run."""

from __future__ import annotations


def blocks(ctx) -> list:
    runs = ctx.runs
    blocks = []
    runs_view = runs.drop(columns=["path"]).assign(used=runs["used"].map({True: "yes", False: "excluded"}))
    blocks += [("h2", "Runs"), ("table", runs_view, False)]
    return blocks
