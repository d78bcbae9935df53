"""The report's evaluation-interval section: each arm's objective with the bootstrap interval its evaluation logged
over its own generated samples (``val/<metric>/nfeN_se``, ``_ci_lo``, ``_ci_hi``; ``neuromf.evaluation.bootstrap``),
and whether an arm's difference from the best arm is smaller than that interval; and the k-NN reference set.

A single-seed comparison thereby shows how far the number itself could move with another set of samples; the
seed-to-seed spread (the arms table) is a separate, additional source of variation.
"""

from __future__ import annotations

import math

import pandas as pd

from neuromf.tracking.metrics import RunRecord, eval_summary, run_interval

__all__ = ["blocks", "interval_blocks", "knn_reference"]

Z95 = 1.959963984540054  # two-sided 95 % normal quantile: the combined interval of a difference


def knn_reference(records: list[RunRecord]) -> dict | None:
    """The k-NN metrics' reference set a run's evaluation recorded ({set, size, k, description}), or None."""
    for r in records:
        ref = eval_summary(r).get("knn_reference")
        if isinstance(ref, dict) and ref.get("size"):
            return ref
    return None


def _fmt(x: float) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.4g}"


def interval_table(records: list[RunRecord], arms: list[str], ranked: list[str], key: str, mode: str) -> pd.DataFrame:
    """Per arm (in ``ranked`` order; completed runs only): n, objective (mean of the runs' best values), the
    evaluation standard error of that mean (sqrt(sum se^2) / n), the single run's 95 % interval, the difference
    from the first arm and whether it is within the two evaluations' combined 95 % interval."""
    per_arm: dict[str, list[dict]] = {}
    for r, arm in zip(records, arms, strict=True):
        iv = run_interval(r, key, mode) if r.ok else None
        if iv is not None:
            per_arm.setdefault(arm, []).append(iv)
    rows = []
    for arm in ranked:
        ivs = per_arm.get(arm)
        if not ivs:
            continue
        n = len(ivs)
        value = sum(i["value"] for i in ivs) / n
        se = math.sqrt(sum(i.get("se", math.nan) ** 2 for i in ivs)) / n
        ci = f"[{_fmt(ivs[0].get('ci_lo'))}, {_fmt(ivs[0].get('ci_hi'))}]" if n == 1 else "—"
        rows.append({"arm": arm, "n": n, "value": value, "eval se": se, "eval 95% CI (one run)": ci})
    if not rows:
        return pd.DataFrame()
    best = rows[0]
    for row in rows:
        if row is best:
            row["Δ vs best"], row["Δ vs the interval"] = "best", ""
            continue
        delta = row["value"] - best["value"]
        half = Z95 * math.sqrt(row["eval se"] ** 2 + best["eval se"] ** 2)
        row["Δ vs best"] = f"{delta:+.4g}"
        word = "smaller" if abs(delta) < half else "larger"
        row["Δ vs the interval"] = f"{word} (±{half:.3g})" if math.isfinite(half) else "—"
    df = pd.DataFrame(rows)
    df["value"], df["eval se"] = df["value"].map(_fmt), df["eval se"].map(_fmt)
    return df


def interval_blocks(records: list[RunRecord], arms: list[str], ranked: list[str], key: str, mode: str) -> list:
    """Report blocks: the evaluation-interval table (when the runs logged intervals), one ⚠ line per arm whose
    difference from the best is smaller than the interval, and the k-NN reference set."""
    blocks: list = []
    table = interval_table(records, arms, ranked, key, mode)
    if len(table):
        blocks.append(("h2", f"Evaluation interval of {key} (bootstrap over each run's generated samples)"))
        blocks.append(
            (
                "p",
                "Each evaluation resamples its own generated samples (features computed once, the metric "
                "recomputed; seeded) and logs the standard error and 95 % percentile interval beside the value. "
                "An arm whose difference from the best is within the combined interval (1.96 × √(se² + se_best²)) "
                "is not distinguishable from it by these samples, whatever the seeds say.",
            )
        )
        blocks.append(("table", table, False))
        close = table[table["Δ vs the interval"].str.startswith("smaller")]
        for _, row in close.iterrows():
            blocks.append(
                (
                    "p",
                    f"⚠ arm {row['arm']}: its difference from the best ({row['Δ vs best']}) is smaller than the "
                    f"evaluation's own interval ({row['Δ vs the interval'].split(' ', 1)[1]}).",
                )
            )
    ref = knn_reference(records)
    if ref:
        blocks.append(
            (
                "p",
                f"k-NN metrics (precision, recall, density, coverage; k = {ref.get('k')}) are measured against "
                f"{ref['size']} {ref.get('description') or ref.get('set')}; the Fréchet distance and KID against "
                "the validation latents.",
            )
        )
    return blocks


def blocks(ctx) -> list:
    return interval_blocks(ctx.records, ctx.arms, list(ctx.arms_df["arm"]), ctx.metric, ctx.mode)
