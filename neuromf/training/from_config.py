"""The callbacks and loggers of a run, built from their config nodes (conf/callbacks/*.yaml, conf/logger/*.yaml).

Each node with a `_target_` is one callback or logger (or a factory of several, or of none), built in the order
of its config group; a node with `enabled: false`, or removed with `~callbacks.NAME`, is left out. A target with
a `run` parameter is handed the run's `RunContext` (run dir, objective, evaluation settings): the factories below
serve the Lightning callbacks that need it. A key without a `_target_` (callbacks.ema_inference) is a setting.
Adding a callback is one node in a config file: `neuromf.train` is not edited.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint

from neuromf.instantiate import build
from neuromf.run_dir import RunDir


@dataclass
class RunContext:
    """What a callback or logger factory may need of the run: its dir, its (resolved) config, the step it resumes
    from, and the label of its arm (the overridden keys, for sample previews)."""

    run_dir: RunDir
    cfg: DictConfig
    resume_step: int | None = None
    label: str = ""

    @property
    def objective(self) -> str:
        return self.cfg.objective

    @property
    def objective_mode(self) -> str:
        return self.cfg.objective_mode

    @property
    def evaluates(self) -> bool:
        """Whether the evaluation callback runs (eval.enabled): the objective metric is then logged."""
        return bool((self.cfg.get("eval") or {}).get("enabled"))


def build_nodes(nodes: DictConfig | None, run: RunContext, group: str) -> list[Any]:
    """The objects of the `_target_` nodes of `nodes` (a config group: callbacks, logger), in config order;
    ValueError naming `<group>.<name>` when a node cannot be built."""
    built: list[Any] = []
    for name, node in (nodes or {}).items():
        if not isinstance(node, DictConfig) or "_target_" not in node or node.get("enabled", True) is False:
            continue
        params = OmegaConf.to_container(node, resolve=True)
        params.pop("enabled", None)
        try:
            factory = build(params, _partial_=True, _convert_="all")
        except InstantiationException as err:
            raise ValueError(f"{group}.{name}: {err}") from err
        made = factory(run=run) if "run" in inspect.signature(factory.func).parameters else factory()
        built.extend(made if isinstance(made, list) else [] if made is None else [made])
    return built


def checkpoints(run: RunContext, every_n_train_steps: int, save_top_k: int) -> list[pl.Callback]:
    """last.ckpt every n steps (what a requeued job resumes from), at every epoch end and at a SIGTERM; with
    evaluation, the best `save_top_k` by the objective as best-<epoch>-<step>.ckpt."""
    from neuromf.training.preemption import CheckpointOnSigterm

    ckpt_dir = run.run_dir.checkpoints
    made: list[pl.Callback] = [
        ModelCheckpoint(
            dirpath=ckpt_dir, filename="last", every_n_train_steps=every_n_train_steps, enable_version_counter=False
        ),
        ModelCheckpoint(
            dirpath=ckpt_dir,
            filename="last",
            every_n_epochs=1,
            save_on_train_epoch_end=True,
            enable_version_counter=False,
        ),
        CheckpointOnSigterm(dirpath=str(ckpt_dir)),  # preemption, scancel
    ]
    if run.evaluates:
        made.append(
            ModelCheckpoint(
                dirpath=ckpt_dir,
                filename="best-{epoch:03d}-{step:06d}",
                monitor=run.objective,
                mode=run.objective_mode,
                save_top_k=save_top_k,
                auto_insert_metric_name=False,
            )
        )
    return made


def evaluation(run: RunContext) -> list[pl.Callback]:
    """The EvaluationCallback of the `eval` config (none with eval.enabled false), writing <run_dir>/eval/."""
    if not run.evaluates:
        return []
    from neuromf.evaluation.callback import EvaluationCallback

    settings = {k: v for k, v in OmegaConf.to_container(run.cfg.eval, resolve=True).items() if k != "enabled"}
    return [EvaluationCallback(output_dir=str(run.run_dir.eval), **settings)]


def early_stopping(run: RunContext, patience: int, min_delta: float) -> list[pl.Callback]:
    """Stop after `patience` validation epochs without improvement of the objective (only with evaluation)."""
    if not run.evaluates:
        return []
    return [
        EarlyStopping(
            monitor=run.objective, mode=run.objective_mode, patience=patience, min_delta=min_delta, check_finite=False
        )
    ]


def samples(run: RunContext, **settings: Any) -> pl.Callback:
    """The SampleCollector writing <run_dir>/samples/ (EMA weights with callbacks.ema_inference)."""
    from neuromf.training.callbacks import SampleCollector

    use_ema = run.cfg.callbacks.get("ema_inference", True)
    return SampleCollector(run_dir=str(run.run_dir.path), use_ema=use_ema, label=run.label, **settings)


def csv_logger(run: RunContext) -> pl.loggers.Logger:
    """<run_dir>/metrics.csv, appended to on resume (rows from the resumed step on are dropped)."""
    from neuromf.tracking.csv_logger import RunCSVLogger

    return RunCSVLogger(str(run.run_dir.path), resume_step=run.resume_step)


def wandb_logger(run: RunContext, **settings: Any) -> pl.loggers.Logger:
    """The W&B logger, its run started (neuromf/tracking/wandb_setup.py reads `settings` from the run's
    logger.wandb config, where command-line and sweep overrides put them too)."""
    from neuromf.tracking.run import stable_run_id
    from neuromf.tracking.wandb_setup import start_wandb_logger

    return start_wandb_logger(run.cfg, run.run_dir.path, run_id=stable_run_id(run.run_dir.path))
