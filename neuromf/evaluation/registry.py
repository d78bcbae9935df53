"""The metric registry: one entry per sample-quality metric (name, direction, step counts, reference levels, inputs).

Everything that needs to know a metric's name or whether lower or higher is better reads it here: the metric
suite and the evaluation callback (best values), W&B ``define_metric`` summaries (``neuromf.tracking.keys``),
the report, the dashboards, the sweep summary and the config check of ``objective_mode``. Adding a metric is one
function (e.g. in ``neuromf.evaluation.sample_metrics``) plus one ``MetricSpec`` in ``METRICS``.

Logged keys: ``val/<name>/nfe<N>`` for every step count N of ``eval.nfe_list`` (``per_step_count``), the first
step count also as ``val/<name>`` (``legacy_alias``), ``ref/<name>/{real,collapsed,noise}``
(``reference_levels``), and, for ``interval`` metrics, the bootstrap interval over the generated samples beside
the value: ``val/<name>/nfe<N>_se``, ``_ci_lo``, ``_ci_hi`` (``INTERVAL_SUFFIXES``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "DEFAULT_OBJECTIVE",
    "INTERVAL_SUFFIXES",
    "LEGACY_ALIASES",
    "METRICS",
    "MetricSpec",
    "direction_word",
    "interval_keys",
    "metric_direction",
    "metrics_needing",
    "spec",
    "split_interval",
]

INTERVAL_SUFFIXES = ("_se", "_ci_lo", "_ci_hi")  # bootstrap standard error and 95 % percentile interval


@dataclass(frozen=True)
class MetricSpec:
    """One metric.

    name: the key part (``val/<name>/nfeN``). direction: "min" (lower is better), "max" or None (no better
    direction: compare with the real set's value). needs: what it is computed from — "latents", "feat3d"
    (deepbet features of decoded volumes), "fid" (2.5D ResNet-50 slice features) or "volumes" (decoded volumes).
    per_step_count: logged per step count of ``eval.nfe_list``; legacy_alias: the first step count also as
    ``val/<name>``. reference_levels: has ``ref/<name>/{real,collapsed,noise}``. interval: the evaluation
    bootstraps it over the generated samples (features computed once, only the metric resampled).
    """

    name: str
    direction: str | None
    needs: str
    description: str
    per_step_count: bool = True
    legacy_alias: bool = False
    reference_levels: bool = True
    interval: bool = False


METRICS: tuple[MetricSpec, ...] = (
    MetricSpec("swd", "min", "latents", "sliced Wasserstein distance on whole latents", legacy_alias=True),
    MetricSpec("swd_patch", "min", "latents", "sliced Wasserstein distance on random 4^3 patches", legacy_alias=True),
    MetricSpec("template_corr", "max", "latents", "median correlation of the samples with the mean training latent"),
    MetricSpec("template_corr_min", "max", "latents", "lowest correlation of a sample with the mean training latent"),
    MetricSpec("feat3d_fd", "min", "feat3d", "Frechet distance, deepbet 3D features", legacy_alias=True, interval=True),
    MetricSpec("kid", "min", "feat3d", "unbiased MMD^2, cubic polynomial kernel, deepbet features", interval=True),
    MetricSpec("precision", "max", "feat3d", "share of samples inside a real k-NN ball", interval=True),
    MetricSpec("recall", "max", "feat3d", "share of real samples inside a sample k-NN ball", interval=True),
    MetricSpec("density", "max", "feat3d", "real k-NN balls holding a sample, per sample and k", interval=True),
    MetricSpec("coverage", "max", "feat3d", "share of real samples whose ball holds a sample", interval=True),
    MetricSpec("msssim", None, "volumes", "mean pairwise MS-SSIM among the samples (diversity)"),
    *(
        MetricSpec(f"fid_{p}", "min", "fid", f"2.5D FID, {p} slices", legacy_alias=True)
        for p in ("axial", "coronal", "sagittal", "mean")
    ),
    MetricSpec("eval_time_s", None, "none", "wall time of an evaluation", per_step_count=False, reference_levels=False),
    MetricSpec(
        "nfe_consistency",
        None,
        "none",
        "agreement of the sample previews across step counts",
        per_step_count=False,
        reference_levels=False,
    ),  # fmt: skip
)
_BY_NAME = {m.name: m for m in METRICS}
LEGACY_ALIASES = tuple(m.name for m in METRICS if m.legacy_alias)  # val/<m> = val/<m>/nfe<first NFE>
# the objective a run's evaluation reports to a sweeper unless `objective` says otherwise (conf/train.yaml holds the
# same key): it ranks the sample sets of known quality right (neuromf.evaluation.ranking)
DEFAULT_OBJECTIVE = "val/feat3d_fd/nfe1"
_BASE = re.compile(r"^(?:val|ref)/([^/]+)")


def spec(name: str) -> MetricSpec | None:
    """The entry of a metric name (``feat3d_fd``) or of a logged key (``val/feat3d_fd/nfe1``), or None."""
    if name in _BY_NAME:
        return _BY_NAME[name]
    m = _BASE.match(name)
    return _BY_NAME.get(m.group(1)) if m else None


def metrics_needing(*needs: str) -> tuple[str, ...]:
    """Names of the metrics computed from any of ``needs`` ("latents", "feat3d", "fid", "volumes"), in order."""
    return tuple(m.name for m in METRICS if m.needs in needs)


def split_interval(key: str) -> tuple[str, str | None]:
    """``val/kid/nfe1_ci_lo`` -> (``val/kid/nfe1``, ``_ci_lo``); a key without an interval suffix -> (key, None)."""
    for suffix in INTERVAL_SUFFIXES:
        if key.endswith(suffix):
            return key[: -len(suffix)], suffix
    return key, None


def interval_keys(key: str) -> dict[str, str]:
    """``val/kid/nfe1`` -> {"se": "val/kid/nfe1_se", "ci_lo": ..., "ci_hi": ...}."""
    return {s.lstrip("_"): f"{key}{s}" for s in INTERVAL_SUFFIXES}


def metric_direction(key: str) -> str | None:
    """'min' / 'max' for a loss (``train/loss*``) or a registered metric's key; None for keys without a better
    direction (diversity, timings, interval bounds, unknown keys)."""
    if split_interval(key)[1] is not None:
        return None
    entry = spec(key)
    if entry is not None:
        return entry.direction
    return "min" if key.startswith(("train/loss", "val/loss")) else None


def direction_word(key: str) -> str:
    """'lower is better' / 'higher is better' / 'no direction' for a key."""
    return {"min": "lower is better", "max": "higher is better"}.get(metric_direction(key) or "", "no direction")
