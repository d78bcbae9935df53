"""Quality per sampling step count and the verdict: each arm's objective at every evaluated step count
(``val/<metric>/nfe<N>``), the comparison of every arm with the best one at 1 step and at the largest step count
(seed-paired or Welch t-interval, Holm-adjusted p), whether the difference is resolved at this n, and how many seeds
would resolve it from the observed spread."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
from scipy import stats

from neuromf.report.core import CONFIDENCE, compare, holm, t_interval
from neuromf.tracking.keys import metric_base

FM = "FlowMatchingObjective"  # loss._target_ of the flow-matching arm: the multi-step reference level
NO_SPREAD = "n = 1: no spread, cannot tell"
MAX_SEEDS = 1000  # seeds_to_resolve searches up to this n


def step_key(metric: str, nfe: int) -> str:
    return f"val/{metric_base(metric)}/nfe{nfe}"


def step_counts(runs: pd.DataFrame, metric: str) -> list[int]:
    """The step counts N with a ``best val/<metric base>/nfe<N>`` column in the runs table, ascending."""
    base = metric_base(metric)
    pat = re.compile(rf"^best val/{re.escape(base or '')}/nfe(\d+)$")
    return sorted({int(m.group(1)) for c in runs.columns if (m := pat.match(c))})


def step_column(runs: pd.DataFrame, metric: str, nfe: int | None) -> str:
    """The runs-table column of the objective's metric at ``nfe`` steps ("objective" when ``nfe`` is None)."""
    return "objective" if nfe is None else f"best {step_key(metric, nfe)}"


def values_by_arm(runs: pd.DataFrame, column: str) -> dict[str, dict]:
    """{arm: {seed: value}} over used runs with a finite value (keyed by path where a seed repeats)."""
    out = {}
    for arm, g in runs.groupby("arm", sort=False):
        g = g[g["used"]]
        if column not in g:
            continue
        g = g[np.isfinite(g[column].astype(float))]
        keys = g["seed"] if g["seed"].is_unique else g["path"]
        vals = dict(zip(keys, g[column].astype(float), strict=True))
        if vals:
            out[arm] = vals
    return out


def seeds_to_resolve(arm: dict, best: dict, confidence: float = CONFIDENCE) -> int | None:
    """The smallest n (seeds per arm) at which the t-interval of the difference arm - best would be narrower
    (half-width) than the observed difference, from the observed spread: the standard deviation of the seed-paired
    differences when >= 2 seeds are shared, else sqrt(s_arm^2 + s_best^2) (both n >= 2). half(n) =
    t_{(1+c)/2, n-1} s / sqrt(n). None when there is no spread to tell (an arm with n = 1); 2 when the spread is
    0; MAX_SEEDS + 1 when even MAX_SEEDS would not (a difference of 0)."""
    shared = sorted(set(arm) & set(best), key=str)
    if len(shared) >= 2:
        d = np.array([arm[s] - best[s] for s in shared], float)
        diff, sd = float(d.mean()), float(d.std(ddof=1))
    elif len(arm) >= 2 and len(best) >= 2:
        a, b = np.array(list(arm.values()), float), np.array(list(best.values()), float)
        diff, sd = float(a.mean() - b.mean()), math.sqrt(a.var(ddof=1) + b.var(ddof=1))
    else:
        return None
    if sd == 0:
        return 2
    for n in range(2, MAX_SEEDS + 1):
        if stats.t.ppf((1 + confidence) / 2, n - 1) * sd / math.sqrt(n) < abs(diff):
            return n
    return MAX_SEEDS + 1


def compare_at(runs: pd.DataFrame, column: str, mode: str) -> dict | None:
    """The best arm by mean ``column`` and each other arm's comparison with it: {"best", "mean" {arm: mean},
    "n" {arm: n}, "rows": [{arm, diff, ci, p, p_holm, test, resolved, seeds}]}; None without values."""
    vals = values_by_arm(runs, column)
    if not vals:
        return None
    means = {a: float(np.mean(list(v.values()))) for a, v in vals.items()}
    best = (min if mode == "min" else max)(means, key=means.get)
    rows = []
    for arm, v in vals.items():
        if arm == best:
            continue
        c = compare(v, vals[best])
        rows.append({"arm": arm, "diff": c["diff"], "ci": c.get("ci"), "p": c.get("p", math.nan), "test": c["test"]})
    for row, p in zip(rows, holm([r["p"] for r in rows]), strict=True):
        row["p_holm"] = float(p)
        ci = row["ci"]
        row["resolved"] = bool(ci is not None and (ci[0] > 0 or ci[1] < 0) and p < 1 - CONFIDENCE)
        if "constant difference" in row["test"]:
            row["resolved"] = row["diff"] != 0
        row["seeds"] = seeds_to_resolve(vals[row["arm"]], vals[best])
    rows.sort(key=lambda r: abs(r["diff"]))
    return {"best": best, "mean": means, "n": {a: len(v) for a, v in vals.items()}, "rows": rows}


def _steps_word(nfe: int | None) -> str:
    return "the objective" if nfe is None else f"{nfe} step{'s' if nfe != 1 else ''}"


def seeds_text(row: dict, n_best: int, n_arm: int) -> str:
    if row["seeds"] is None or min(n_best, n_arm) < 2:
        return NO_SPREAD
    if row["seeds"] > MAX_SEEDS:
        return f"more than {MAX_SEEDS} seeds would be needed"
    return f"{row['seeds']} seeds per arm would resolve it"


def verdict(ctx) -> dict:
    """{"steps": [(nfe, comparison)], "text": paragraph} at 1 step (the smallest) and the largest step count."""
    counts = step_counts(ctx.runs, ctx.metric)
    shown = sorted({counts[0], counts[-1]}) if counts else [None]
    out = {"steps": [], "text": ""}
    parts = []
    better = "lower" if ctx.mode == "min" else "higher"
    for nfe in shown:
        cmp_ = compare_at(ctx.runs, step_column(ctx.runs, ctx.metric, nfe), ctx.mode)
        if cmp_ is None:
            continue
        out["steps"].append((nfe, cmp_))
        best = cmp_["best"]
        text = (
            f"At {_steps_word(nfe)}, the best arm is {best} ({cmp_['mean'][best]:.4g}, n = {cmp_['n'][best]}; "
            f"{better} is better)."
        )
        for r in cmp_["rows"]:
            n_arm = cmp_["n"][r["arm"]]
            if r["ci"] is None:
                stat = f"{r['diff']:+.4g} ({r['test']})"
            else:
                stat = (
                    f"{r['diff']:+.4g} [{r['ci'][0]:+.4g}, {r['ci'][1]:+.4g}], Holm p = {r['p_holm']:.3g}"
                    if math.isfinite(r["p_holm"])
                    else f"{r['diff']:+.4g} ({r['test']})"
                )
            state = "resolved" if r["resolved"] else "not resolved"
            text += f" {r['arm']}: {stat}, {state} at n = {n_arm}"
            if not r["resolved"] or min(n_arm, cmp_["n"][best]) < 2:
                text += f" ({seeds_text(r, cmp_['n'][best], n_arm)})"
            text += "."
        parts.append(text)
    if not parts:
        out["text"] = "No arm has a completed run with a finite objective: no verdict."
    else:
        out["text"] = (
            f"Verdict on `{ctx.metric if shown == [None] else 'val/' + str(metric_base(ctx.metric)) + '/nfeN'}` "
            f"(differences from the best arm, {CONFIDENCE:.0%} t-interval): " + " ".join(parts)
        )
    return out


def step_table(ctx, metric: str | None = None) -> pd.DataFrame:
    """Per arm x step count: n, mean, t-interval of ``metric`` (default: the objective's metric)."""
    metric = metric or ctx.metric
    rows = []
    for nfe in step_counts(ctx.runs, metric):
        for arm, vals in values_by_arm(ctx.runs, step_column(ctx.runs, metric, nfe)).items():
            x = np.array(list(vals.values()), float)
            lo, hi = t_interval(x)
            rows.append({"arm": arm, "nfe": nfe, "n": len(x), "mean": float(x.mean()), "lo": lo, "hi": hi})
    return pd.DataFrame(rows)


def one_step_gap(ctx) -> dict[str, float]:
    """{arm: mean at the smallest step count / mean at the largest} of the objective's metric (NaN where missing)."""
    counts = step_counts(ctx.runs, ctx.metric)
    if len(counts) < 2:
        return {}
    lo, hi = (ctx.arms_df.get(f"best {step_key(ctx.metric, n)} mean") for n in (counts[0], counts[-1]))
    if lo is None or hi is None:
        return {}
    return {a: (x / y if y else math.nan) for a, x, y in zip(ctx.arms_df["arm"], lo, hi, strict=True)}


def fm_arms(ctx) -> list[str]:
    """The arms trained with plain flow matching (``loss=fm``): their multi-step value is the level a one-step arm
    is compared with."""
    out = []
    for r, arm in zip(ctx.records, ctx.arms, strict=True):
        target = str(((r.config or {}).get("loss") or {}).get("_target_") or "")
        if target.endswith(FM) and arm not in out:
            out.append(arm)
    return out


def fm_level(ctx, table) -> tuple[str, int, float] | None:
    """(arm, step count, mean) of the flow-matching arm at its largest evaluated step count, or None."""
    for arm in fm_arms(ctx):
        g = table[table["arm"] == arm]
        if len(g):
            row = g.loc[g["nfe"].idxmax()]
            return arm, int(row["nfe"]), float(row["mean"])
    return None


def arm_interval(ctx, table: pd.DataFrame, arm: str, nfe: int) -> tuple[float, float, float, str] | None:
    """(mean, lo, hi, what the interval is) of ``arm`` at ``nfe`` steps from ``step_table(ctx)``: its t-interval
    over seeds when it has two or more, else its single run's evaluation interval (bootstrap over its samples);
    None when neither."""
    rows = table[(table["arm"] == arm) & (table["nfe"] == nfe)] if len(table) else table
    if not len(rows):
        return None
    row = rows.iloc[0]
    if row["n"] >= 2:
        return (
            float(row["mean"]),
            float(row["lo"]),
            float(row["hi"]),
            f"{CONFIDENCE:.0%} t-interval over {row['n']} seeds",
        )
    from neuromf.tracking.metrics import run_interval

    for r in ctx.members(arm):
        iv = run_interval(r, step_key(ctx.metric, nfe), ctx.mode)
        if iv is not None and iv.get("ci_lo") is not None and iv.get("ci_hi") is not None:
            return float(row["mean"]), iv["ci_lo"], iv["ci_hi"], "the run's evaluation interval"
    return None


def limit(ctx) -> str | None:
    """What limits the sweep at one step, from the collapsed reference level (one training volume repeated: the
    mean-brain sampler) and the flow-matching arm's multi-step level: the budget (not even multi-step flow matching
    gets past the collapsed level by more than its interval), the objective (flow matching does, no arm at 1 step
    does) or neither (an arm at 1 step does). None without a collapsed level or a 1-step value."""
    collapsed = ctx.obj_refs.get("collapsed")
    counts = step_counts(ctx.runs, ctx.metric)
    if collapsed is None or not math.isfinite(collapsed) or 1 not in counts:
        return None

    def clears(iv) -> bool:  # the whole interval on the good side of the collapsed level
        return iv is not None and (iv[2] < collapsed if ctx.mode == "min" else iv[1] > collapsed)

    def show(iv) -> str:
        return f"{iv[0]:.4g} [{iv[1]:.4g}, {iv[2]:.4g}; {iv[3]}]"

    table = step_table(ctx)
    ones = {a: iv for a in ctx.arms_df["arm"] if (iv := arm_interval(ctx, table, a, 1)) is not None}
    if not ones:
        return None
    best = (min if ctx.mode == "min" else max)(ones, key=lambda a: ones[a][0])
    head = f"At 1 step the best arm is {best}, {show(ones[best])}, against the collapsed level {collapsed:.4g}. "
    level = fm_level(ctx, table)
    fm = arm_interval(ctx, table, level[0], level[1]) if level is not None else None
    if clears(ones[best]):
        return head + "One-step sampling learns more than the mean volume here: its interval clears that level."
    if fm is None:
        return head + (
            "No arm's 1-step interval clears the collapsed level. Add the flow-matching arm (loss=fm) to tell whether "
            "the objective or the training budget is the limit."
        )
    fm_text = f"the flow-matching arm {level[0]} with {level[1]} steps scores {show(fm)}"
    if clears(fm):
        return head + (
            f"The objective is the limit: {fm_text}, clear of the collapsed level, while no arm's 1-step interval is."
        )
    return head + (
        f"The budget is the limit: even {fm_text}, not clear of the collapsed level, so at this compute no objective "
        "learns more than the mean volume and the ranking of the arms says little. Train longer (a larger "
        "budget.fm_steps; the CPU demo: experiment=demo_long)."
    )
