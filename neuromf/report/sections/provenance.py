"""Provenance: the report command, git commit, the sweeps' commands, the runs' commits."""

from __future__ import annotations

import sys
import time

from neuromf.report.core import provenance_table, sweep_command
from neuromf.tracking.run import git_state


def _provenance(sweep_dirs, records, arms) -> list:
    commit, dirty = git_state()
    cmd = " ".join(["python -m neuromf.report", *sys.argv[1:]])
    lines = [
        f"Report written {time.strftime('%Y-%m-%d %H:%M:%S %z')} by `{cmd}` at git commit {commit or 'unknown'}"
        f"{' (dirty tree)' if dirty else ''}."
    ]
    for sd in sweep_dirs:
        cmd = sweep_command(sd)
        lines.append(f"Sweep {sd}: {'command: ' + cmd if cmd else 'command unknown (no multirun.yaml)'}.")
    commits = {(r.status_data.get("provenance") or {}).get("git_commit") for r in records} - {None}
    if len(commits) > 1:
        lines.append(f"⚠ the runs were trained at {len(commits)} different git commits.")
    return [("h2", "Provenance"), *(("p", t) for t in lines), ("table", provenance_table(records, arms), False)]


def blocks(ctx) -> list:
    return _provenance(ctx.sweep_dirs, ctx.records, ctx.arms)
