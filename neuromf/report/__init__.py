"""Compare the ablation arms of one or more sweeps: configuration differences, statistics over seeds, loss terms,
reference levels, samples, cost and provenance -> report.md / report.html.

Usage::

    python -m neuromf.report <sweep_dir> [<sweep_dir> ...] [--metric KEY] [--mode min|max] [--out DIR]

Runs are grouped into arms by their Hydra overrides minus ``seed``. Only completed runs with a finite
objective count in the statistics; failed / diverged / running runs are listed and marked.

The package: ``context`` (the runs, arms and statistics, computed once), ``core`` (the computations), one module
per section in ``sections`` (listed in ``sections.SECTIONS``), ``render`` (Jinja2 templates in ``templates``)
and ``build`` (the report dir and the command line).
"""

from __future__ import annotations

from neuromf.report.build import build_report, main, publishable  # noqa: F401
from neuromf.report.core import (  # noqa: F401  (the public names, importable from neuromf.report)
    CONFIDENCE,
    IMPORTANCE_SEED,
    LOSS_TERMS,
    NO_STATS,
    POOL_IGNORED,
    REFERENCE_COLORS,
    REFERENCE_NAMES,
    SAVED_COL,
    arm_identity,
    arm_summary,
    arm_table,
    assign_arms,
    compare,
    config_diff,
    cost_table,
    device_kind,
    final_tables,
    gap_closed,
    holm,
    incomparable_terms,
    md_table,
    metric_columns,
    metric_summary,
    optuna_section,
    optuna_storage,
    parameter_count,
    plot_curves,
    plot_objective_bars,
    pool_ignored,
    provenance_table,
    read_final,
    real_previews,
    reference_levels,
    replace_dir,
    run_table,
    sample_gallery,
    sweep_command,
    sweep_labels,
    t_interval,
    untrained_warnings,
    wall_time_s,
    warn_skipped,
)
from neuromf.report.render import html_text, render  # noqa: F401
