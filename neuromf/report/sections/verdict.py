"""The verdict, first on the page: the best arm, each other arm's difference with its t-interval and Holm-adjusted
p at 1 step and at the largest evaluated step count, whether it is resolved at this n and how many seeds would
resolve it (``neuromf.report.quality``); one figure of those differences."""

from __future__ import annotations

import math
from pathlib import Path

from neuromf.report.core import CONFIDENCE, FIG_WIDTH, figure_style, short
from neuromf.report.quality import limit, verdict


def plot_verdict(steps: list, mode: str, path: Path, order: list[str]) -> bool:
    """One panel per step count, the arms on a shared axis (in ``order``): each arm's difference from that step
    count's best arm (a star at 0) with its t-interval; resolved differences filled, unresolved hollow."""
    import matplotlib.pyplot as plt

    steps = [(nfe, c) for nfe, c in steps if c["rows"]]
    if not steps:
        return False
    arms = [a for a in order if any(a in c["mean"] for _, c in steps)]
    with figure_style():
        fig, axes = plt.subplots(
            1,
            len(steps),
            figsize=(FIG_WIDTH, 1.6 + 0.4 * len(arms)),
            squeeze=False,
            sharey=True,
            constrained_layout=True,
        )
        for ax, (nfe, c) in zip(axes[0], steps, strict=True):
            rows = {r["arm"]: r for r in c["rows"]}
            for i, arm in enumerate(arms):
                if arm == c["best"]:
                    ax.plot(0, i, "*", color="k", ms=11)
                    continue
                r = rows.get(arm)
                if r is None:
                    continue
                lo, hi = r["ci"] if r["ci"] is not None else (math.nan, math.nan)
                if math.isfinite(lo):
                    ax.plot([lo, hi], [i, i], color="tab:blue", lw=2)
                ax.plot(r["diff"], i, "o", color="tab:blue", mfc="tab:blue" if r["resolved"] else "white", ms=7)
            ax.axvline(0, color="k", lw=0.8)
            ax.set_yticks(range(len(arms)), [short(a) for a in arms])
            ax.set_title(("objective" if nfe is None else f"{nfe} step{'s' if nfe != 1 else ''}") + " (★ = best)")
            ax.set_xlabel(f"Δ vs best ({'lower' if mode == 'min' else 'higher'} is better)")
            ax.grid(axis="x", alpha=0.3)
        axes[0][0].invert_yaxis()
        fig.suptitle(f"Difference from the best arm, {CONFIDENCE:.0%} t-interval (filled = resolved)")
        fig.savefig(path)
        plt.close(fig)
    return True


def blocks(ctx) -> list:
    v = verdict(ctx)
    ctx.extra["verdict"] = {
        "text": v["text"],
        "steps": [{"nfe": nfe, **{k: c[k] for k in ("best", "mean", "n", "rows")}} for nfe, c in v["steps"]],
    }
    out = [("h2", "Verdict"), ("p", v["text"])]
    what_limits = limit(ctx)
    ctx.extra["verdict"]["limit"] = what_limits
    if what_limits:
        out.append(("p", what_limits))
    if plot_verdict(v["steps"], ctx.mode, ctx.tmp / "verdict.png", list(ctx.arms_df["arm"])):
        out.append(("img", "Each arm's difference from the best arm (verdict)", ctx.tmp / "verdict.png"))
    return out
