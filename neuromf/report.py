"""Compare the ablation arms of one or more sweeps: statistics over seeds, plots, report.md / report.html.

Usage::

    python -m neuromf.report <sweep_dir> [<sweep_dir> ...] [--metric val/swd] [--mode min] [--out DIR]

Runs are grouped into arms by their Hydra overrides minus ``seed``. Only completed runs with a finite
objective count in the statistics; failed / diverged / running runs are listed and marked.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from neuromf.tracking.metrics import DEFAULT_OBJECTIVE, RunRecord, load_sweep

# Loss terms compared per term (never train/loss_raw: it is loss_u + loss_v with a v-head, loss_u without).
LOSS_TERMS = [("final", "train/loss_u"), ("final", "train/loss_v"), ("best", "val/loss_u"), ("best", "val/loss_v")]
SUM_KEYS = ("train/loss_raw", "val/loss_raw")
REPLICATE_KEYS = ("seed",)  # config keys that vary between seeds of one arm by design
CONFIG_SKIP = ("hydra",)  # config subtrees that are bookkeeping, not settings
BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 0
NO_STATS = "n = 1: no statistics"


# ----------------------------------------------------------------------------------------- grouping
def sweep_labels(sweep_dirs: list[Path]) -> list[str]:
    """Short unique labels for sweep dirs (dir name, or parent/name when names clash)."""
    names = [p.resolve().name for p in sweep_dirs]
    if len(set(names)) == len(names):
        return names
    return [f"{p.resolve().parent.name}/{p.resolve().name}" for p in sweep_dirs]


def assign_arms(records: list[RunRecord], sweeps: list[str] | None = None) -> list[str]:
    """Arm label per run: the overrides (minus seed) that vary across runs, prefixed by sweep when several."""
    keys = sorted({k for r in records for k in r.arm})
    varying = [k for k in keys if len({r.arm.get(k) for r in records}) > 1]
    labels = []
    for i, r in enumerate(records):
        shown = varying or list(r.arm)
        label = ", ".join(f"{k}={r.arm.get(k, '-')}" for k in shown) or "(defaults)"
        if sweeps is not None and len(set(sweeps)) > 1:
            label = f"{sweeps[i]}: {label}"
        labels.append(label)
    return labels


def metric_columns(records: list[RunRecord]) -> list[tuple[str, str]]:
    """MAIN_METRICS entries that at least one run logged."""
    return [(agg, m) for agg, m in MAIN_METRICS if any(m in getattr(r, agg) for r in records)]


# ------------------------------------------------------------------------------------------- tables
def run_table(records: list[RunRecord], arms: list[str]) -> pd.DataFrame:
    """One row per run: arm, seed, status, objective, main metrics, notes, path."""
    cols = metric_columns(records)
    rows = []
    for r, arm in zip(records, arms, strict=True):
        row = {"arm": arm, "seed": r.seed, "status": r.status, "used": r.ok, "objective": r.objective}
        for agg, m in cols:
            row[f"{agg} {m}"] = getattr(r, agg).get(m, np.nan)
        row["notes"] = "; ".join(r.notes)
        row["path"] = str(r.path)
        rows.append(row)
    return pd.DataFrame(rows)


def _mean_std(values: np.ndarray) -> tuple[float, float]:
    if len(values) == 0:
        return math.nan, math.nan
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else math.nan


def arm_table(runs: pd.DataFrame, mode: str = "min") -> pd.DataFrame:
    """Per arm: n used / n runs, mean and sample std (ddof=1) of the objective and of the main metrics,
    rank (1 = best mean objective), Welch t-test and 95% CI of (arm - best arm) when both have n >= 2."""
    metric_cols = [c for c in runs.columns if c.startswith(("best ", "final "))]
    rows = []
    for arm, g in runs.groupby("arm", sort=False):
        used = g[g["used"]]
        row = {"arm": arm, "n": len(used), "n_runs": len(g), "n_excluded": int((~g["used"]).sum())}
        row["excluded"] = ", ".join(
            f"seed {s}: {st}" for s, st in zip(g.loc[~g["used"], "seed"], g.loc[~g["used"], "status"], strict=True)
        )
        for col in ["objective", *metric_cols]:
            vals = used[col].astype(float).dropna().to_numpy()
            row[f"{col} mean"], row[f"{col} std"] = _mean_std(vals)
        rows.append(row)
    table = pd.DataFrame(rows)
    score = table["objective mean"] if mode == "min" else -table["objective mean"]
    table["rank"] = score.rank(method="min", na_option="keep")
    table = table.assign(_s=score).sort_values("_s", na_position="last").drop(columns="_s")
    table = table.reset_index(drop=True)
    table["p vs best"], table["diff vs best"] = math.nan, math.nan
    table["ci low"], table["ci high"] = math.nan, math.nan
    if len(table) and not math.isnan(table.loc[0, "objective mean"]):
        best = runs[(runs["arm"] == table.loc[0, "arm"]) & runs["used"]]["objective"].astype(float).to_numpy()
        for i in range(1, len(table)):
            vals = runs[(runs["arm"] == table.loc[i, "arm"]) & runs["used"]]["objective"].astype(float).to_numpy()
            table.loc[i, "diff vs best"] = float(np.mean(vals) - np.mean(best)) if len(vals) else math.nan
            if len(vals) >= 2 and len(best) >= 2:
                res = stats.ttest_ind(vals, best, equal_var=False)
                ci = res.confidence_interval(0.95)
                table.loc[i, "p vs best"] = float(res.pvalue)
                table.loc[i, ["ci low", "ci high"]] = [float(ci.low), float(ci.high)]
    return table


# -------------------------------------------------------------------------------------------- plots
def _curve_stats(records: list[RunRecord], key: str) -> pd.DataFrame:
    """Mean / std / count over runs of metric ``key`` per step (runs aligned on their logged steps)."""
    series = [r.series(key) for r in records]
    series = [s for s in series if len(s)]
    if not series:
        return pd.DataFrame()
    df = pd.concat(series, axis=1)
    return pd.DataFrame(
        {"mean": df.mean(axis=1), "std": df.std(axis=1, ddof=1).fillna(0.0), "n": df.count(axis=1)}
    ).sort_index()


def plot_curves(records, arms, key, path: Path) -> bool:
    """Mean curve per arm with a ±1 std band over used runs; excluded runs drawn dashed. False if no data."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    drawn = False
    for arm in dict.fromkeys(arms):
        members = [r for r, a in zip(records, arms, strict=True) if a == arm]
        cs = _curve_stats([r for r in members if r.ok], key)
        if len(cs):
            (line,) = ax.plot(cs.index, cs["mean"], label=f"{arm} (n={int(cs['n'].max())})")
            ax.fill_between(cs.index, cs["mean"] - cs["std"], cs["mean"] + cs["std"], color=line.get_color(), alpha=0.2)
            drawn = True
        for r in members:
            s = r.series(key)
            if not r.ok and len(s):
                ax.plot(
                    s.index,
                    s.values,
                    ls="--",
                    lw=0.8,
                    color="grey",
                    label=f"{arm} seed {r.seed} ({r.status})",
                )
                drawn = True
    if drawn:
        ax.set_xlabel("step")
        ax.set_ylabel(key)
        ax.set_yscale("log" if _all_positive(ax) else "linear")
        ax.legend(fontsize=7)
        ax.set_title(f"{key} (mean ± std over seeds)")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    plt.close(fig)
    return drawn


def _all_positive(ax) -> bool:
    ys = [y for line in ax.get_lines() for y in np.asarray(line.get_ydata(), dtype=float)]
    return bool(ys) and min(ys) > 0 and max(ys) / min(ys) > 20


def plot_objective_bars(arms_df: pd.DataFrame, runs: pd.DataFrame, key: str, path: Path) -> bool:
    """Bar per arm (mean objective, ±std error bar) with the individual seeds as dots."""
    import matplotlib.pyplot as plt

    if not arms_df["objective mean"].notna().any():
        return False
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.5 * len(arms_df)))
    y = np.arange(len(arms_df))
    ax.barh(
        y,
        arms_df["objective mean"],
        xerr=arms_df["objective std"].fillna(0),
        color="tab:blue",
        alpha=0.6,
        capsize=3,
    )
    for i, arm in enumerate(arms_df["arm"]):
        vals = runs[(runs["arm"] == arm) & runs["used"]]["objective"].astype(float)
        ax.plot(vals, np.full(len(vals), i), "k.", ms=5)
    ax.set_yticks(y, arms_df["arm"], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel(f"{key} (mean ± std; dots = seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# ------------------------------------------------------------------------------------------ writing
def _fmt(x) -> str:
    if isinstance(x, float | np.floating):
        return "" if math.isnan(x) else f"{x:.4g}"
    return str(x)


def md_table(df: pd.DataFrame) -> str:
    """GitHub markdown table (hand-written: pandas.to_markdown needs the optional tabulate package)."""
    head = "| " + " | ".join(df.columns) + " |\n|" + "---|" * len(df.columns) + "\n"
    body = "".join(
        "| " + " | ".join(_fmt(v).replace("|", "\\|") for v in row) + " |\n" for row in df.itertuples(index=False)
    )
    return head + body


def arm_summary(arms_df: pd.DataFrame) -> pd.DataFrame:
    """Compact 'mean ± std' view of the arm table for the report."""
    out = pd.DataFrame(
        {
            "rank": arms_df["rank"].map(lambda r: "" if math.isnan(r) else int(r)),
            "arm": arms_df["arm"],
            "n": arms_df["n"],
        }
    )
    for col in [c[: -len(" mean")] for c in arms_df.columns if c.endswith(" mean")]:
        out[col] = [
            (f"{_fmt(m)} ± {_fmt(s)}" if not math.isnan(s) else _fmt(m))
            for m, s in zip(arms_df[f"{col} mean"], arms_df[f"{col} std"], strict=True)
        ]
    out["Δ vs best [95% CI]"] = [
        "" if math.isnan(d) else f"{d:+.4g}" + ("" if math.isnan(lo) else f" [{lo:+.4g}, {hi:+.4g}]")
        for d, lo, hi in zip(arms_df["diff vs best"], arms_df["ci low"], arms_df["ci high"], strict=True)
    ]
    out["p (Welch)"] = arms_df["p vs best"]
    out["excluded"] = arms_df["excluded"]
    return out


def render(sweeps, key, mode, arms_df, runs, images: dict[str, Path]) -> tuple[str, str]:
    """Markdown and self-contained HTML (PNG images inlined as base64) of the report."""
    title = f"NeuroMF sweep report: {', '.join(str(s) for s in sweeps)}"
    intro = (
        f"Objective: `{key}` ({'lower' if mode == 'min' else 'higher'} is better). Statistics over "
        "completed runs with a finite objective; std is the sample std (ddof=1). "
        "Welch t-test and 95% CI of the difference vs the best arm when both arms have n >= 2."
    )
    runs_view = runs.drop(columns=["path"]).assign(used=runs["used"].map({True: "yes", False: "**excluded**"}))
    summ = arm_summary(arms_df)
    md = [
        f"# {title}\n",
        intro + "\n",
        "## Arms (ranked)\n",
        md_table(summ),
        "\n## Runs\n",
        md_table(runs_view),
    ]
    md += [f"\n## {name}\n\n![{name}]({p.name})\n" for name, p in images.items()]
    css = (
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:12px}"
        "td,th{border:1px solid #ccc;padding:3px 6px}.excl{background:#fdd}"
    )
    runs_html = runs.drop(columns=["path"]).to_html(index=False, na_rep="", float_format=_fmt, escape=True)
    for status in ("failed", "diverged", "running", "unknown"):
        runs_html = runs_html.replace(f"<td>{status}</td>", f'<td class="excl">{status}</td>')
    body = [
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{html.escape(intro)}</p>",
        "<h2>Arms (ranked)</h2>",
        summ.to_html(index=False, na_rep="", float_format=_fmt, escape=True),
        "<h2>Runs</h2>",
        runs_html,
    ]
    for name, p in images.items():
        b64 = base64.b64encode(p.read_bytes()).decode("ascii")
        body.append(f'<h2>{html.escape(name)}</h2><img alt="{html.escape(name)}" src="data:image/png;base64,{b64}">')
    page = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{css}</style></head><body>{''.join(body)}</body></html>"
    )
    return "\n".join(md), page


def replace_dir(tmp: Path, out: Path) -> Path | None:
    """Move ``tmp`` to ``out``; an existing ``out`` is kept as ``<out>.prev-<timestamp>`` (returned)."""
    prev = None
    if out.exists():
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(out.stat().st_mtime))
        prev = out.with_name(f"{out.name}.prev-{stamp}")
        i = 1
        while prev.exists():
            prev, i = out.with_name(f"{out.name}.prev-{stamp}-{i}"), i + 1
        os.replace(out, prev)
    os.replace(tmp, out)
    return prev


def build_report(sweep_dirs, out: str | Path | None = None, metric: str = DEFAULT_OBJECTIVE, mode: str = "min") -> dict:
    """Load the sweeps, compute the tables, write the report dir atomically; returns paths and tables."""
    import matplotlib

    matplotlib.use("Agg")
    sweep_dirs = [Path(s) for s in sweep_dirs]
    labels = sweep_labels(sweep_dirs)
    records, sweeps = [], []
    for sd, label in zip(sweep_dirs, labels, strict=True):
        recs = load_sweep(sd, objective_key=metric, mode=mode)
        records += recs
        sweeps += [label] * len(recs)
    arms = assign_arms(records, sweeps)
    runs = run_table(records, arms)
    arms_df = arm_table(runs, mode)

    out = Path(out) if out else sweep_dirs[0] / "report"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        images = {}
        for key, fname in CURVES:
            if plot_curves(records, arms, key, tmp / fname):
                images[f"{key} vs step"] = tmp / fname
        if plot_objective_bars(arms_df, runs, metric, tmp / "objective_by_arm.png"):
            images[f"{metric} per arm"] = tmp / "objective_by_arm.png"
        md, page = render(sweep_dirs, metric, mode, arms_df, runs, images)
        (tmp / "report.md").write_text(md)
        (tmp / "report.html").write_text(page)
        arms_df.to_csv(tmp / "arms.csv", index=False)
        runs.to_csv(tmp / "runs.csv", index=False)
        summary = {
            "sweeps": [str(s) for s in sweep_dirs],
            "objective_key": metric,
            "mode": mode,
            "arms": json.loads(arms_df.to_json(orient="records")),
        }
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2))
        prev = replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"out": out, "previous": prev, "arms": arms_df, "runs": runs}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m neuromf.report", description=__doc__.splitlines()[0])
    p.add_argument("sweep_dirs", nargs="+", type=Path, help="Hydra multirun dir(s) (<sweep_dir>/<job>/.hydra)")
    p.add_argument("--metric", default=DEFAULT_OBJECTIVE, help="objective metric (default: %(default)s)")
    p.add_argument("--mode", choices=["min", "max"], default="min", help="min: lower is better (default)")
    p.add_argument("--out", type=Path, default=None, help="report dir (default: <first sweep_dir>/report)")
    args = p.parse_args(argv)
    try:
        res = build_report(args.sweep_dirs, args.out, args.metric, args.mode)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    arms_df = res["arms"]
    print(md_table(arm_summary(arms_df)[["rank", "arm", "n", "objective", "excluded"]]))
    if res["previous"]:
        print(f"previous report kept at {res['previous']}")
    print(f"wrote {res['out'] / 'report.md'} and {res['out'] / 'report.html'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
