"""The W&B logger of a run: offline unless an API key is available, one run id per run dir (requeues resume it),
grouped by sweep, tagged with the overridden keys."""

from __future__ import annotations

import os
import sys
from pathlib import Path

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


# What W&B records as the run's program: the training entry point, also when a launcher's own module is the
# process's __main__ (submitit runs jobs as `python -m submitit.core._submit <folder>`).
PROGRAM = "-m neuromf.train"


def make_wandb_logger(cfg: DictConfig, run_dir: Path, run_id: str, mode: str | None = None):
    """Lightning's WandbLogger for the run, its W&B run started (argv redacted); `mode` overrides the configured one."""
    from pytorch_lightning.loggers import WandbLogger

    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    tags = override_tags(overrides)
    name = f"{cfg.sweep_name}-{run_dir.name}" if tags else run_dir.name
    logger = WandbLogger(
        project=cfg.logger.wandb.project,
        entity=cfg.logger.wandb.entity,
        save_dir=str(run_dir),
        id=run_id,
        resume="allow",
        group=cfg.sweep_name,
        job_type="train",
        tags=[t[:64] for t in tags],
        name=name,
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

    W&B stores such a summary nested (``key.min``, ``key.last``; ``neuromf.tracking.keys.summary_name``); the
    other keys get no summary option, so their bare key keeps the last value. Returns {key: summary or None}."""
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
