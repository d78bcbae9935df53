"""Write the report dir: the shared context, every section's blocks, the page and the CSV/JSON files, atomically
(a temporary dir moved into place), group-readable."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from neuromf.report import core
from neuromf.report.context import load_context
from neuromf.report.core import arm_summary, final_tables, md_table, replace_dir
from neuromf.report.render import render
from neuromf.tracking.redact import redact_text

DIR_MODE, FILE_MODE = 0o755, 0o644  # the report is published group- and world-readable (mkdtemp makes it 0700)


def publishable(path: Path) -> None:
    """chmod the report dir tree to DIR_MODE / FILE_MODE (tempfile.mkdtemp creates it 0700)."""
    os.chmod(path, DIR_MODE)
    for root, dirs, files in os.walk(path):
        for d in dirs:
            os.chmod(Path(root) / d, DIR_MODE)
        for f in files:
            os.chmod(Path(root) / f, FILE_MODE)


def build_report(
    sweep_dirs, out: str | Path | None = None, metric: str | None = None, mode: str | None = None, real: bool = True
) -> dict:
    """Load the sweeps, compute the tables, write the report dir atomically; returns paths and tables.
    ``metric`` / ``mode`` default to the sweep's ``objective`` / ``objective_mode``."""
    import matplotlib

    from neuromf.report.sections import SECTIONS

    matplotlib.use("Agg")
    core._WARNED.clear()  # each damaged file is named once per report
    ctx = load_context(sweep_dirs, metric, mode, real)
    out = Path(out) if out else ctx.sweep_dirs[0] / "report"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    ctx.tmp = tmp
    try:
        sections = [(name, module.blocks(ctx)) for name, module in SECTIONS]
        title = f"NeuroMF sweep report: {', '.join(str(s) for s in ctx.sweep_dirs)}"
        md, page = render(title, [], sections)
        (tmp / "report.md").write_text(md)
        (tmp / "report.html").write_text(page)
        ctx.arms_df.to_csv(tmp / "arms.csv", index=False)
        final_df = final_tables(ctx.records, ctx.arms, ctx.metric, ctx.mode)[1]
        if len(final_df):
            final_df.to_csv(tmp / "final.csv", index=False)
        ctx.runs.to_csv(tmp / "runs.csv", index=False)
        ctx.diff.to_csv(tmp / "config_diff.csv")
        for name, table in ctx.tables.items():
            table.to_csv(tmp / name, index=False)
        summary = {
            "sweeps": [str(s) for s in ctx.sweep_dirs],
            "objective_key": ctx.metric,
            "mode": ctx.mode,
            "reference": ctx.refs,
            "config_diff": json.loads(ctx.diff.to_json(orient="index")),
            "arms": json.loads(ctx.arms_df.to_json(orient="records")),
            "final": json.loads(final_df.to_json(orient="records")) if len(final_df) else [],
            "optuna": [{k: o[k] for k in ("study", "storage", "states", "best")} for o in ctx.extra.get("optuna", [])],
        }
        if "verdict" in ctx.extra:
            summary["verdict"] = ctx.extra["verdict"]
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        publishable(tmp)
        prev = replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"out": out, "previous": prev, "arms": ctx.arms_df, "runs": ctx.runs, "config_diff": ctx.diff,
            "fixed": ctx.fixed}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    from neuromf import report

    about = " ".join(report.__doc__.split("\n\n")[0].split())
    p = argparse.ArgumentParser(prog="python -m neuromf.report", description=about)
    p.add_argument("sweep_dirs", nargs="+", type=Path, help="Hydra multirun dir(s) (<sweep_dir>/<job>/.hydra)")
    p.add_argument("--metric", default=None, help="objective metric (default: the sweep's `objective`)")
    p.add_argument("--mode", choices=["min", "max"], default=None, help="default: the sweep's `objective_mode`")
    p.add_argument("--out", type=Path, default=None, help="report dir (default: <first sweep_dir>/report)")
    p.add_argument("--no-real", action="store_true", help="do not decode real validation volumes for the gallery")
    args = p.parse_args(argv)
    try:
        res = build_report(args.sweep_dirs, args.out, args.metric, args.mode, real=not args.no_real)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {redact_text(str(exc))}", file=sys.stderr)
        return 2
    arms_df = res["arms"]
    print(md_table(arm_summary(arms_df)[["rank", "arm", "state", "n", "objective"]]))
    if res["previous"]:
        print(f"previous report kept at {res['previous']}")
    print(f"wrote {res['out'] / 'report.md'} and {res['out'] / 'report.html'}")
    return 0
