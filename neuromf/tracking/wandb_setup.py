"""The W&B logger of a run: offline unless an API key is available, one run id per run dir (requeues resume it),
named by arm and seed, grouped by sweep and launch, tagged with the overridden keys; the plain objective key of
the summary holds the best value over validations (``ObjectiveSummary``)."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from neuromf.tracking.redact import redact_text, redacted_argv


def wandb_mode(requested: str | None) -> str:
    """`requested` if given, else WANDB_MODE, else online with WANDB_API_KEY and offline without."""
    if requested:
        return requested
    return os.environ.get("WANDB_MODE") or ("online" if os.environ.get("WANDB_API_KEY") else "offline")


def override_tags(overrides: list[str]) -> list[str]:
    """['model.conditioning=dual', 'seed=1'] -> ['model.conditioning=dual']: the arm keys of the overrides
    (neuromf.tracking.metrics.is_arm_key), redacted (neuromf/tracking/redact.py)."""
    from neuromf.tracking.metrics import is_arm_key, parse_override

    return [redact_text(o.lstrip("+~")) for o in overrides if is_arm_key(parse_override(o)[0])]


def run_name(tags: list[str], seed, tag: str | None = None) -> str:
    """The run's display name: its arm (the overridden keys' last parts and values, else the config's ``tag``)
    and seed: ['model.prediction_type=x', 'loss.norm_p=1.0'], 1 -> 'prediction_type=x,norm_p=1.0 seed=1'."""
    arm = ",".join(t.split("=", 1)[0].rsplit(".", 1)[-1] + "=" + t.split("=", 1)[1] for t in tags if "=" in t)
    return f"{arm or tag or 'default'} seed={seed}"[:128]


def _hydra_context() -> tuple[list[str], str | None, str | None, bool]:
    """(task overrides, experiment preset, launch = the multirun's sweep dir name, multirun?) of this job."""
    if not HydraConfig.initialized():
        return [], None, None, False
    hc = HydraConfig.get()
    multirun = str(hc.mode).endswith("MULTIRUN")
    choices = dict(hc.runtime.choices or {})
    experiment = choices.get("experiment")
    launch = Path(str(hc.sweep.dir)).name if multirun and hc.sweep.dir else None
    return list(hc.overrides.task), (None if experiment in (None, "null") else experiment), launch, multirun


def run_group(sweep_name: str, experiment: str | None, launch: str | None) -> str:
    """W&B group: the sweep, the preset when it is not already the sweep's name, and the launch (the sweep dir's
    timestamp): a relaunch into the same sweep dir resumes its group, a new launch or another preset gets its own."""
    preset = experiment if experiment != sweep_name else None
    return "/".join(str(p) for p in (sweep_name, preset, launch) if p)


def job_type(cfg: DictConfig, multirun: bool) -> str:
    """'optuna-trial' (a trial of an Optuna study), 'sweep-arm' (a grid multirun's job) or 'train'."""
    if (cfg.get("optuna") or {}).get("trial") is not None:
        return "optuna-trial"
    return "sweep-arm" if multirun else "train"


# What W&B records as the run's program: the training entry point, also when a launcher's own module is the
# process's __main__ (submitit runs jobs as `python -m submitit.core._submit <folder>`).
PROGRAM = "-m neuromf.train"


def make_wandb_logger(cfg: DictConfig, run_dir: Path, run_id: str, mode: str | None = None):
    """Lightning's WandbLogger for the run, its W&B run started (argv redacted); `mode` overrides the configured one."""
    from pytorch_lightning.loggers import WandbLogger

    overrides, experiment, launch, multirun = _hydra_context()
    tags = override_tags(overrides)
    group = run_group(cfg.sweep_name, experiment, launch)
    labels = [f"sweep:{cfg.sweep_name}", f"seed:{cfg.get('seed')}", *([f"preset:{experiment}"] if experiment else [])]
    logger = WandbLogger(
        project=cfg.logger.wandb.project,
        entity=cfg.logger.wandb.entity,
        save_dir=str(run_dir),
        id=run_id,
        resume="allow",
        group=group,
        job_type=job_type(cfg, multirun),
        tags=[t[:64] for t in [*tags, *labels]],
        name=run_name(tags, cfg.get("seed"), cfg.get("tag")),
        mode=mode or wandb_mode(cfg.logger.wandb.mode),
        settings=_settings(cfg),
    )
    with redacted_argv():  # W&B records sys.argv in the run's metadata when the run starts
        logger.experiment  # noqa: B018
    return logger


def _settings(cfg: DictConfig):
    import wandb

    return wandb.Settings(init_timeout=float(cfg.logger.wandb.get("init_timeout") or 90), program=PROGRAM)


class WandbUnavailable(RuntimeError):
    """W&B could not start an online run (no network, no API key) and the offline fallback is off."""


def start_wandb_logger(cfg: DictConfig, run_dir: Path, run_id: str):
    """The run's WandbLogger with its W&B run started (wandb.init), waiting at most logger.wandb.init_timeout
    seconds for the server. When an online run cannot start (no network on a compute node, no API key):
    with logger.wandb.offline_fallback (default) the run logs offline, with one warning saying how to sync it
    later; without, WandbUnavailable saying what to set."""
    mode = wandb_mode(cfg.logger.wandb.mode)
    if mode != "online":
        return make_wandb_logger(cfg, run_dir, run_id, mode=mode)
    try:  # make_wandb_logger starts the run (wandb.init), where an unreachable server or a missing key raises
        return make_wandb_logger(cfg, run_dir, run_id, mode=mode)
    except Exception as err:  # wandb.errors: CommError (no network), UsageError (no key), AuthenticationError
        why = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"
    timeout = cfg.logger.wandb.get("init_timeout")
    if not cfg.logger.wandb.get("offline_fallback", True):
        raise WandbUnavailable(
            f"W&B could not start an online run within {timeout} s ({why}); set WANDB_MODE=offline (or "
            "logger.wandb.mode=offline, or logger=csv), or check WANDB_API_KEY and the network"
        )
    import wandb

    wandb.teardown()  # the failed online start keeps the run id in use in W&B's service; the offline run reuses it
    logger = make_wandb_logger(cfg, run_dir, run_id, mode="offline")
    print(
        f"warning: W&B could not start an online run within {timeout} s ({why}); logging offline to "
        f"{run_dir}/wandb: upload it later with `wandb sync {run_dir}/wandb/offline-run-*` "
        "(logger.wandb.offline_fallback=false makes this an error)",
        file=sys.stderr,
    )
    return logger


def define_metrics(run, cfg: dict) -> dict[str, str | None]:
    """Every metric on `trainer/global_step`; min / max summaries (best over validations, and the last value) for
    the losses, evaluation metrics and objective the resolved config ``cfg`` logs (``neuromf.tracking.keys``).

    W&B stores such a summary nested (``key.min``, ``key.last``); the
    other keys get no summary option, so their bare key keeps the last value; the objective's plain key holds its
    best value (``ObjectiveSummary``). Returns {key: summary or None}."""
    from neuromf.tracking.keys import STEP_KEY, expected_keys, summary_mode

    run.define_metric(STEP_KEY)
    run.define_metric("*", step_metric=STEP_KEY, step_sync=True)
    keys = [k for ks in expected_keys(cfg).values() for k in ks if not k.startswith("samples/")]
    keys += [cfg["objective"]] if cfg.get("objective") and cfg["objective"] not in keys else []
    summaries = {}
    for key in keys:
        mode = summary_mode(key, cfg)
        summary = f"{mode},last" if mode else None
        run.define_metric(key, step_metric=STEP_KEY, **({"summary": summary} if summary else {}))
        summaries[key] = summary
    return summaries


class ObjectiveSummary(pl.Callback):
    """Keeps the plain objective key of every W&B run's summary at the best value over validations (by ``mode``;
    the objective has no ``define_metric`` summary option, so W&B would show its last value).

    Runs at ``on_validation_end``, after Lightning has sent the epoch's metrics to the loggers."""

    def __init__(self, objective: str, mode: str = "min") -> None:
        self.objective, self.mode = str(objective), str(mode)
        self.best: float | None = None

    def update(self, value: float) -> float | None:
        """Fold one validation's value in -> the best so far (non-finite values never count)."""
        if math.isfinite(value) and (
            self.best is None or (value > self.best if self.mode == "max" else value < self.best)
        ):
            self.best = value
        return self.best

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.objective)
        if trainer.sanity_checking or value is None or self.update(float(value)) is None:
            return
        from pytorch_lightning.loggers import WandbLogger

        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and trainer.is_global_zero:
                logger.experiment.summary[self.objective] = self.best

    def state_dict(self) -> dict:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best = state_dict.get("best")
