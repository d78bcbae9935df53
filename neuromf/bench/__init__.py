"""Training-step benchmark of flow matching vs MeanFlow vs iMF on MeanFlowUNet (`python -m neuromf.bench`).

Modules: `cli` (arguments and the three modes: timing, `--check`, `--cost`), `presets` (networks and latent shapes),
`cases` (the timed steps and the run), `measure` (timer, saved-tensor bytes), `targets` (ratios to the fastest FM
step and the step-time targets), `formatting` (tables), `cost` (the GPU-free FLOP / saved-byte model and batch fit),
`speed_options` (GroupNorm decomposition, channels-last 3D, gradient checkpointing, compiled du/dt).
"""

from neuromf.bench.cases import Case, bench_cases, build_model, device_name, make_step, run, run_case
from neuromf.bench.cli import main, parse_args
from neuromf.bench.formatting import format_cost_table, format_table
from neuromf.bench.measure import achieved_tflops, saved_tensor_bytes
from neuromf.bench.presets import IMF_KINDS, PRESETS, STRATEGIES
from neuromf.bench.targets import (
    COMPARABLE,
    TARGETS,
    add_ratios,
    baseline_rows,
    check_runs,
    check_targets,
    comparable,
    fastest_fm,
    fm_rows,
    load_bench_json,
)

__all__ = [
    "COMPARABLE",
    "IMF_KINDS",
    "PRESETS",
    "STRATEGIES",
    "TARGETS",
    "Case",
    "achieved_tflops",
    "add_ratios",
    "baseline_rows",
    "bench_cases",
    "build_model",
    "check_runs",
    "check_targets",
    "comparable",
    "device_name",
    "fastest_fm",
    "fm_rows",
    "format_cost_table",
    "format_table",
    "load_bench_json",
    "main",
    "make_step",
    "parse_args",
    "run",
    "run_case",
    "saved_tensor_bytes",
]
