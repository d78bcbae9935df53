"""`python -m neuromf.train [-m] [overrides]`: one MeanFlow / iMF run (or a sweep of them) from the Hydra configs.

Returns the sweep objective (best `objective` over validation epochs; NaN for a diverged or failed arm, which
Optuna records as a failed trial) so Hydra's sweepers can read it.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import traceback
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint

from neuromf.data.encoders import EncoderError
from neuromf.data.io import DataError
from neuromf.instantiate import build
from neuromf.meanflow import check_jvp_strategy
from neuromf.tracking.csv_logger import RunCSVLogger
from neuromf.tracking.run import flat_config, stable_run_id, update_status
from neuromf.training.callbacks import DiagnosticsLogger, DivergenceMonitor, ObjectiveTracker, SampleCollector
from neuromf.training.checkpoint_io import AtomicCheckpointIO
from neuromf.training.ema import EMA
from neuromf.training.module import MeanFlowModule

log = logging.getLogger("neuromf.train")
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def datamodule_from_config(data: dict, **kwargs):
    """The LatentDataModule of a `data` config (its `mask_ratio` belongs to the objective, not the datamodule)."""
    return build({k: v for k, v in data.items() if k != "mask_ratio"}, **kwargs)


def build_datamodule(cfg: DictConfig, run_dir: Path):
    data = OmegaConf.to_container(cfg.data, resolve=True)
    return datamodule_from_config(data, run_dir=str(run_dir), expected_channels=cfg.model.in_channels)


def build_module(cfg: DictConfig) -> MeanFlowModule:
    return MeanFlowModule(
        model=cfg.model,
        loss=cfg.loss,
        optim=cfg.optim,
        mask_ratio=cfg.data.get("mask_ratio", 0.0),
        ema_inference=cfg.callbacks.ema_inference,
        seed=cfg.seed,
        data=cfg.data,
    )


def build_callbacks(cfg: DictConfig, run_dir: Path) -> list[pl.Callback]:
    cb = cfg.callbacks
    ckpt_dir = run_dir / "checkpoints"
    callbacks: list[pl.Callback] = [
        DivergenceMonitor(**cb.divergence),
        DiagnosticsLogger(**cb.diagnostics),
        LearningRateMonitor(logging_interval="step"),
        ObjectiveTracker(cfg.objective, cfg.objective_mode),
        # last.ckpt every n steps (what a requeued job resumes from) and at every epoch end
        ModelCheckpoint(
            dirpath=ckpt_dir,
            filename="last",
            every_n_train_steps=cb.checkpoint.every_n_train_steps,
            enable_version_counter=False,
        ),
        ModelCheckpoint(
            dirpath=ckpt_dir,
            filename="last",
            every_n_epochs=1,
            save_on_train_epoch_end=True,
            enable_version_counter=False,
        ),
    ]
    if cfg.eval.enabled:
        from neuromf.evaluation.callback import EvaluationCallback

        kwargs = {k: v for k, v in OmegaConf.to_container(cfg.eval, resolve=True).items() if k != "enabled"}
        callbacks.append(EvaluationCallback(output_dir=str(run_dir / "eval"), **kwargs))
        callbacks.append(
            ModelCheckpoint(
                dirpath=ckpt_dir,
                filename="best-{epoch:03d}-{step:06d}",
                monitor=cfg.objective,
                mode=cfg.objective_mode,
                save_top_k=cb.checkpoint.save_top_k,
                auto_insert_metric_name=False,
            )
        )
        if cb.early_stopping.enabled:
            callbacks.append(
                EarlyStopping(
                    monitor="val/swd",
                    mode="min",
                    patience=cb.early_stopping.patience,
                    min_delta=cb.early_stopping.min_delta,
                    check_finite=False,
                )
            )
    if cb.samples.enabled:
        kwargs = {k: v for k, v in OmegaConf.to_container(cb.samples, resolve=True).items() if k != "enabled"}
        callbacks.append(SampleCollector(run_dir=str(run_dir), use_ema=cb.ema_inference, **kwargs))
    callbacks.append(EMA(decay=cb.ema.decay, update_every_n_steps=cb.ema.update_every_n_steps))
    return callbacks


def build_loggers(cfg: DictConfig, run_dir: Path) -> list:
    loggers = [RunCSVLogger(str(run_dir))]
    if cfg.logger.wandb.enabled:
        from neuromf.tracking.wandb_setup import make_wandb_logger

        loggers.append(make_wandb_logger(cfg, run_dir, run_id=stable_run_id(run_dir)))
    return loggers


def resolve_ckpt_path(cfg: DictConfig, run_dir: Path) -> str | None:
    """null -> <run_dir>/checkpoints/last.ckpt when it exists (requeue / re-run resumes); 'last' -> must exist."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if cfg.ckpt_path in (None, "last"):
        if last.exists():
            return str(last)
        if cfg.ckpt_path == "last":
            raise FileNotFoundError(f"ckpt_path=last but {last} does not exist")
        return None
    if not Path(cfg.ckpt_path).exists():
        raise FileNotFoundError(f"ckpt_path={cfg.ckpt_path}: no such checkpoint")
    return str(cfg.ckpt_path)


def build_trainer(cfg: DictConfig, run_dir: Path, callbacks, loggers) -> pl.Trainer:
    plugins = [AtomicCheckpointIO()]
    if "SLURM_JOB_ID" in os.environ:  # submitit owns requeueing: Lightning's SLURM auto-requeue must stay off
        from pytorch_lightning.plugins.environments import SLURMEnvironment

        plugins.append(SLURMEnvironment(auto_requeue=False))
    return build(cfg.trainer, callbacks=callbacks, logger=loggers, plugins=plugins, default_root_dir=str(run_dir))


class InputError(Exception):
    """A bad configuration or input (data, checkpoint): reported as one message, without a traceback."""


def train(cfg: DictConfig, run_dir: Path) -> float:
    """Fit one run in `run_dir`; writes status.json and returns the objective (NaN when diverged)."""
    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))
    if cfg.trainer.get("accelerator") == "cpu":
        torch.set_flush_denormal(True)  # denormal weights/activations slowed CPU steps several-fold
    pl.seed_everything(cfg.seed, workers=True)
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    update_status(run_dir, status="running", reason=None, objective_key=cfg.objective, overrides=overrides)
    try:  # everything that checks the config and the data, before any training
        check_jvp_strategy(cfg.model.prediction_type, cfg.loss.jvp)
        datamodule = build_datamodule(cfg, run_dir)
        datamodule.prepare_data()
        datamodule.setup("fit")
        module = build_module(cfg)
        ckpt_path = resolve_ckpt_path(cfg, run_dir)
    except (DataError, EncoderError, ValueError, FileNotFoundError) as err:
        raise InputError(str(err)) from err
    callbacks = build_callbacks(cfg, run_dir)
    loggers = build_loggers(cfg, run_dir)
    for logger in loggers:
        logger.log_hyperparams(flat_config(OmegaConf.to_container(cfg, resolve=True)))
    trainer = build_trainer(cfg, run_dir, callbacks, loggers)
    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)

    divergence = next(c for c in callbacks if isinstance(c, DivergenceMonitor))
    tracker = next(c for c in callbacks if isinstance(c, ObjectiveTracker))
    objective = tracker.best if tracker.best is not None else math.nan
    status = "diverged" if divergence.reason else "completed"
    wandb_id = (run_dir / "wandb_id.txt").read_text().strip() if (run_dir / "wandb_id.txt").exists() else None
    update_status(
        run_dir,
        status=status,
        reason=divergence.reason,
        objective=None if math.isnan(objective) else objective,
        best_step=tracker.best_step,
        global_step=trainer.global_step,
        wandb_run_id=wandb_id,
    )
    if divergence.reason:
        log.error("run diverged: %s", divergence.reason)
        return math.nan
    log.info("run dir: %s  %s = %s", run_dir, cfg.objective, objective)
    return objective


@hydra.main(config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    raise_on_failure = (not in_sweep) if cfg.raise_on_failure is None else cfg.raise_on_failure
    try:
        return train(cfg, run_dir)
    except InputError as err:
        update_status(run_dir, status="failed", reason=f"InputError: {err}")
        if raise_on_failure:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        log.error("arm failed: %s (recorded in %s/status.json)", err, run_dir)
        return math.nan
    except Exception as err:
        update_status(run_dir, status="failed", reason=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
        if raise_on_failure:
            raise
        log.exception("arm failed; recorded in %s/status.json", run_dir)
        return math.nan


if __name__ == "__main__":
    main()
