"""Quality against the number of sampling steps: per arm, the objective's metric (and recall / coverage where
logged) at every evaluated step count (``val/<metric>/nfe<N>``, each run's best), one figure."""

from __future__ import annotations

from pathlib import Path

from neuromf.report.core import CONFIDENCE, FIG_WIDTH, draw_refs, figure_style, short
from neuromf.report.quality import fm_level, step_counts, step_table
from neuromf.tracking.keys import metric_base

EXTRA = ("recall", "coverage")  # drawn beside the objective where the runs logged them


def plot_steps(ctx, path: Path) -> bool:
    import matplotlib.pyplot as plt
    import numpy as np

    base = metric_base(ctx.metric)
    metrics = [f"val/{base}/nfe1"] + [f"val/{m}/nfe1" for m in EXTRA if m != base]
    tables = [(m, step_table(ctx, m)) for m in metrics]
    tables = [(m, t) for m, t in tables if len(t) and t["nfe"].nunique() >= 1]
    if not tables or tables[0][0] != metrics[0] or tables[0][1]["nfe"].nunique() < 2:
        return False
    order = list(ctx.arms_df["arm"])
    with figure_style():
        fig, axes = plt.subplots(
            1,
            len(tables),
            figsize=(FIG_WIDTH, 3.6 + 0.25 * ((len(order) + 1) // 2)),
            squeeze=False,
            constrained_layout=True,
        )
        colors = {a: f"C{i % 10}" for i, a in enumerate(order)}
        for ax, (m, t) in zip(axes[0], tables, strict=True):
            for arm in order:
                g = t[t["arm"] == arm].sort_values("nfe")
                if not len(g):
                    continue
                err = np.clip(np.nan_to_num(np.vstack([g["mean"] - g["lo"], g["hi"] - g["mean"]]), nan=0.0), 0, None)
                n = int(g["n"].max())
                ax.errorbar(g["nfe"], g["mean"], yerr=err, marker="o", ms=5, capsize=3, color=colors[arm],
                            label=f"{short(arm)} (n={n})")  # fmt: skip
            ax.set_xscale("log", base=2)
            ticks = sorted(t["nfe"].unique())
            ax.set_xticks(ticks, [str(int(x)) for x in ticks])
            ax.minorticks_off()
            ax.set_xlabel("sampling steps")
            name = metric_base(m)
            ax.set_title(name)
            ax.margins(y=0.15)
            level = fm_level(ctx, t)
            if level is not None:
                ax.axhline(level[2], color="k", ls="--", lw=1, label=f"fm at {level[1]} steps ({level[2]:.3g})")
            draw_refs(ax, ctx.refs.get(name, {}), label_inside=True)
            ax.grid(alpha=0.3)
        handles, labels = axes[0][0].get_legend_handles_labels()
        arms_h = [(h, lab) for h, lab in zip(handles, labels, strict=True) if "(n=" in lab]
        fig.legend(*zip(*arms_h, strict=True), loc="outside lower center", ncols=min(2, len(arms_h)))
        for ax in axes[0]:
            refs = [(h, lab) for h, lab in zip(*ax.get_legend_handles_labels(), strict=True) if "(n=" not in lab]
            if refs:
                ax.legend(*zip(*refs, strict=True), loc="best")  # the fm level; reference lines are named on the plot
        fig.suptitle(f"Quality against sampling steps (mean, {CONFIDENCE:.0%} t-interval over seeds)")
        fig.savefig(path)
        plt.close(fig)
    return True


def blocks(ctx) -> list:
    out = [("h2", "Quality against sampling steps")]
    counts = step_counts(ctx.runs, ctx.metric)
    if len(counts) < 2:
        return out + [
            ("p", f"The runs evaluated `{ctx.metric}` at {len(counts) or 'no'} step count(s): no curve over steps.")
        ]
    if plot_steps(ctx, ctx.tmp / "quality_vs_steps.png"):
        out.append(
            (
                "p",
                f"Each run's best value at every evaluated step count ({', '.join(map(str, counts))}); the 1-step "
                "gap in the arms table is the 1-step value over the largest-step value (1 = nothing lost by "
                "sampling in one step). " + noise_note(ctx),
            )
        )
        level = fm_level(ctx, step_table(ctx))
        if level is not None:
            out.append(
                (
                    "p",
                    f"Multi-step reference: the flow-matching arm {level[0]} at {level[1]} steps, "
                    f"{level[2]:.4g} (dashed): a one-step arm as good as it loses nothing to multi-step sampling.",
                )
            )
        out.append(("img", "Quality against sampling steps per arm", ctx.tmp / "quality_vs_steps.png"))
    return out


def noise_note(ctx) -> str:
    """Whether every run drew its evaluation samples from the same fixed noise (eval.seed), at every step count."""
    seeds = {(r.config or {}).get("eval", {}).get("seed") for r in ctx.records if r.config}
    seeds.discard(None)
    if len(seeds) == 1:
        return (
            f"Every arm, seed and step count starts from the same fixed evaluation noise (eval.seed={seeds.pop()}): "
            "the curves differ by the network alone."
        )
    if seeds:
        return f"⚠ the runs drew their evaluation noise from different eval.seed values ({sorted(seeds, key=str)})."
    return ""
