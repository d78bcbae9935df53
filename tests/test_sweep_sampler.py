"""The Optuna sweeps' sampler (conf/hydra/sweeper/sampler/tpe_sized.yaml): start-up trials, multivariate TPE and
the constant liar sized to each study, built as the sweeper builds it, and a seeded study asking the same trials."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
from omegaconf import OmegaConf

from neuromf.sweep.optuna import ResumableOptunaSweeper, tpe_constant_liar, tpe_startup_trials

CONF = str(Path(__file__).resolve().parents[1] / "conf")


def _sweeper_cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        return compose("train", overrides=list(overrides), return_hydra_config=True).hydra.sweeper


def _sampler(*overrides: str) -> optuna.samplers.BaseSampler:
    """The sampler exactly as our sweeper builds it (OptunaSweeper.__init__ instantiates hydra.sweeper.sampler)."""
    cfg = _sweeper_cfg(*overrides)
    args = {k: cfg[k] for k in cfg if k != "_target_"}  # nodes keep their parent: interpolations resolve
    return ResumableOptunaSweeper(**args).sweeper.sampler


@pytest.mark.parametrize(
    ("n_trials", "expected"), [(1, 3), (8, 3), (12, 3), (15, 3), (16, 4), (24, 6), (40, 10), (100, 25)]
)
def test_startup_trials_are_a_quarter_of_the_study_and_at_least_three(n_trials, expected):
    assert tpe_startup_trials(n_trials) == expected


def test_constant_liar_only_when_trials_run_side_by_side():
    assert (tpe_constant_liar(1), tpe_constant_liar(2), tpe_constant_liar(8)) == (False, True, True)


@pytest.mark.parametrize(("sweep", "startup"), [("lr_optuna", 3), ("joint_optuna", 6)])
def test_each_optuna_sweep_composes_a_sampler_sized_to_its_study(sweep, startup):
    cfg = _sweeper_cfg(f"sweep={sweep}")
    sampler = OmegaConf.to_container(cfg.sampler, resolve=True)
    assert sampler["_target_"] == "optuna.samplers.TPESampler"
    assert (sampler["n_startup_trials"], sampler["multivariate"], sampler["constant_liar"]) == (startup, True, True)
    assert sampler["seed"] == 0 and cfg.n_jobs == 2
    assert sampler["n_startup_trials"] <= cfg.n_trials // 4  # most of the study is modelled, not random
    built = _sampler(f"sweep={sweep}")  # what the sweeper hands to optuna.create_study
    assert isinstance(built, optuna.samplers.TPESampler)
    assert (built._n_startup_trials, built._multivariate, built._constant_liar) == (startup, True, True)


def test_the_settings_follow_the_command_lines_study_size():
    built = _sampler("sweep=lr_optuna", "hydra.sweeper.n_trials=40", "hydra.sweeper.n_jobs=1")
    assert (built._n_startup_trials, built._constant_liar) == (10, False)


def test_other_samplers_still_compose_with_the_optuna_sweeps():
    grid = _sweeper_cfg("sweep=lr_optuna", "hydra/sweeper/sampler=grid").sampler
    assert grid._target_ == "optuna.samplers.GridSampler"
    plain = OmegaConf.to_container(_sweeper_cfg("sweep=lr_optuna", "hydra/sweeper/sampler=tpe").sampler)
    assert plain["n_startup_trials"] == 10 and plain["constant_liar"] is False  # Optuna's own TPE defaults


def _lr_optuna_space() -> dict:
    params = _sweeper_cfg("sweep=lr_optuna").params
    space, _fixed, _ = create_params_from_overrides([f"{k}={v}" for k, v in params.items()])
    return space


def _objective(p: dict) -> float:
    """Cheap stand-in for a run: best at lr 1e-4, beta2 0.95, 50 warm-up steps."""
    return (
        (math.log10(p["optim.lr"]) + 4) ** 2
        + (p["optim.beta2"] - 0.95) ** 2 * 100
        + (p["optim.warmup_steps"] - 50) ** 2 / 1e4
    )


def _asked(sampler: optuna.samplers.BaseSampler, space: dict, n_trials: int = 12, n_jobs: int = 2) -> list[dict]:
    """Trials asked as the sweeper asks them: `n_jobs` at a time, all told after the batch."""
    study = optuna.create_study(sampler=sampler)
    study.enqueue_trial({"optim.lr": 3e-4, "optim.beta2": 0.999, "optim.warmup_steps": 10})  # the baseline
    asked = []
    while len(asked) < n_trials:
        batch = [study.ask(space) for _ in range(n_jobs)]
        for trial in batch:
            study.tell(trial, _objective(trial.params))
            asked.append(trial.params)
    return asked


def test_a_seeded_study_asks_the_same_trials_again():
    space = _lr_optuna_space()
    first = _asked(_sampler("sweep=lr_optuna"), space)
    again = _asked(_sampler("sweep=lr_optuna"), space)
    assert first == again and len(first) == 12
    assert len({tuple(sorted(p.items())) for p in first}) == 12  # the constant liar: no trial asked twice
    other = _asked(_sampler("sweep=lr_optuna", "hydra.sweeper.sampler.seed=1"), space)
    assert other[0] == first[0] and other[1:] != first[1:]  # the baseline first; the seed decides the rest
