"""The metric keys a composed training config will log, and the direction (min / max / none) of each.

One source for W&B `define_metric` (neuromf.train), the dashboards (neuromf.dashboards) and the report
(neuromf.report), so that panels exist only for keys the runs log.
"""

from __future__ import annotations

import re
from typing import Any

from neuromf.evaluation.registry import INTERVAL_SUFFIXES, LEGACY_ALIASES, metrics_needing, spec
from neuromf.evaluation.registry import metric_direction as metric_direction

STEP_KEY = "trainer/global_step"  # Lightning's WandbLogger x axis
# views of the metric registry (neuromf.evaluation.registry)
LATENT_METRICS = metrics_needing("latents")  # on latents: always computed
FEAT3D_METRICS = metrics_needing("feat3d")
FID_METRICS = metrics_needing("fid")
_BASE = re.compile(r"^(?:val|ref)/([^/]+)")


def metric_base(key: str) -> str | None:
    """``val/kid/nfe1`` / ``val/kid`` / ``ref/kid/real`` -> ``kid``; other keys -> None."""
    m = _BASE.match(key)
    return m.group(1) if m else None


def summary_mode(key: str, cfg: dict[str, Any] | None = None) -> str | None:
    """'min' / 'max': the W&B summary that keeps the best value of ``key`` (losses and evaluation metrics);
    None: no summary option — W&B's default (the last value), and for ``cfg``'s ``objective`` its plain key,
    which ``neuromf.tracking.wandb_setup.ObjectiveSummary`` sets to the best value over validations (by
    ``objective_mode``, as the report ranks), so that the plain objective key holds a number."""
    if cfg and key == cfg.get("objective"):
        return None
    return metric_direction(key) if key.startswith(("val/", "train/loss")) else None


def eval_metrics(cfg: dict[str, Any]) -> list[str]:
    """Metric base names the evaluation of ``cfg`` computes (feat3d / msssim / FID only when configured)."""
    ev = cfg.get("eval") or {}
    if not ev.get("enabled", False):
        return []
    names = list(LATENT_METRICS)
    if ev.get("feat3d_enabled", False):
        names += FEAT3D_METRICS
    if ev.get("fid_weights"):
        names += FID_METRICS
    if ev.get("msssim_enabled", False) and (ev.get("feat3d_enabled") or ev.get("fid_weights")):
        names.append("msssim")
    return names


def expected_keys(cfg: dict[str, Any]) -> dict[str, list[str]]:
    """Keys one run of the resolved config ``cfg`` (a plain dict) logs, by section.

    The loss terms and diagnostics are the objective's (``loss._target_``, neuromf/meanflow/contract.py): e.g.
    ``train/loss_v`` only with a v-head. Memory only on GPU; FID only with ``eval.fid_weights``; eval metrics
    per step count ``eval.nfe_list``; reference levels when ``eval.reference_levels``; samples per NFE."""
    from neuromf.meanflow.contract import dotted_get
    from neuromf.meanflow.registry import objective_class

    objective = objective_class(dotted_get(cfg, "loss"))
    terms = objective.terms(cfg)
    channels = int(dotted_get(cfg, "model.in_channels", 1) or 1)
    gpu = dotted_get(cfg, "trainer.accelerator") in ("gpu", "cuda", "auto")
    train = ["train/loss", "train/loss_raw", *(f"train/{term}" for term in terms)]
    train += [f"train/loss_ch{c}" for c in range(channels)]
    diag = [f"train/{k}" for k in objective.diagnostics(cfg)]
    system = ["train/samples_per_s", *(["train/peak_mem_gb"] if gpu else []), "lr-AdamW"]
    val = ["val/loss_raw", *(f"val/{term}" for term in terms)]
    ev = dotted_get(cfg, "eval", {}) or {}
    metrics = eval_metrics(cfg)
    nfes = [int(n) for n in ev.get("nfe_list", [])] if metrics else []
    evaluation = [f"val/{m}/nfe{n}" for m in metrics for n in nfes]
    if int(ev.get("bootstrap_resamples", 0) or 0) > 0:  # the bootstrap interval beside each value
        bounded = [m for m in metrics if spec(m).interval]
        evaluation += [f"val/{m}/nfe{n}{s}" for m in bounded for n in nfes for s in INTERVAL_SUFFIXES]
    evaluation += [f"val/{m}" for m in metrics if m in LEGACY_ALIASES]
    evaluation += ["val/eval_time_s"] if metrics else []
    levels = ("real", "collapsed", "noise")  # the evaluation's reference sets (neuromf/evaluation/callback.py)
    ref = [f"ref/{m}/{lvl}" for m in metrics if spec(m).reference_levels for lvl in levels]
    ref = ref if ev.get("reference_levels") else []
    samples_cfg = dotted_get(cfg, "callbacks.samples", {}) or {}
    samples = (
        [f"samples/nfe_{n}" for n in sorted(samples_cfg.get("nfe_list", []))] if samples_cfg.get("enabled") else []
    )
    if len(samples) > 1:
        val.append("val/nfe_consistency")
    return {
        "train": train,
        "diagnostics": diag,
        "system": system,
        "val": val,
        "eval": evaluation,
        "reference": ref,
        "samples": samples,
    }


def all_expected(configs: list[dict[str, Any]]) -> set[str]:
    """Union of ``expected_keys`` over the configs (the arms of a sweep)."""
    return {k for cfg in configs for keys in expected_keys(cfg).values() for k in keys}
