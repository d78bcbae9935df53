"""Quality against training cost: each arm's objective against its runs' training device-hours (wall time x
devices x nodes; W&B's runtime where logged), or against the counted FLOPs of budget.json where no wall time is
known, one figure: an arm that is better only because it trained longer shows to the right."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from neuromf.report.core import FIG_WIDTH, draw_refs, figure_style, short, wall_time_s
from neuromf.run_dir import RunDir
from neuromf.tracking.metrics import device_count


def budget_flops(run_dir: Path) -> float | None:
    """The counted training FLOPs of the run's budget (budget.json ``budget_flops``), None without one."""
    try:
        data = json.loads(RunDir(run_dir).budget.read_text())
        v = float(data.get("budget_flops")) if isinstance(data, dict) and data.get("budget_flops") else None
    except (OSError, ValueError, TypeError):
        return None
    return v if v and math.isfinite(v) else None


def cost_points(ctx) -> pd.DataFrame:
    """One row per used run: arm, seed, objective, device-hours, FLOPs."""
    rows = []
    for r, arm in zip(ctx.records, ctx.arms, strict=True):
        if not r.ok:
            continue
        w = wall_time_s(r)
        tr = r.config.get("trainer", {}) if r.config else {}
        rows.append(
            {
                "arm": arm,
                "seed": r.seed,
                "objective": float(r.objective),
                "device-hours": device_count(tr) * w / 3600 if w is not None else math.nan,
                "FLOPs": budget_flops(r.path) or math.nan,
            }
        )
    return pd.DataFrame(rows)


def plot_cost(ctx, pts: pd.DataFrame, x: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    order = [a for a in ctx.arms_df["arm"] if a in set(pts["arm"])]
    with figure_style():
        fig, ax = plt.subplots(figsize=(FIG_WIDTH, 3.8 + 0.25 * ((len(order) + 1) // 2)), constrained_layout=True)
        for arm in order:
            g = pts[pts["arm"] == arm]
            color = f"C{list(ctx.arms_df['arm']).index(arm) % 10}"
            ax.plot(g[x], g["objective"], "o", color=color, alpha=0.35, ms=5)
            xerr = g[x].std(ddof=1) if len(g) > 1 else 0.0
            yerr = g["objective"].std(ddof=1) if len(g) > 1 else 0.0
            ax.errorbar(g[x].mean(), g["objective"].mean(), xerr=xerr, yerr=yerr, fmt="s", ms=8, capsize=3,
                        color=color, label=f"{short(arm)} (n={len(g)})")  # fmt: skip
        ax.margins(0.15)
        ax.set_xlabel(f"training {x} per run" + (" (devices x wall time)" if x == "device-hours" else " (counted)"))
        ax.set_ylabel(f"{ctx.metric} ({'lower' if ctx.mode == 'min' else 'higher'} is better)")
        draw_refs(ax, ctx.obj_refs)
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        arms_h = [(h, lab) for h, lab in zip(handles, labels, strict=True) if "(n=" in lab]
        refs_h = [(h, lab) for h, lab in zip(handles, labels, strict=True) if "(n=" not in lab]
        fig.legend(*zip(*arms_h, strict=True), loc="outside lower center", ncols=min(2, len(arms_h)))
        if refs_h:
            ax.legend(*zip(*refs_h, strict=True), loc="best")  # "best" avoids the edge labels (Text) too
        ax.set_title("Quality against training cost (squares: arm mean ± std; dots: runs)")
        fig.savefig(path)
        plt.close(fig)


def blocks(ctx) -> list:
    out = [("h2", "Quality against training cost")]
    pts = cost_points(ctx)
    x = next((c for c in ("device-hours", "FLOPs") if len(pts) and pts[c].notna().all()), None)
    if x is None:
        return out + [("p", "No wall time or counted FLOPs for every completed run: no cost comparison.")]
    ctx.tables["cost_points.csv"] = pts
    plot_cost(ctx, pts, x, ctx.tmp / "quality_vs_cost.png")
    means = pts.groupby("arm", sort=False)[x].mean()
    spread = means.max() / means.min() if means.min() > 0 else np.inf
    text = f"Each completed run's objective against its training {x}."
    if len(means) > 1 and spread > 1.5:
        text += (
            f" ⚠ the arms' mean training cost differs up to {spread:.3g}x: compare at equal cost (budget.flops / "
            "budget.fm_steps) before crediting the method."
        )
    return out + [("p", text), ("img", f"{ctx.metric} against training {x} per arm", ctx.tmp / "quality_vs_cost.png")]
