"""Checks a multirun in the launching process before any job starts; each refusal is one line and exit 2.

- the objective's direction: `objective_mode` against the objective metric and the Optuna study's direction
  (selection, pruning, early stopping, the report and the dashboards all follow `objective_mode`);
- a GPU launcher profile (SLURM with GPUs per node) with a CPU trainer or the small CPU demo data: it would hold
  an A100 for the CPU demo;
- a grid whose jobs compose identical configs (neuromf/sweep/arms.py): the arms would not differ.
"""

from __future__ import annotations

import sys

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from neuromf.config_schema import direction_errors
from neuromf.sweep.arms import identical_jobs, identical_jobs_message
from neuromf.sweep.optuna import OPTUNA_DIRECTION


def sweeper_direction_error(config: DictConfig) -> str | None:
    """The Optuna study's direction(s) set apart from `objective_mode`, or None."""
    sweeper = config.hydra.sweeper
    if "direction" not in sweeper or config.get("objective_mode") not in OPTUNA_DIRECTION:
        return None
    direction = OmegaConf.to_container(sweeper, resolve=True)["direction"]
    directions = [str(d).split(".")[-1].lower() for d in (direction if isinstance(direction, list) else [direction])]
    wanted = OPTUNA_DIRECTION[config.objective_mode]
    if directions == [wanted]:
        return None
    return (
        f"hydra.sweeper.direction={direction} contradicts objective_mode={config.objective_mode} (the runs select, "
        f"stop early and report by objective_mode); set objective_mode only: the study follows it ({wanted})"
    )


def gpu_launcher_error(config: DictConfig) -> str | None:
    """A SLURM profile that requests GPUs for a trainer that runs on the CPU, or None."""
    launcher = config.hydra.launcher
    if "Slurm" not in str(launcher.get("_target_", "")):
        return None
    gpus = OmegaConf.select(config, "hydra.launcher.gpus_per_node", default=None)
    cpu = config.trainer.get("accelerator") == "cpu"
    cpu_demo = not config.data.get("latent_dir") and config.data.get("demo_variant") == "small"
    if not isinstance(gpus, int) or gpus < 1 or not (cpu or cpu_demo):
        return None
    what = "on the CPU (trainer.accelerator=cpu)" if cpu else "the small CPU demo (data=demo, the default data)"
    return (
        f"hydra.launcher.gpus_per_node={gpus} holds GPUs, but this config trains {what}: add "
        "experiment=brain_maisi data.latent_dir=<your latent store> (production) "
        "or experiment=demo_gpu (the GPU demo), or hydra.launcher.gpus_per_node=null for CPU nodes"
    )


def preflight_errors(config: DictConfig) -> list[str]:
    """Every refusal for this multirun, cheapest first; identical jobs are only looked for when the rest pass."""
    errors = [*direction_errors(config)]
    errors += [e for e in (sweeper_direction_error(config), gpu_launcher_error(config)) if e]
    if not errors:
        pairs = identical_jobs(config)
        if pairs:
            errors.append(identical_jobs_message(config, pairs))
    return errors


class SweepPreflight(Callback):
    """Registered in conf/train.yaml under hydra.callbacks: refuses the sweep before any job starts."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        errors = preflight_errors(config)
        if errors:
            print(f"error: {errors[0]}", file=sys.stderr)
            sys.exit(2)
