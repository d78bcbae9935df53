"""Hydra callback writing <sweep dir>/sweep_summary.{json,csv} (arm, status, objective per job) after a
multirun."""

from __future__ import annotations

import csv
import logging
import math
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from neuromf.tracking.metrics import load_sweep
from neuromf.tracking.run import write_json_atomic

log = logging.getLogger(__name__)


def summarize_sweep(sweep_dir: Path) -> list[dict]:
    """One row per run dir of the sweep: job, overrides, status, reason, objective; written as JSON and
    CSV."""
    rows = []
    for run in load_sweep(sweep_dir):
        objective = run.objective if run.objective is not None and math.isfinite(run.objective) else None
        rows.append(
            {
                "job": run.path.name,
                "overrides": " ".join(run.overrides),
                "status": run.status,
                "reason": run.reason,
                "objective_key": run.objective_key,
                "objective": objective,
            }
        )
    write_json_atomic(sweep_dir / "sweep_summary.json", {"sweep_dir": str(sweep_dir), "runs": rows})
    tmp = sweep_dir / ".sweep_summary.csv.tmp"
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["job"])
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(sweep_dir / "sweep_summary.csv")
    return rows


class SweepSummary(Callback):
    """Registered in conf/train.yaml under hydra.callbacks; runs in the launching process."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            rows = summarize_sweep(sweep_dir)
        except FileNotFoundError as err:
            log.warning("no sweep summary: %s", err)
            return
        done = sum(r["status"] == "completed" for r in rows)
        log.info("sweep summary: %d/%d arms completed -> %s", done, len(rows), sweep_dir / "sweep_summary.csv")
