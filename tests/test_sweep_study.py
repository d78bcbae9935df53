"""The study side of the Optuna sweeps without SLURM or training: pruners from the sweep files, driven through the
job side (OptunaReporter) with values by training step on a study on disk (journal or SQLite) -- what each pruner
stops and when (warm-up), a requeued job's reports --, the default storages, and the sweep files' baselines."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra_plugins.hydra_optuna_sweeper._impl import create_optuna_distribution_from_override
from omegaconf import OmegaConf

from neuromf.sweep.optuna import ResumableOptunaSweeper
from neuromf.sweep.pruning import PRUNER_ATTR, OptunaReporter, make_pruner
from neuromf.sweep.storage import open_storage, resolve_storage

CONF = str(Path(__file__).resolve().parent.parent / "conf")
KEY = "val/objective"
State = optuna.trial.TrialState
# validations at training steps 2, 4, 6 (a run of 6 steps); lower is better; float32-exact values
GOOD_A = {2: 1.0, 4: 0.625, 6: 0.375}
GOOD_B = {2: 0.875, 4: 0.5, 6: 0.25}
BEST = {2: 0.75, 4: 0.375, 6: 0.125}
HOPELESS = {2: 5.0, 4: 5.0, 6: 5.0}


def _hydra_cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONF):
        return compose(config_name="train", overrides=["sweep=lr_optuna", *overrides], return_hydra_config=True)


def _pruner_cfg(name: str, *overrides: str) -> dict:
    """hydra.sweeper.pruner as the sweeper gets it: sweeps/lr_optuna.yaml (its median warm-up keys included) with
    conf/hydra/sweeper/pruner/<name>.yaml and the command line's overrides."""
    cfg = _hydra_cfg(f"hydra/sweeper/pruner={name}", *overrides)
    return OmegaConf.to_container(cfg.hydra.sweeper.pruner, resolve=True)


def _study(storage: str, pruner_cfg: dict) -> optuna.Study:
    """The launcher's study, made as ResumableOptunaSweeper makes it (the jobs re-create its pruner)."""
    study = optuna.create_study(
        study_name="s", storage=open_storage(storage), pruner=make_pruner(pruner_cfg), direction="minimize"
    )
    study.set_user_attr(PRUNER_ATTR, pruner_cfg)
    return study


class _Trainer:
    """What OptunaReporter reads of a Lightning trainer (rank 0 of one process)."""

    is_global_zero, sanity_checking = True, False

    def __init__(self):
        self.global_step, self.callback_metrics, self.should_stop = 0, {}, False
        self.strategy = SimpleNamespace(broadcast=lambda obj, src=0: obj)


def _job(storage: str, number: int, values: dict[int, float]) -> OptunaReporter:
    """One job of trial `number`: a validation at each step of `values` until the reporter stops the run."""
    reporter, trainer = OptunaReporter("s", storage, number, KEY), _Trainer()
    reporter.setup(trainer, None, "fit")
    for step, value in values.items():
        trainer.global_step, trainer.callback_metrics = step, {KEY: torch.tensor(value)}
        reporter.on_validation_end(trainer, None)
        if trainer.should_stop:
            assert reporter.pruned_step == step
            break
    return reporter


def _trial(study: optuna.Study, storage: str, values: dict[int, float]) -> int | None:
    """A trial as the sweeper runs it (ask, the job, tell PRUNED or the last value); the step it was pruned at."""
    trial = study.ask()
    pruned = _job(storage, trial.number, values).pruned_step
    study.tell(trial, state=State.PRUNED) if pruned is not None else study.tell(trial, values[max(values)])
    return pruned


@pytest.mark.parametrize(
    "name,overrides,pruner,hopeless_stop",
    [
        ("none", [], optuna.pruners.NopPruner, None),
        # n_warmup_steps=4: the hopeless trial's report at step 2 is not judged
        (
            "median",
            ["hydra.sweeper.pruner.n_startup_trials=2", "hydra.sweeper.pruner.n_warmup_steps=4"],
            optuna.pruners.MedianPruner,
            4,
        ),
        # first rung at min_resource=4 steps: nothing is judged before
        ("successive_halving", ["hydra.sweeper.pruner.min_resource=4"], optuna.pruners.SuccessiveHalvingPruner, 4),
        # min_resource=4, max_resource=auto (7: the first completed trial's steps + 1), factor 4: one bracket
        (
            "hyperband",
            ["hydra.sweeper.pruner.min_resource=4", "hydra.sweeper.pruner.reduction_factor=4"],
            optuna.pruners.HyperbandPruner,
            4,
        ),
    ],
)
def test_each_pruner_stops_a_hopeless_trial_after_its_warm_up_and_not_a_good_one(
    tmp_path, name, overrides, pruner, hopeless_stop
):
    cfg = _pruner_cfg(name, *overrides)
    assert type(make_pruner(cfg)) is pruner  # lr_optuna's median warm-up keys do not break other pruners
    storage = resolve_storage("auto", tmp_path, on_slurm=True)
    study = _study(storage, cfg)
    assert _trial(study, storage, GOOD_A) is None and _trial(study, storage, GOOD_B) is None
    assert _trial(study, storage, HOPELESS) == hopeless_stop
    assert _trial(study, storage, BEST) is None
    trials = study.get_trials()
    hopeless_state = State.COMPLETE if hopeless_stop is None else State.PRUNED
    assert [t.state for t in trials] == [State.COMPLETE, State.COMPLETE, hopeless_state, State.COMPLETE]
    stopped = [2, 4, 6] if hopeless_stop is None else [s for s in (2, 4, 6) if s <= hopeless_stop]
    assert sorted(trials[2].intermediate_values) == stopped  # reported by training step, up to the stop
    assert all(sorted(t.intermediate_values) == [2, 4, 6] for t in (trials[0], trials[1], trials[3]))


def test_a_requeued_job_continues_its_trials_report_sequence(tmp_path):
    """The requeued job re-runs the validation of its checkpoint's step: Optuna keeps the first report of that step
    (no duplicate, no error), the sequence goes on, and the pruner still judges it."""
    storage = resolve_storage("auto", tmp_path, on_slurm=True)
    cfg = _pruner_cfg("median", "hydra.sweeper.pruner.n_startup_trials=2", "hydra.sweeper.pruner.n_warmup_steps=4")
    study = _study(storage, cfg)
    _trial(study, storage, GOOD_A), _trial(study, storage, GOOD_B)
    good, hopeless = study.ask(), study.ask()
    assert _job(storage, good.number, {2: 0.75, 4: 0.5}).pruned_step is None  # killed after step 4
    assert _job(storage, hopeless.number, {2: 5.0}).pruned_step is None  # killed in its warm-up
    resumed = _job(storage, good.number, {4: 0.625, 6: 0.25})  # requeued from the checkpoint of step 4
    assert resumed.trial is not None and resumed.pruned_step is None
    assert study.get_trials()[good.number].intermediate_values == {2: 0.75, 4: 0.5, 6: 0.25}
    assert _job(storage, hopeless.number, {2: 5.125, 4: 5.0}).pruned_step == 4
    assert study.get_trials()[hopeless.number].intermediate_values == {2: 5.0, 4: 5.0}


def test_a_finished_trial_is_not_reported_to(tmp_path):
    """A trial the launcher closed (e.g. as stale) while its job still ran: the job trains on without reporting."""
    storage = resolve_storage("auto", tmp_path, on_slurm=True)
    study = _study(storage, _pruner_cfg("median", "hydra.sweeper.pruner.n_startup_trials=0"))
    trial = study.ask()
    study.tell(trial, state=State.FAIL)
    reporter = _job(storage, trial.number, HOPELESS)
    assert reporter.trial is None and reporter.pruned_step is None
    assert study.get_trials()[0].intermediate_values == {}


@pytest.mark.parametrize(
    "launcher,scheme,file", [("local", "sqlite:///", "optuna.db"), ("slurm_a100", "journal:///", "optuna.journal")]
)
def test_default_storage_is_sqlite_locally_and_a_journal_file_on_slurm(tmp_path, launcher, scheme, file):
    cfg = _hydra_cfg(f"hydra/launcher={launcher}", f"hydra.sweep.dir={tmp_path}")
    assert cfg.hydra.sweeper.storage == "auto"
    sweeper = SimpleNamespace(sweeper=SimpleNamespace(storage="auto", config=cfg))
    url = ResumableOptunaSweeper._storage_url(sweeper)
    assert url == f"{scheme}{tmp_path / file}"
    study = _study(url, _pruner_cfg("median"))  # the jobs reach the same study through this URL
    trial = study.ask()
    assert _job(url, trial.number, GOOD_A).trial is not None
    assert (tmp_path / file).is_file() and study.get_trials()[0].intermediate_values == GOOD_A


def test_lr_optuna_baseline_is_conf_optim_adamw_inside_the_search_space():
    """sweeps/lr_optuna.yaml says its baseline is conf/optim/adamw.yaml's values: it is, and the sampler's
    distributions hold it (an off-grid fixed value only earns an Optuna warning)."""
    cfg = _hydra_cfg()
    adamw = yaml.safe_load((Path(CONF) / "optim" / "adamw.yaml").read_text())
    parser = OverridesParser.create()
    (baseline,) = OmegaConf.to_container(cfg.hydra.sweeper.baselines)
    assert sorted(baseline) == sorted(cfg.hydra.sweeper.params)  # every searched key
    for key, value in baseline.items():
        assert value == adamw[key.removeprefix("optim.")], key
        dist = create_optuna_distribution_from_override(parser.parse_override(f"{key}={cfg.hydra.sweeper.params[key]}"))
        assert dist._contains(dist.to_internal_repr(value)), (key, value, dist)


def test_telling_the_last_grid_trial_and_an_already_closed_trial(caplog):
    """GridSampler's after_trial calls study.stop() once the grid is done, which raises outside study.optimize()
    after the state is stored; a trial another launcher closed cannot be told again. Both end as stored, no crash."""
    study = optuna.create_study(sampler=optuna.samplers.GridSampler({"x": [0, 1]}))
    trials = [study.ask({"x": optuna.distributions.CategoricalDistribution([0, 1])}) for _ in range(2)]
    for trial, value in zip(trials, (1.0, 2.0), strict=True):
        assert ResumableOptunaSweeper._tell(study, trial, SimpleNamespace(return_value=value), 1) is None
    assert [t.state for t in study.get_trials()] == [optuna.trial.TrialState.COMPLETE] * 2
    assert [t.value for t in study.get_trials()] == [1.0, 2.0]
    closed = optuna.create_study()
    trial = closed.ask()
    closed.tell(trial, state=optuna.trial.TrialState.FAIL)  # e.g. closed as stale by another launcher
    assert ResumableOptunaSweeper._tell(closed, trial, SimpleNamespace(return_value=3.0), 1) is None
    assert closed.get_trials()[0].state == optuna.trial.TrialState.FAIL
    running = optuna.create_study()
    with pytest.raises(ValueError, match="Cannot tell with state"):  # a trial left RUNNING re-raises
        ResumableOptunaSweeper._tell_once(running, running.ask(), state=optuna.trial.TrialState.RUNNING)


def test_a_fresh_trial_without_a_recorded_launcher_is_not_stale():
    """Between study.ask() and the launcher recording itself, another launcher of the study may look: a trial that
    just started is left alone; one that has had no launcher for long is stale."""
    import datetime

    from neuromf.sweep.pruning import UNRECORDED_GRACE_S, stale_reason

    study = optuna.create_study()
    study.ask()
    assert stale_reason(study.get_trials()[0]) is None
    old = datetime.datetime.now() - datetime.timedelta(seconds=UNRECORDED_GRACE_S + 1)
    assert stale_reason(SimpleNamespace(user_attrs={}, datetime_start=old)) == (
        "stale: no job or launcher recorded for this trial"
    )


def test_a_trial_whose_launcher_still_runs_here_is_not_stale(tmp_path):
    """Between a job's end (its run dir lock released) and its launcher telling the study, another launcher of the
    same study may look: the trial is not stale while its launcher lives on this host, and is once it is gone."""
    import socket
    import subprocess
    import sys

    from neuromf.sweep.pruning import stale_reason

    launcher = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    attrs = {"run_dir": str(tmp_path), "launcher_host": socket.gethostname(), "launcher_pid": launcher.pid}
    trial = SimpleNamespace(user_attrs=attrs, datetime_start=None)
    try:
        assert stale_reason(trial) is None  # no live lock on the run dir, but its launcher runs
    finally:
        launcher.communicate(b"")
    assert stale_reason(trial) == f"stale: job in {tmp_path} no longer runs (no live lock; its process is gone)"
