"""The report's shared context: the sweeps loaded, the runs grouped into arms and the statistics computed once; every
section (``neuromf.report.sections``) reads it and computes nothing twice."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from neuromf.evaluation.registry import DEFAULT_OBJECTIVE, metric_direction
from neuromf.report.core import (
    _sweep_objective,
    arm_table,
    assign_arms,
    config_diff,
    reference_levels,
    run_table,
    sweep_labels,
)
from neuromf.tracking.keys import metric_base
from neuromf.tracking.metrics import RunRecord, load_sweep


@dataclass
class ReportContext:
    sweep_dirs: list[Path]
    metric: str  # the objective key
    mode: str  # "min" | "max"
    records: list[RunRecord]
    sweeps: list[str]  # per record: its sweep label
    arms: list[str]  # per record: its arm
    runs: pd.DataFrame  # run_table
    arms_df: pd.DataFrame  # arm_table: ranked, statistics and the comparison with the best
    refs: dict  # reference levels per metric base
    obj_refs: dict  # the objective's reference levels
    diff: pd.DataFrame
    fixed: dict
    within: list[str]
    real: bool = True  # decode real validation volumes for the gallery
    tmp: Path | None = None  # the report dir being written (figures go here)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)  # extra CSVs a section writes: {file name: table}
    extra: dict = field(default_factory=dict)  # what a section leaves for a later one / the summary

    def members(self, arm: str, used: bool = True) -> list[RunRecord]:
        return [r for r, a in zip(self.records, self.arms, strict=True) if a == arm and (r.ok or not used)]


def load_context(sweep_dirs, metric: str | None = None, mode: str | None = None, real: bool = True) -> ReportContext:
    """Load the sweeps and compute the shared tables (``metric`` / ``mode`` default to the sweep's ``objective`` /
    ``objective_mode``)."""
    sweep_dirs = [Path(s) for s in sweep_dirs]
    cfg_metric, cfg_mode = _sweep_objective(sweep_dirs)
    metric = metric or cfg_metric or DEFAULT_OBJECTIVE
    mode = mode or (cfg_mode if metric == cfg_metric else None) or metric_direction(metric) or "min"
    records, sweeps = [], []
    for sd, label in zip(sweep_dirs, sweep_labels(sweep_dirs), strict=True):
        recs = load_sweep(sd, objective_key=metric, mode=mode)
        records += recs
        sweeps += [label] * len(recs)
    arms = assign_arms(records, sweeps)
    runs = run_table(records, arms, sweeps)
    arms_df = arm_table(runs, mode)
    refs = reference_levels(records)
    diff, fixed, within = config_diff([r.config for r in records], arms)
    return ReportContext(
        sweep_dirs=sweep_dirs,
        metric=metric,
        mode=mode,
        records=records,
        sweeps=sweeps,
        arms=arms,
        runs=runs,
        arms_df=arms_df,
        refs=refs,
        obj_refs=refs.get(metric_base(metric) or "", {}),
        diff=diff,
        fixed=fixed,
        within=within,
        real=real,
    )
