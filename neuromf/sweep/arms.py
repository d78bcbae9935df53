"""The arms of a grid sweep before it starts: the jobs Hydra's basic sweeper will launch, each composed as its job
will be, and the pairs of jobs that would be the same run (identical composed configs, seed included).

Hydra composes every job but has no notion of two jobs being the same: a preset or a sweep file that sets an
ablation group's keys in its body makes all arms identical without an error (neuromf/sweep/preflight.py refuses
such a sweep). Optuna sweeps choose their trials as they go and have no grid.
"""

from __future__ import annotations

from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def grid_jobs(config: DictConfig) -> list[list[str]] | None:
    """The override list of every job a basic-sweeper multirun of `config` launches, in launch order (Hydra's own
    expansion: `hydra.sweeper.params` then the command line, cartesian product, BasicSweeper.split_arguments);
    None for another sweeper (an Optuna study's trials are not known in advance). Read before the sweep starts
    (neuromf/sweep/preflight.py) and after it ends (the jobs without a run dir in neuromf/sweep/summary.py)."""
    sweeper = config.hydra.get("sweeper") or {}
    if sweeper.get("_target_") != BASIC_SWEEPER:
        return None
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
    arguments = params + list(config.hydra.overrides.task)
    hydra = GlobalHydra.instance()  # its config loader expands glob() choices of config groups
    parser = OverridesParser.create(config_loader=hydra.config_loader() if hydra.is_initialized() else None)
    batches = BasicSweeper.split_arguments(parser.parse_overrides(arguments), max_batch_size=None)
    return [job for batch in batches for job in batch]


def job_config(config: DictConfig, overrides: list[str]) -> dict[str, Any]:
    """The composed config (without the `hydra` node, interpolations unresolved) one job of the sweep trains."""
    cfg = GlobalHydra.instance().config_loader().load_sweep_config(config, list(overrides))
    out = OmegaConf.to_container(cfg, resolve=False)
    out.pop("hydra", None)
    return out


def identical_jobs(config: DictConfig) -> list[tuple[int, int]]:
    """Pairs (i, j), i < j, of job numbers of the grid whose composed configs are identical."""
    jobs = grid_jobs(config)
    if not jobs:
        return []
    seen: dict[str, int] = {}
    pairs = []
    for num, overrides in enumerate(jobs):
        key = OmegaConf.to_yaml(OmegaConf.create(job_config(config, overrides)), sort_keys=True)
        if key in seen:
            pairs.append((seen[key], num))
        else:
            seen[key] = num
    return pairs


def identical_jobs_message(config: DictConfig, pairs: list[tuple[int, int]]) -> str:
    jobs = grid_jobs(config) or []
    i, j = pairs[0]
    more = f" (and {len(pairs) - 1} more pair(s))" if len(pairs) > 1 else ""
    return (
        f"jobs {i} ({' '.join(jobs[i])}) and {j} ({' '.join(jobs[j])}) compose the same config{more}: "
        "the arms would not differ; check that no preset or sweep file sets the swept keys, or drop the repeat"
    )
