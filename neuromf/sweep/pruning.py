"""The job side of an Optuna trial: report the objective at every validation and stop when the study's pruner
says so; and the launcher side's check for trials whose jobs are gone."""

from __future__ import annotations

import datetime
import logging
import math
import os
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl

from neuromf.run_dir import RunDir
from neuromf.tracking.lock import holder_fields, pid_alive

log = logging.getLogger(__name__)
PRUNER_ATTR = "neuromf_pruner"  # study user attr: the sweeper's pruner config, instantiated again by each job
SLURM_ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "COMPLETING",
                "SUSPENDED", "RESIZING", "SIGNALING", "STAGE_OUT"}  # fmt: skip


@dataclass(frozen=True)
class Pruned:
    """What a pruned trial's job returns; the sweeper tells the study PRUNED."""

    step: int
    value: float | None = None

    def __float__(self) -> float:  # for sweepers that only read floats
        return math.nan if self.value is None else float(self.value)


def make_pruner(config):
    """An Optuna pruner from a `_target_` config (None -> NopPruner). Keys its class does not take are dropped with
    a warning: a sweep file's warm-up for another pruner (lr_optuna's median `n_warmup_steps` under
    `hydra/sweeper/pruner=hyperband`) must not fail the sweep."""
    import inspect

    import optuna
    from hydra.utils import instantiate

    config = dict(config or {})
    target = str(config.get("_target_", ""))
    if not config or target.endswith("NopPruner"):
        return optuna.pruners.NopPruner()
    cls = getattr(optuna.pruners, target.rsplit(".", 1)[-1], None) if target.startswith("optuna.pruners.") else None
    if isinstance(cls, type):
        params = inspect.signature(cls).parameters
        extra = sorted(k for k in config if not k.startswith("_") and k not in params)
        if extra and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            log.warning("%s does not take %s (another pruner's settings?): ignored", cls.__name__, ", ".join(extra))
            config = {k: v for k, v in config.items() if k not in extra}
    return instantiate(config, _execution_whitelist_=("optuna.pruners.*",))


def load_trial(study_name: str, storage: str, number: int):
    """(study with its pruner, optuna.trial.Trial) of trial `number`, for reporting from a job."""
    import optuna

    from neuromf.sweep.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    study.pruner = make_pruner(study.user_attrs.get(PRUNER_ATTR))
    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, int(number))
    return study, optuna.trial.Trial(study, trial_id)


class OptunaReporter(pl.Callback):
    """At every validation end: trial.report(objective, step=global_step), then trial.should_prune(); a pruned
    run stops at the end of this epoch (its checkpoints are written as usual). Rank 0 talks to the study and
    broadcasts the decision. `pruned_step` is set when pruned. A trial that is already finished in the study
    (e.g. closed as stale) is not reported to; the run goes on."""

    def __init__(self, study: str, storage: str, trial: int, key: str, run_dir: str | Path | None = None):
        self.study_name, self.storage, self.number, self.key = study, storage, int(trial), key
        self.run_dir = None if run_dir is None else str(run_dir)
        self.trial = None
        self.pruned_step: int | None = None
        self.pruned_value: float | None = None
        self.pruner_name: str | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        if not trainer.is_global_zero or self.trial is not None:
            return
        import optuna

        try:
            study, trial = load_trial(self.study_name, self.storage, self.number)
        except Exception as err:  # an unreachable study must not fail the training run
            log.warning("optuna trial %d: cannot open %s (%s); training without pruning", self.number,
                        self.storage, err)  # fmt: skip
            return
        self.pruner_name = type(study.pruner).__name__
        frozen = study._storage.get_trial(trial._trial_id)
        if frozen.state != optuna.trial.TrialState.RUNNING:
            log.warning("optuna trial %d is %s: not reporting to it", self.number, frozen.state.name)
            return
        self.trial = trial
        # where the job runs: the sweeper's stale-trial check looks at this run dir's lock and this SLURM job
        attrs = {"run_dir": self.run_dir, "host": socket.gethostname(), "pid": os.getpid(),
                 "slurm_job_id": os.environ.get("SLURM_JOB_ID")}  # fmt: skip
        for k, v in attrs.items():
            trial.set_user_attr(k, v)

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        prune = False
        if trainer.is_global_zero and self.trial is not None and self.key in trainer.callback_metrics:
            value = float(trainer.callback_metrics[self.key])
            step = trainer.global_step
            if math.isfinite(value):
                try:
                    self.trial.report(value, step=step)  # a re-report of a step (requeued run): ignored by Optuna
                    prune = self.trial.should_prune()
                except Exception as err:  # the study closed this trial, or its storage is unreachable
                    log.warning("optuna trial %d: cannot report step %d (%s)", self.number, step, err)
                if prune:
                    self.pruned_step, self.pruned_value = step, value
                    log.info("optuna trial %d pruned by %s at step %d (%s=%.4g)", self.number,
                             self.pruner_name, step, self.key, value)  # fmt: skip
        prune = trainer.strategy.broadcast(prune, src=0)
        if prune:
            trainer.should_stop = True


def lock_holder(run_dir: str | Path) -> str | None:
    """The holder line of <run_dir>/.lock when a live process holds it, else None. Without flock (NEUROMF_RUN_LOCK=off
    or a filesystem without it) the line itself is judged: see `holder_alive`."""
    import fcntl

    from neuromf.tracking.lock import UNSUPPORTED_ERRNOS, lock_disabled

    path = RunDir(run_dir).lock
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)

    def line() -> str:
        return os.pread(fd, 4096, 0).decode(errors="replace").strip()

    try:
        if lock_disabled():
            return line() if line() and holder_alive(line()) else None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return line() or "unknown holder"
        except OSError as err:
            if err.errno not in UNSUPPORTED_ERRNOS:
                raise
            return line() if line() and holder_alive(line()) else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def holder_alive(line: str) -> bool:
    """Whether the process of a holder line (`host=... pid=... slurm_job=...`) may still run: its SLURM job is
    pending/running, or its pid lives on this host; a holder on another host without a SLURM job counts as live."""
    fields = holder_fields(line)
    job, host, pid = fields.get("slurm_job", "-"), fields.get("host"), fields.get("pid", "")
    if job not in ("", "-"):
        return slurm_state(job) in SLURM_ACTIVE
    if host == socket.gethostname() and pid.isdigit():
        return pid_alive(int(pid))
    return True


def slurm_state(job_id: str) -> str | None:
    """SLURM's state of a job (squeue), None when squeue does not know it or is unavailable."""
    try:
        out = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%T"], capture_output=True, text=True,
                             timeout=30)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    states = out.stdout.split()
    return states[0] if out.returncode == 0 and states else None


UNRECORDED_GRACE_S = 600.0  # a RUNNING trial with no launcher recorded is left alone this long after it started


def stale_reason(trial) -> str | None:
    """Why a RUNNING trial's job is gone (a sentence), or None when it may still run.

    A trial whose launcher still runs on this host is never stale. A job that started recorded its run dir (and
    SLURM job id): gone when no live process holds the run dir's lock and SLURM does not list the job as
    pending/running. A trial whose job never started is gone when the
    launcher that asked for it (same host) is dead; one asked by a launcher on another host is left alone."""
    attrs = trial.user_attrs
    run_dir, job = attrs.get("run_dir"), attrs.get("slurm_job_id")
    host, pid = attrs.get("launcher_host"), attrs.get("launcher_pid")
    if host == socket.gethostname() and pid is not None and int(pid) != os.getpid() and pid_alive(int(pid)):
        return None  # its launcher still runs: it tells the study how the job ended (also after the job's lock is
        # released and before the launcher has noticed that the job finished)
    if run_dir:
        holder = lock_holder(run_dir)
        if holder:
            return None
        state = slurm_state(job) if job else None
        if state in SLURM_ACTIVE:
            return None
        where = f"SLURM job {job} is {state or 'gone'}" if job else "its process is gone"
        return f"stale: job in {run_dir} no longer runs (no live lock; {where})"
    if host is None or pid is None:
        # a launcher records itself right after study.ask(): another launcher of the same study may look in between
        started = trial.datetime_start
        if started is not None and (datetime.datetime.now() - started).total_seconds() < UNRECORDED_GRACE_S:
            return None
        return "stale: no job or launcher recorded for this trial"
    if host != socket.gethostname():
        return None
    if pid_alive(pid) and int(pid) != os.getpid():
        return None
    return f"stale: its launcher (pid {pid} on {host}) died before the job started"
