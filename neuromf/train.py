"""`python -m neuromf.train [-m] [overrides]`: one MeanFlow / iMF run (or a sweep of them) from the Hydra configs.

Returns the sweep objective (best `objective` over validation epochs; NaN for a diverged or failed arm, which
Optuna records as a failed trial) so Hydra's sweepers can read it.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.utilities.exceptions import SIGTERMException

from neuromf.config_compose import CONF_DIR
from neuromf.config_schema import check_config
from neuromf.data.datamodule import datamodule_for_run
from neuromf.data.encoders import EncoderError
from neuromf.data.io import DataError
from neuromf.instantiate import build
from neuromf.io_atomic import write_json_atomic
from neuromf.meanflow import check_jvp_strategy
from neuromf.models.maisi_init import init_from_maisi
from neuromf.run_dir import RunDir
from neuromf.sweep.pruning import OptunaReporter, Pruned
from neuromf.tracking.lock import RunLock, RunLockedError, is_rank_zero_process
from neuromf.tracking.metrics import read_config
from neuromf.tracking.redact import install_log_redaction, redact_text
from neuromf.tracking.run import clean_config, provenance, save_hydra_record, update_status
from neuromf.tracking.wandb_setup import ObjectiveSummary, override_tags
from neuromf.training.budget import resolve_budget
from neuromf.training.callbacks import DivergenceMonitor, ObjectiveTracker
from neuromf.training.checkpoint_io import (
    AtomicCheckpointIO,
    CheckpointReadError,
    CheckpointWriteError,
    find_resume_checkpoint,
    validate_checkpoint,
)
from neuromf.training.ddp_strategy import AUTO as DDP_AUTO
from neuromf.training.ddp_strategy import choose_ddp_strategy
from neuromf.training.from_config import RunContext, build_nodes
from neuromf.training.module import MeanFlowModule
from neuromf.training.preemption import STOPPED_EXIT_CODE, RunStopped
from neuromf.training.progress import ProgressFile
from neuromf.training.resume_guard import RunRecordInCheckpoint, config_changes, describe_changes, run_record

log = logging.getLogger("neuromf.train")
install_log_redaction()  # every log line of a run or a sweep's launcher: URL passwords and secrets masked


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


def run_context(cfg: DictConfig, run_dir: Path, resume_step: int | None = None) -> RunContext:
    """What the callback and logger nodes are handed: the run dir, the config, the resumed step, the arm's label."""
    label = " ".join(override_tags(list(HydraConfig.get().overrides.task))) if HydraConfig.initialized() else ""
    return RunContext(RunDir(run_dir), cfg, resume_step=resume_step, label=label)


def _logs_to_wandb(cfg: DictConfig) -> bool:
    return bool((cfg.logger.get("wandb") or {}).get("enabled", True)) if cfg.logger.get("wandb") else False


def build_callbacks(cfg: DictConfig, run_dir: Path) -> list[pl.Callback]:
    """The callbacks of conf/callbacks/ (neuromf/training/from_config.py), then the run's own bookkeeping: the
    objective a sweep reads, the Optuna reporter of a trial, and progress.json (what a sweep's launcher prints)."""
    return [
        *build_nodes(cfg.callbacks, run_context(cfg, run_dir), group="callbacks"),
        ObjectiveTracker(cfg.objective, cfg.objective_mode),
        *([ObjectiveSummary(cfg.objective, cfg.objective_mode)] if _logs_to_wandb(cfg) else []),
        *optuna_reporter(cfg, run_dir),
        ProgressFile(str(run_dir)),
    ]


def optuna_reporter(cfg: DictConfig, run_dir: Path) -> list[pl.Callback]:
    """[OptunaReporter] when the sweeper passed this job its trial (+optuna.study/storage/trial), else []."""
    opt = cfg.get("optuna") or {}
    if opt.get("trial") is None or not opt.get("storage"):
        return []
    return [OptunaReporter(opt.study, opt.storage, int(opt.trial), cfg.objective, run_dir=run_dir)]


def build_loggers(cfg: DictConfig, run_dir: Path, resume_step: int | None = None) -> list:
    """The loggers of conf/logger/ (csv: metrics.csv; wandb: also W&B), each given the whole resolved config."""
    from neuromf.tracking.wandb_setup import WandbUnavailable

    try:
        loggers = build_nodes(cfg.get("logger"), run_context(cfg, run_dir, resume_step), group="logger")
    except WandbUnavailable as err:
        raise InputError(str(err)) from err
    resolved = clean_config(OmegaConf.to_container(cfg, resolve=True))
    for logger in loggers:
        logger.log_hyperparams(resolved)  # nested: every key can group runs in W&B
        if type(logger).__name__ == "WandbLogger":
            from neuromf.tracking.wandb_setup import define_metrics

            define_metrics(logger.experiment, resolved)
    return loggers


def resolve_ckpt_path(cfg: DictConfig, run_dir: Path) -> dict | None:
    """The checkpoint to resume from, validated (loads, is a Lightning checkpoint, finite weights), as
    {'path', 'global_step', 'epoch'}; None for a fresh start.

    ckpt_path null -> <run_dir>/checkpoints/last.ckpt when it exists (requeue / re-run resumes); when it is
    unreadable, the newest readable of last.prev.ckpt / best-*.ckpt, with a warning (and 'resumed_from' in
    status.json); an error when none is readable. 'last' -> as null, but a checkpoint must exist. A path -> that
    checkpoint, no fallback."""
    ckpt_dir, last = RunDir(run_dir).checkpoints, RunDir(run_dir).last_checkpoint
    if cfg.ckpt_path not in (None, "last"):
        if not Path(cfg.ckpt_path).exists():
            raise FileNotFoundError(f"ckpt_path={cfg.ckpt_path}: no such checkpoint")
        try:
            return validate_checkpoint(cfg.ckpt_path)
        except CheckpointReadError as err:
            raise InputError(f"{err}; pass ckpt_path= a readable checkpoint") from err
    found, problems = find_resume_checkpoint(ckpt_dir)
    if found is None and problems:
        raise InputError(
            f"{problems[0]}; no readable checkpoint to fall back to in {ckpt_dir}: delete the bad file(s) to start "
            "the run over, or pass ckpt_path= a readable checkpoint"
        )
    if found is None:
        if cfg.ckpt_path == "last":
            raise FileNotFoundError(f"ckpt_path=last but {last} does not exist")
        return None
    if problems:
        log.warning("%s; resuming from %s (step %d) instead", problems[0], found["path"], found["global_step"])
        print(
            f"warning: {problems[0]}; resuming from {found['path']} (step {found['global_step']}) instead",
            file=sys.stderr,
        )
    return found


def build_trainer(cfg: DictConfig, run_dir: Path, callbacks, loggers, checkpoint_io=None, module=None) -> pl.Trainer:
    plugins = [checkpoint_io or AtomicCheckpointIO()]
    if "SLURM_JOB_ID" in os.environ:  # submitit owns requeueing: Lightning's SLURM auto-requeue must stay off
        from pytorch_lightning.plugins.environments import SLURMEnvironment

        plugins.append(SLURMEnvironment(auto_requeue=False))
    trainer_cfg = cfg.trainer
    if module is not None and trainer_cfg.get("strategy") == DDP_AUTO:  # ddp, or the unused-parameter search
        trainer_cfg = OmegaConf.merge(trainer_cfg, {"strategy": choose_ddp_strategy(module)})
    return build(trainer_cfg, callbacks=callbacks, logger=loggers, plugins=plugins, default_root_dir=str(run_dir))


class InputError(Exception):
    """A bad configuration or input (data, checkpoint) or an unwritable run dir: reported as one message,
    without a traceback (exit 2)."""


class RunInUseError(InputError):
    """Another live process holds the run dir's lock (its status.json is left alone)."""


class ResumeRefused(InputError):
    """A re-run into an existing run dir with another config or data store (the run dir is left as it was)."""


def check_same_run(cfg: DictConfig, run_dir: Path, resume: dict, record: dict) -> None:
    """Refuse to resume `resume` (validate_checkpoint's info) when its run record (the config and data store it
    was trained with; .hydra/config.yaml for checkpoints written before checkpoints carried one) differs from
    `record` outside resume.may_change."""
    recorded = resume.get("run_record") or {"config": read_config(run_dir), "data_store": None}
    if not recorded.get("config"):
        return  # nothing recorded to compare with
    may_change = list((cfg.get("resume") or {}).get("may_change") or [])
    changes = config_changes(recorded, record, may_change)
    if changes:
        raise ResumeRefused(
            f"{run_dir}: not resuming {resume['path']} (step {resume['global_step']}): it was trained with another "
            f"config: {describe_changes(changes)}. Only resume.may_change keys may change on a re-run: train this "
            "config in a new run dir, or add the keys to resume.may_change"
        )


WRITE_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EFBIG}


def write_error_message(err: OSError, where: str | Path | None = None) -> str | None:
    """'cannot write <path>: <OS error>' for an OSError that is a failed write (permissions, disk full);
    `where`: the path to name when the error carries none."""
    if isinstance(err, CheckpointWriteError):
        return str(err)
    if err.errno not in WRITE_ERRNOS:
        return None
    path = err.filename or where or "a file in the run dir"
    return f"cannot write {path}: {err.strerror} (fix the permissions or free space, then re-run)"


def train(cfg: DictConfig, run_dir: Path) -> float | Pruned:
    """Fit one run in `run_dir` holding its lock (<run_dir>/.lock: one writer per run dir); writes status.json
    and returns the objective (NaN when diverged)."""
    lock = RunLock(run_dir) if is_rank_zero_process() else None
    try:
        if lock is not None:
            lock.acquire()
    except RunLockedError as err:
        raise RunInUseError(str(err)) from err
    except OSError as err:
        raise InputError(write_error_message(err, RunDir(run_dir).lock) or f"{run_dir}/.lock: {err}") from err
    try:
        if lock is not None and lock.stale_holder:
            print(f"notice: took over the stale lock of {lock.stale_holder} (no longer running)", file=sys.stderr)
        fresh = not RunDir(run_dir).config.exists() and not RunDir(run_dir).checkpoints.exists()
        if lock is not None and fresh:  # a new run dir records its config first (a failed arm has one too)
            save_hydra_record(run_dir, cfg)
        return _train(cfg, run_dir)
    except OSError as err:
        message = write_error_message(err, f"a file in {run_dir}")
        if message is None:
            raise
        raise InputError(message) from err
    finally:
        if lock is not None:
            lock.release()


def _train(cfg: DictConfig, run_dir: Path) -> float | Pruned:
    """The recipe of a run: compose it (every check, nothing written), start it (its record and status), build its
    callbacks, loggers and trainer, fit, and report the outcome in status.json."""
    composed = compose_run(cfg, run_dir)
    start_run(cfg, run_dir, composed)
    built = build_run(cfg, run_dir, composed)
    fit_run(run_dir, composed, built)
    return report_run(cfg, run_dir, composed, built)


@dataclass
class ComposedRun:
    """A run whose config, data and checkpoint passed every check: the datamodule (set up), the module, the
    checkpoint to resume (validate_checkpoint's info, None for a fresh start) and the run record it carries."""

    datamodule: pl.LightningDataModule
    module: MeanFlowModule
    resume: dict | None
    record: dict
    budget: dict | None = None  # equal-compute budget: the step count it bought (neuromf/training/budget.py)

    @property
    def resume_step(self) -> int | None:
        return self.resume["global_step"] if self.resume else None


@dataclass
class BuiltRun:
    trainer: pl.Trainer
    callbacks: list[pl.Callback]
    checkpoint_io: AtomicCheckpointIO


def compose_run(cfg: DictConfig, run_dir: Path) -> ComposedRun:
    """Everything that checks the config, the data and the checkpoint, before anything is written (InputError)."""
    try:
        check_config(cfg)  # the allowed value ranges (neuromf/config_schema.py), before anything is built
    except ValueError as err:
        raise InputError(str(err)) from err
    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))
    if cfg.trainer.get("accelerator") == "cpu":
        torch.set_flush_denormal(True)  # denormal weights/activations slowed CPU steps several-fold
    pl.seed_everything(cfg.seed, workers=True)
    try:
        check_jvp_strategy(cfg.model.prediction_type, cfg.loss.jvp)
        datamodule = datamodule_for_run(cfg, run_dir)
        datamodule.prepare_data()
        datamodule.setup("fit")
        module = build_module(cfg)
        budget = apply_budget(cfg, module, datamodule)
        resume = resolve_ckpt_path(cfg, run_dir)
        record = run_record(OmegaConf.to_container(cfg, resolve=True), datamodule.latent_dir)
        if resume:
            check_same_run(cfg, run_dir, resume, record)
        init = cfg.get("init") or {}
        if init.get("maisi_checkpoint") and not resume:  # a resumed run restores its own weights instead
            spacing = list(init.spacing) if init.get("spacing") is not None else None
            report = init_from_maisi(module.net, init.maisi_checkpoint, spacing=spacing, modality=init.get("modality"))
            update_status(run_dir, init=report.summary())
    except (DataError, EncoderError, ValueError, FileNotFoundError) as err:
        raise InputError(str(err)) from err
    return ComposedRun(datamodule, module, resume, record, budget)


def apply_budget(cfg: DictConfig, module: MeanFlowModule, datamodule) -> dict | None:
    """With budget.flops or budget.fm_steps set: the run's step count from its counted step cost
    (neuromf/training/budget.py), validated budget.validations times at equal step intervals, the last at the
    final step (trainer.max_steps, val_check_interval; max_epochs -1). Returns the budget record, or None."""
    if not any((cfg.get("budget") or {}).get(k) is not None for k in ("flops", "fm_steps")):
        return None
    n_val = int(cfg.budget.get("validations") or 1)
    if n_val < 1:
        raise ValueError(f"budget.validations={n_val}: must be >= 1")
    train_set = datamodule.dataset("train")
    x = torch.stack([train_set[i % len(train_set)] for i in range(int(cfg.data.batch_size))])  # one batch, no RNG
    device = "cuda" if cfg.trainer.get("accelerator") != "cpu" and torch.cuda.is_available() else "cpu"
    net = module.net.to(device)
    try:
        budget = resolve_budget(OmegaConf.to_container(cfg.budget), module.objective, net, x.to(device))
    finally:
        module.net.to("cpu")
    interval = budget["steps"] // n_val
    if interval < 1:
        raise ValueError(f"budget buys {budget['steps']} steps, fewer than budget.validations={n_val}")
    budget |= {"budget_steps": budget["steps"], "steps": interval * n_val, "validations": n_val}
    with open_dict(cfg):
        cfg.trainer.max_steps = budget["steps"]
        cfg.trainer.max_epochs = -1
        cfg.trainer.check_val_every_n_epoch = None
        cfg.trainer.val_check_interval = interval
    return budget


def start_run(cfg: DictConfig, run_dir: Path, composed: ComposedRun) -> None:
    """The checks passed: the run dir records this config (.hydra/) and status "running" (a refused checkpoint or
    data store left status.json as it was)."""
    if is_rank_zero_process():
        save_hydra_record(run_dir, cfg)
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    update_status(
        run_dir,
        status="running",
        reason=None,
        objective_key=cfg.objective,
        overrides=overrides,
        provenance=provenance(),
    )
    if composed.resume:
        update_status(run_dir, resumed_from=composed.resume["path"], resumed_step=composed.resume_step)
    if composed.budget and is_rank_zero_process():
        write_json_atomic(RunDir(run_dir).budget, composed.budget)
        update_status(run_dir, budget_steps=composed.budget["steps"], budget_flops=composed.budget["budget_flops"])


def build_run(cfg: DictConfig, run_dir: Path, composed: ComposedRun) -> BuiltRun:
    """The callbacks (conf/callbacks/), loggers (conf/logger/) and trainer of the run."""
    try:
        callbacks = [*build_callbacks(cfg, run_dir), RunRecordInCheckpoint(composed.record)]
    except ValueError as err:  # a node that cannot be built, named
        raise InputError(str(err)) from err
    loggers = build_loggers(cfg, run_dir, resume_step=composed.resume_step or 0)
    checkpoint_io = AtomicCheckpointIO()
    trainer = build_trainer(cfg, run_dir, callbacks, loggers, checkpoint_io, module=composed.module)
    return BuiltRun(trainer, callbacks, checkpoint_io)


def fit_run(run_dir: Path, composed: ComposedRun, built: BuiltRun) -> None:
    """trainer.fit, resuming the composed checkpoint; a SIGTERM records status "stopped" and raises RunStopped."""
    try:
        built.trainer.fit(
            composed.module,
            datamodule=composed.datamodule,
            ckpt_path=composed.resume["path"] if composed.resume else None,
        )
    except SIGTERMException as err:
        raise stopped(run_dir, built.trainer, built.checkpoint_io, composed.resume_step) from err


def report_run(cfg: DictConfig, run_dir: Path, composed: ComposedRun, built: BuiltRun) -> float | Pruned:
    """status.json's outcome (completed / diverged / pruned, objective, steps, checkpoint) and the sweep objective
    (NaN when diverged, Pruned when the trial was pruned)."""
    callbacks, checkpoint_io, run = built.callbacks, built.checkpoint_io, RunDir(run_dir)
    divergence = next((c for c in callbacks if isinstance(c, DivergenceMonitor)), None)
    diverged = divergence.reason if divergence is not None else None
    tracker = next(c for c in callbacks if isinstance(c, ObjectiveTracker))
    objective = tracker.best if tracker.best is not None else math.nan
    reporter = next((c for c in callbacks if isinstance(c, OptunaReporter)), None)
    pruned = reporter is not None and reporter.pruned_step is not None and not diverged
    status = "diverged" if diverged else "pruned" if pruned else "completed"
    if pruned:
        update_status(
            run_dir,
            pruned_step=reporter.pruned_step,
            reason=f"pruned by {reporter.pruner_name} at step {reporter.pruned_step} "
            f"({cfg.objective}={reporter.pruned_value:.4g})",
        )
    wandb_id = run.wandb_id.read_text().strip() if run.wandb_id.exists() else None
    checkpoint_step = checkpoint_io.written.get(str(run.last_checkpoint), composed.resume_step)
    refused = sorted({step for _, step, _ in checkpoint_io.refused})
    update_status(
        run_dir,
        status=status,
        **({} if pruned else {"reason": diverged}),
        objective=None if math.isnan(objective) else objective,
        best_step=tracker.best_step,
        global_step=built.trainer.global_step,
        checkpoint_step=checkpoint_step,
        refused_checkpoint_steps=refused or None,
        wandb_run_id=wandb_id,
    )
    if refused:
        log.warning(
            "non-finite weights: checkpoints at steps %s were not written; last.ckpt holds step %s",
            refused,
            checkpoint_step,
        )
    if diverged:
        log.error("run diverged: %s (last.ckpt holds step %s, the last finite one)", diverged, checkpoint_step)
        return math.nan
    log.info("run dir: %s  %s = %s", run_dir, cfg.objective, objective)
    if pruned:
        return Pruned(step=reporter.pruned_step, value=None if math.isnan(objective) else objective)
    return objective


def resume_hint(run_dir: Path) -> str:
    """How to re-run the same command into `run_dir` (its default path holds the launch time)."""
    if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
        sweep_dir = run_dir.parent
        return f"re-run the same command with hydra.sweep.dir={sweep_dir} to resume it and run the arms not yet run"
    return f"re-run the same command with hydra.run.dir={run_dir} to resume"


def stopped(run_dir: Path, trainer: pl.Trainer, checkpoint_io: AtomicCheckpointIO, resume_step) -> RunStopped:
    """Record status "stopped" (SIGTERM during fit) in status.json; the RunStopped to raise."""
    checkpoint_step = checkpoint_io.written.get(str(RunDir(run_dir).last_checkpoint), resume_step)
    reason = f"SIGTERM at step {trainer.global_step} (preemption, scancel or the time limit)"
    update_status(
        run_dir,
        status="stopped",
        reason=reason,
        global_step=trainer.global_step,
        checkpoint_step=checkpoint_step,
    )
    held = f"last.ckpt holds step {checkpoint_step}" if checkpoint_step is not None else "no checkpoint written"
    return RunStopped(f"{run_dir}: stopped by {reason}; {held}; {resume_hint(run_dir)}")


@hydra.main(config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    raise_on_failure = (not in_sweep) if cfg.raise_on_failure is None else cfg.raise_on_failure
    try:
        return train(cfg, run_dir)
    except RunStopped as err:  # a sweep stops too: its node is going away
        print(f"stopped: {err}", file=sys.stderr)
        log.warning("%s", err)
        sys.exit(STOPPED_EXIT_CODE)
    except InputError as err:
        if not isinstance(err, RunInUseError | ResumeRefused):  # the holder's / the earlier run's status stays
            try:
                update_status(run_dir, status="failed", reason=f"InputError: {err}")
            except OSError:  # an unwritable run dir: the message below says so
                pass
        if raise_on_failure:
            for line in redact_text(str(err)).splitlines():
                print(f"error: {line}", file=sys.stderr)
            sys.exit(2)
        log.error("arm failed: %s (recorded in %s/status.json)", err, run_dir)
        return math.nan
    except Exception as err:
        try:
            reason = f"{type(err).__name__}: {err}"
            update_status(run_dir, status="failed", reason=reason, traceback=traceback.format_exc())
        except OSError:  # an unwritable run dir: the exception below is what went wrong first
            pass
        if raise_on_failure:
            raise
        log.exception("arm failed; recorded in %s/status.json", run_dir)
        return math.nan


if __name__ == "__main__":
    main()
