"""Hydra callback writing <sweep dir>/sweep_summary.{json,csv} (arm, status, objective per job) after a
multirun."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from neuromf.evaluation.registry import metric_direction
from neuromf.io_atomic import write_text_atomic
from neuromf.run_dir import RunDir
from neuromf.sweep.arms import grid_jobs
from neuromf.tracking.metrics import device_count, load_sweep, read_config, run_interval
from neuromf.tracking.redact import redact
from neuromf.tracking.run import read_status, write_redacted_json

log = logging.getLogger(__name__)


def pruning_savings(run_dir: Path, status: dict | None = None) -> dict:
    """For a pruned run: {pruned_step, total_steps, saved_gpu_h}, the device time saved against training to the
    end, estimated as wall time per step (progress.json) x remaining steps x devices; {} for other runs."""
    status = read_status(run_dir) if status is None else status
    if status.get("status") != "pruned":
        return {}
    step = status.get("pruned_step", status.get("global_step"))
    out = {"pruned_step": step, "total_steps": None, "saved_gpu_h": None}
    try:
        progress = json.loads(RunDir(run_dir).progress.read_text())
    except (OSError, ValueError):
        return out
    total, elapsed, last = progress.get("total_steps"), progress.get("elapsed_s"), progress.get("step")
    done = (last or 0) - (status.get("resumed_step") or 0)  # steps this process ran in elapsed_s
    out["total_steps"] = total
    if total and elapsed and done > 0 and step is not None:
        trainer = (read_config(Path(run_dir)) or {}).get("trainer") or {}
        out["saved_gpu_h"] = elapsed / done * max(0, total - step) * device_count(trainer) / 3600
    return out


def summarize_sweep(sweep_dir: Path, planned: list[list[str]] | None = None) -> list[dict]:
    """One row per run dir of the sweep: job, overrides, status, reason, objective key, its direction
    (``objective_mode``: the run's, else the metric registry's), objective and the standard error its evaluation
    logged beside it (``objective_se``), and for pruned runs the step they stopped at and the device-hours that
    saved (estimated; column `saved_gpu_h`); written as JSON and CSV, redacted (neuromf/tracking/redact.py).
    `planned` (neuromf.sweep.arms.grid_jobs): the jobs of a grid, each without a run dir listed as "not started"."""
    rows = []
    try:
        runs = load_sweep(sweep_dir)
    except FileNotFoundError:
        if not planned:
            raise
        runs = []
    for run in runs:
        objective = run.objective if run.objective is not None and math.isfinite(run.objective) else None
        saved = pruning_savings(run.path, run.status_data)
        # the direction: the run's objective_mode, else the registry's for the key
        mode = (run.config or {}).get("objective_mode") or metric_direction(run.objective_key or "")
        spread = run_interval(run, run.objective_key, mode) if objective is not None else None
        rows.append(
            {
                "job": run.path.name,
                "overrides": " ".join(run.overrides),
                "status": run.status,
                "reason": run.reason,
                "objective_key": run.objective_key,
                "objective_mode": mode,
                "objective": objective,
                "objective_se": (spread or {}).get("se"),
                "pruned_step": saved.get("pruned_step"),
                "saved_gpu_h": saved.get("saved_gpu_h"),
            }
        )
    seen = {row["job"] for row in rows}
    for number, overrides in enumerate(planned or []):
        if str(number) not in seen:
            rows.append({"job": str(number), "overrides": " ".join(overrides), "status": "not started",
                         "reason": None, "objective_key": None, "objective_mode": None, "objective": None,
                         "objective_se": None, "pruned_step": None,
                         "saved_gpu_h": None})  # fmt: skip
    rows.sort(key=lambda r: (0, int(r["job"]), "") if r["job"].isdigit() else (1, 0, r["job"]))
    write_redacted_json(sweep_dir / "sweep_summary.json", {"sweep_dir": str(sweep_dir), "runs": rows})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["job"])
    writer.writeheader()
    writer.writerows(redact(rows))
    write_text_atomic(sweep_dir / "sweep_summary.csv", buf.getvalue(), newline="")
    return rows


class SweepSummary(Callback):
    """Registered in conf/train.yaml under hydra.callbacks; runs in the launching process."""

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.exists():  # refused before any job started (e.g. DistinctArms): nothing to summarise
            return
        try:
            planned = grid_jobs(config)
        except Exception as err:  # an override this Hydra cannot expand: summarise the run dirs only
            log.warning("cannot list the sweep's jobs (%s): summarising its run dirs only", err)
            planned = None
        try:
            rows = summarize_sweep(sweep_dir, planned)
        except FileNotFoundError as err:
            log.warning("no sweep summary: %s", err)
            return
        done = sum(r["status"] == "completed" for r in rows)
        pruned = [r for r in rows if r["status"] == "pruned"]
        stopped = sum(r["status"] == "stopped" for r in rows)
        not_started = sum(r["status"] == "not started" for r in rows)
        saved = sum(r["saved_gpu_h"] or 0 for r in pruned)
        unfinished = f", {stopped} stopped, {not_started} not started" if stopped or not_started else ""
        log.info("sweep summary: %d/%d runs completed%s, %d pruned (~%.3g device-h saved) -> %s", done, len(rows),
                 unfinished, len(pruned), saved, sweep_dir / "sweep_summary.csv")  # fmt: skip
        if stopped or not_started:
            log.warning("re-run the same command with hydra.sweep.dir=%s to resume the stopped arms and run the ones "
                        "not started", sweep_dir)  # fmt: skip
