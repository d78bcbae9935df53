"""The arms of a grid sweep before it starts: the jobs Hydra's basic sweeper will launch, each composed as its job
will be, and a refusal when two of them are the same run (identical composed configs, seed included).

Hydra composes every job, but it has no notion of two jobs being the same: a preset or a sweep file that sets an
ablation group's keys in its body makes all arms identical without an error. `DistinctArms` (registered in
conf/train.yaml under hydra.callbacks) composes the grid in the launching process and stops the sweep with one
line (exit 2) naming the jobs that would run the same config. Optuna sweeps choose their trials as they go and
are not checked here.
"""

from __future__ import annotations

import sys
from typing import Any

from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def grid_jobs(config: DictConfig) -> list[list[str]] | None:
    """The override list of every job a basic-sweeper multirun of `config` launches, in launch order (Hydra's own
    expansion: `hydra.sweeper.params` then the command line, cartesian product); None for another sweeper."""
    sweeper = config.hydra.sweeper
    if sweeper.get("_target_") != BASIC_SWEEPER:
        return None
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    params = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
    arguments = params + list(config.hydra.overrides.task)
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
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


class DistinctArms(Callback):
    """Refuses a grid sweep with two identical jobs before any job starts: one line, exit 2."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        pairs = identical_jobs(config)
        if pairs:
            print(f"error: {identical_jobs_message(config, pairs)}", file=sys.stderr)
            sys.exit(2)
