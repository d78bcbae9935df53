"""Optuna sweeper that resumes its study, prunes trials through their jobs, closes stale trials and runs
baseline trials first.

Re-running the same command runs only the trials still missing (`n_trials` is the study's total).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
from hydra_plugins.hydra_optuna_sweeper.config import OptunaSweeperConf
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
from omegaconf import DictConfig, ListConfig, OmegaConf

from neuromf.sweep.pruning import PRUNER_ATTR, Pruned, make_pruner, stale_reason
from neuromf.sweep.storage import StorageError, open_storage, resolve_storage

log = logging.getLogger(__name__)
TrialState = optuna.trial.TrialState
FINISHED = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
STALE = "stale"  # user attr of trials closed as FAIL because their jobs were gone


@dataclass
class ResumableOptunaSweeperConf(OptunaSweeperConf):
    """hydra-optuna-sweeper's schema plus `pruner` (a `_target_` config of an optuna.pruners class; null: none)
    and `baselines` (a list of {param: value} dicts, enqueued once and run first)."""

    _target_: str = "neuromf.sweep.optuna.ResumableOptunaSweeper"
    pruner: Any = None
    baselines: Any = None


ConfigStore.instance().store(group="hydra/sweeper", name="resumable_optuna_schema", node=ResumableOptunaSweeperConf)

OPTUNA_DIRECTION = {"min": "minimize", "max": "maximize"}
# hydra.sweeper.direction: ${optuna_direction:${objective_mode}} — the study follows the run's objective_mode


def optuna_direction(mode: str) -> str:
    """objective_mode -> the Optuna study direction (min -> minimize, max -> maximize)."""
    return OPTUNA_DIRECTION.get(str(mode), str(mode))


OmegaConf.register_resolver("optuna_direction", optuna_direction, replace=True)


def tpe_startup_trials(n_trials: int) -> int:
    """Trials TPE samples at random before it models the objective: a quarter of the study, at least 3 (TPE's
    own default, 10, would leave a 12-trial study 2 modelled trials)."""
    return max(3, int(n_trials) // 4)


def tpe_constant_liar(n_jobs: int) -> bool:
    """Constant liar when trials run side by side (the sweeper asks `n_jobs` trials before it tells any): each
    later ask treats the running trials as bad results, so one batch does not ask the same region twice."""
    return int(n_jobs) > 1


# conf/hydra/sweeper/sampler/tpe_sized.yaml: the TPE settings follow hydra.sweeper.n_trials and n_jobs
OmegaConf.register_resolver("tpe_startup_trials", tpe_startup_trials, replace=True)
OmegaConf.register_resolver("tpe_constant_liar", tpe_constant_liar, replace=True)


def _plain(x):
    return OmegaConf.to_container(x, resolve=True) if isinstance(x, DictConfig | ListConfig) else x


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


IDENTITY_ATTR = "config_identity"  # study user attrs: the hash and the flat fixed config it hashes
IDENTITY_CONFIG_ATTR = "config_identity_keys"
# keys a study may be resumed with other values of: how it is launched and logged, and the training length
# (a study is often resumed with longer or shorter trials, as a run dir resumes with another max_epochs)
IDENTITY_IGNORED = ("hydra", "optuna", "logger", "torch_threads", "raise_on_failure", "ckpt_path",
                    "data.num_workers", "trainer.enable_progress_bar", "trainer.enable_model_summary",
                    "trainer.max_epochs", "trainer.max_steps", "trainer.limit_train_batches",
                    "trainer.limit_val_batches")  # fmt: skip


def study_identity(config: DictConfig, space: dict) -> tuple[str, dict[str, str]]:
    """(hash, flat fixed config) of a study: the search space (each parameter's distribution) and every config
    key the sweep does not search, unresolved (launcher and logging keys excluded: the local and SLURM launchers
    pointed at one storage find the same study)."""
    from neuromf.tracking.run import flat_config

    flat = flat_config(OmegaConf.to_container(config, resolve=False))
    fixed = {
        k: json.dumps(v, sort_keys=True, default=str)
        for k, v in flat.items()
        if k not in space and not any(k == p or k.startswith(f"{p}.") for p in IDENTITY_IGNORED)
    }
    keys = {**{f"space:{k}": repr(v) for k, v in sorted(space.items())}, **fixed}
    digest = hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:16]
    return digest, keys


class StudyMismatchError(Exception):
    """An existing study was created with another search space or fixed config."""


def check_study_identity(study: optuna.Study, digest: str, keys: dict[str, str], where: str) -> None:
    """Records the identity on a new study (or one that predates it); refuses a study created otherwise."""
    recorded = study.user_attrs.get(IDENTITY_ATTR)
    if recorded is None:
        study.set_user_attr(IDENTITY_ATTR, digest)
        study.set_user_attr(IDENTITY_CONFIG_ATTR, keys)
        return
    if recorded == digest:
        return
    old = study.user_attrs.get(IDENTITY_CONFIG_ATTR) or {}
    changed = sorted(k for k in old.keys() | keys.keys() if old.get(k) != keys.get(k))
    shown = ", ".join(f"{k}: {old.get(k, '-')} -> {keys.get(k, '-')}" for k in changed[:4])
    more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
    raise StudyMismatchError(
        f"study {study.study_name!r} in {where} was created with another search space or fixed config "
        f"({shown}{more}); its trials would be mixed with these: use another hydra.sweep.dir (a new study), or "
        "re-run with the study's own config to resume it"
    )


class ResumableOptunaSweeper(OptunaSweeper):
    """hydra-optuna-sweeper's OptunaSweeper with

    - `n_trials` read as the study's *total*: finished trials are subtracted; job numbers continue after the
      existing trials so run dirs never clash;
    - `storage: auto` -> a journal file for SLURM launchers, SQLite for local ones (neuromf/sweep/storage.py);
    - a pruner: each job gets `+optuna.study/storage/trial` and reports to its trial; a job that returns
      `Pruned` is told PRUNED;
    - stale trials (RUNNING, job gone) closed as FAIL with user attr `fail_reason` on resume;
    - `baselines` enqueued (once) before the sampler's trials.
    """

    def __init__(self, *args, pruner: Any = None, baselines: Any = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.pruner_cfg = _plain(pruner)
        self.baselines = [dict(b) for b in (_plain(baselines) or [])]

    # ---------------------------------------------------------------------------------------- study
    def _storage_url(self) -> str | None:
        impl = self.sweeper
        on_slurm = "Slurm" in str(impl.config.hydra.launcher.get("_target_", ""))
        return resolve_storage(impl.storage, impl.config.hydra.sweep.dir, on_slurm)

    def _study(self, storage_url: str | None, directions: list[str]) -> optuna.Study:
        impl = self.sweeper
        storage = open_storage(storage_url) if storage_url else None
        study = optuna.create_study(
            study_name=impl.study_name,
            storage=storage,
            sampler=impl.sampler,
            pruner=make_pruner(self.pruner_cfg),
            directions=directions,
            load_if_exists=True,
        )
        if self.pruner_cfg and study.user_attrs.get(PRUNER_ATTR) != self.pruner_cfg:
            study.set_user_attr(PRUNER_ATTR, self.pruner_cfg)  # the jobs instantiate the same pruner
        return study

    def close_stale_trials(self, study: optuna.Study) -> list[int]:
        """Trials left RUNNING whose jobs are gone -> FAIL (user attrs `fail_reason`, `stale`); their numbers."""
        closed = []
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            reason = stale_reason(t)
            if reason is None:
                continue
            study._storage.set_trial_user_attr(t._trial_id, "fail_reason", reason)
            study._storage.set_trial_user_attr(t._trial_id, STALE, True)
            study.tell(t.number, state=TrialState.FAIL)
            log.warning("trial %d closed as FAIL: %s", t.number, reason)
            closed.append(t.number)
        return closed

    def enqueue_baselines(self, study: optuna.Study) -> int:
        """Enqueue each baseline unless a trial with its params already exists (any state): idempotent."""
        n = 0
        for params in self.baselines:
            before = len(study.get_trials(deepcopy=False))
            study.enqueue_trial(params, user_attrs={"baseline": True}, skip_if_exists=True)
            n += len(study.get_trials(deepcopy=False)) > before
        return n

    # ---------------------------------------------------------------------------------------- sweep
    def sweep(self, arguments: list[str]) -> None:
        impl = self.sweeper
        Path(impl.config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)
        impl._process_searchspace_config()
        space, fixed, fixed_overrides = create_params_from_overrides([*impl._parse_sweeper_params_config(), *arguments])
        for name in fixed:
            space.pop(name, None)
        if isinstance(impl.sampler, functools.partial) and impl.sampler.func == optuna.samplers.GridSampler:
            grid = {name: impl._to_grid_sampler_choices(d) for name, d in space.items()}
            impl.sampler = impl.sampler(grid)
            n_grid = 1
            for v in grid.values():
                n_grid *= len(v)
            impl.n_trials = min(impl.n_trials, n_grid + len(self.baselines))
        directions = impl._get_directions()
        storage_url = self._storage_url()
        try:
            study = self._study(storage_url, directions)
            check_study_identity(study, *study_identity(impl.config, space), where=str(storage_url))
        except (StorageError, StudyMismatchError) as err:  # a damaged study file, or another search's study
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        log.info("study %r in %s (pruner %s)", study.study_name, storage_url, type(study.pruner).__name__)

        closed = self.close_stale_trials(study)
        self.enqueue_baselines(study)
        trials = study.get_trials(deepcopy=False)
        # a trial closed as stale is no result: like the RUNNING trials before, it is replaced by a new one
        finished = sum(t.state in FINISHED and STALE not in t.user_attrs for t in trials)
        started = sum(t.state != TrialState.WAITING for t in trials)
        impl.job_idx = started
        to_go = max(0, impl.n_trials - finished)
        if finished or closed:
            log.info("resuming study %r: %d trials finished (%d closed as stale), %d to go",
                     study.study_name, finished, len(closed), to_go)  # fmt: skip
        if to_go == 0:
            log.info("study %r already has its %d trials", study.study_name, finished)
            return None

        while to_go > 0:
            batch = [study.ask() for _ in range(min(impl.n_jobs, to_go))]
            overrides = impl._configure_trials(batch, space, fixed, fixed_overrides)
            launch = []
            for trial, ov in zip(batch, overrides):
                ov = self._baseline_overrides(study, trial, ov, space)
                trial.set_user_attr("launcher_host", socket.gethostname())
                trial.set_user_attr("launcher_pid", os.getpid())
                trial.set_user_attr("job_num", impl.job_idx + len(launch))
                extra = [f"+optuna.study={_quote(study.study_name)}", f"+optuna.trial={trial.number}"]
                if storage_url:
                    extra.append(f"+optuna.storage={_quote(storage_url)}")
                launch.append(tuple(ov) + tuple(extra))
            returns = impl.launcher.launch(launch, initial_job_idx=impl.job_idx)
            impl.job_idx += len(returns)
            failures = [self._tell(study, trial, ret, len(directions)) for trial, ret in zip(batch, returns)]
            failures = [f for f in failures if f is not None]
            if len(failures) / len(returns) > impl.max_failure_rate:
                log.error("failed %d times out of %d with max_failure_rate=%s",
                          len(failures), len(returns), impl.max_failure_rate)  # fmt: skip
                for ret in returns:
                    ret.return_value  # noqa: B018  (raises the job's own exception)
            to_go -= len(batch)
        self._save_results(study, directions)

    @staticmethod
    def _baseline_overrides(study: optuna.Study, trial, overrides, space) -> tuple[str, ...]:
        """A baseline's values for keys outside the search space replace the command line's for its trial (and
        are recorded as user attrs, as the sweeper does for fixed params)."""
        fixed = study._storage.get_trial(trial._trial_id).system_attrs.get("fixed_params") or {}
        extra = {k: v for k, v in fixed.items() if k not in space}
        if not extra:
            return tuple(overrides)
        kept = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in extra]
        for k, v in extra.items():
            trial.set_user_attr(k, v)
        return (*kept, *(f"{k}={v}" for k, v in extra.items()))

    @staticmethod
    def _tell(study: optuna.Study, trial, ret, n_directions: int) -> Exception | None:
        """Tell the study how the job ended; the exception of a failed job (None otherwise)."""
        try:
            value = ret.return_value
            if isinstance(value, Pruned):
                outcome = {"state": TrialState.PRUNED}
            else:
                values = [float(value)] if n_directions == 1 else [float(v) for v in value]
                if len(values) != n_directions:
                    raise ValueError(f"expected {n_directions} objective values, got {len(values)}")
                outcome = {"values": values}  # NaN -> FAIL (Optuna)
        except Exception as err:  # the job raised, or returned nothing usable
            ResumableOptunaSweeper._tell_once(study, trial, state=TrialState.FAIL)
            log.warning("failed experiment: %s", err)
            return err
        ResumableOptunaSweeper._tell_once(study, trial, **outcome)
        return None

    @staticmethod
    def _tell_once(study: optuna.Study, trial, **outcome) -> None:
        """study.tell, where the trial may already be finished when it raises: GridSampler's after_trial calls
        study.stop() once the grid is done (an error outside study.optimize, after the state is stored), and another
        launcher of the same study may have closed the trial. A trial still RUNNING re-raises."""
        try:
            study.tell(trial, **outcome)
        except Exception as err:
            state = study._storage.get_trial(trial._trial_id).state
            if state == TrialState.RUNNING:
                raise
            log.info("trial %d is %s (%s)", trial.number, state.name, err)

    def _save_results(self, study: optuna.Study, directions: list[str]) -> None:
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(directions) > 1:
            out = {"name": "optuna", "solutions": [{"params": t.params, "values": t.values} for t in study.best_trials]}
        elif complete:
            best = study.best_trial
            out = {"name": "optuna", "best_params": best.params, "best_value": best.value}
            log.info("best trial %d: %s = %s", best.number, best.params, best.value)
        else:
            log.error("no trial of study %r completed", study.study_name)
            print(f"error: no trial of study {study.study_name!r} completed", file=sys.stderr)
            return
        OmegaConf.save(OmegaConf.create(out), f"{self.sweeper.config.hydra.sweep.dir}/optimization_results.yaml")


# Hydra instantiates sweepers only from its plugin registry (classes under the `hydra_plugins` namespace or
# the `hydra.plugins` entry points), so `_target_: neuromf.sweep.optuna.ResumableOptunaSweeper` needs this.
# neuromf/sweep/__init__.py imports this module; neuromf.train imports neuromf.sweep (before Hydra composes the
# config, which needs the schema registered above).
Plugins.instance().register(ResumableOptunaSweeper)
