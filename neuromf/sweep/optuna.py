"""Optuna sweeper that resumes its study: re-running the same command runs only the trials still missing."""

from __future__ import annotations

import logging
from pathlib import Path

import optuna
from hydra.core.plugins import Plugins
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

log = logging.getLogger(__name__)
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED)


class ResumableOptunaSweeper(OptunaSweeper):
    """hydra-optuna-sweeper's OptunaSweeper with `n_trials` read as the study's *total*: trials already
    finished in the storage are subtracted, and job numbers continue after the existing trials so run dirs
    never clash."""

    def sweep(self, arguments: list[str]) -> None:
        impl = self.sweeper
        # The study may live in the sweep dir (sqlite:///<sweep dir>/optuna.db), which Hydra creates only when
        # it launches the first job: SQLite cannot create the file before its directory exists.
        Path(impl.config.hydra.sweep.dir).mkdir(parents=True, exist_ok=True)
        try:
            study = optuna.load_study(study_name=impl.study_name, storage=impl.storage)
            trials = study.get_trials(deepcopy=False)
        except (KeyError, ValueError):  # no such study yet
            trials = []
        finished = sum(t.state in FINISHED for t in trials)
        impl.job_idx = len(trials)
        impl.n_trials = max(0, impl.n_trials - finished)
        if trials:
            log.info("resuming study %r: %d trials finished, %d to go", impl.study_name, finished, impl.n_trials)
        if impl.n_trials == 0:
            log.info("study %r already has its %d trials", impl.study_name, finished)
            return None
        return super().sweep(arguments)


# Hydra instantiates sweepers only from its plugin registry (classes under the `hydra_plugins` namespace or
# the `hydra.plugins` entry points), so `_target_: neuromf.sweep.optuna.ResumableOptunaSweeper` needs this.
# neuromf/sweep/__init__.py imports this module, and Hydra imports neuromf.sweep.summary (the sweep_summary
# callback of conf/train.yaml) before it instantiates the sweeper.
Plugins.instance().register(ResumableOptunaSweeper)
