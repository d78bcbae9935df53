"""Optuna sweeper that resumes its study: re-running the same command runs only the trials still missing."""

from __future__ import annotations

import logging

import optuna
from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

log = logging.getLogger(__name__)
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED)


class ResumableOptunaSweeper(OptunaSweeper):
    """hydra-optuna-sweeper's OptunaSweeper with `n_trials` read as the study's *total*: trials already finished
    in the storage are subtracted, and job numbers continue after the existing trials so run dirs never clash."""

    def sweep(self, arguments: list[str]) -> None:
        impl = self.sweeper
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
