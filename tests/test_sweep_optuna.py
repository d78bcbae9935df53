"""Optuna searches of the real training app on the local SLURM (`sweep=lr_optuna`, i.e. the resumable_optuna
sweeper, with hydra/launcher=slurm_a100): the study in <sweep dir>/optuna.journal (storage=auto on SLURM) resumes
when the same command runs again, and failed arms are recorded as failed runs and failed trials while the other
arms still run.
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from conftest import TINY_EPOCH, TINY_TRAIN, job_dirs, run_overrides, slurm_launcher

from neuromf.sweep.storage import find_storage, open_storage

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _trials(sweep_dir: Path, study_name: str) -> list[optuna.trial.FrozenTrial]:
    assert (sweep_dir / "optuna.journal").is_file()  # storage=auto on SLURM: a journal file, not SQLite
    study = optuna.load_study(study_name=study_name, storage=open_storage(find_storage(sweep_dir)))
    return sorted(study.get_trials(), key=lambda t: t.number)


def _array_ids(sweep_dir: Path) -> set[str]:
    """SLURM array job ids the sweep submitted (submitit's folders are <array id>_<task>/)."""
    ids = {p.name.split("_")[0] for p in (sweep_dir / ".submitit").iterdir() if re.fullmatch(r"\d+(_\d+)?", p.name)}
    # sbatch scripts: the trials ran through SLURM, not locally
    assert all((sweep_dir / ".submitit" / i / f"{i}_submission.sh").is_file() for i in ids)
    return ids


def test_optuna_study_resumes_on_slurm(slurm_cluster, neuromf_multirun, tmp_path):
    sweep = tmp_path / "optuna"

    def search(n_trials: int):
        t0 = time.time()
        proc = neuromf_multirun(
            [
                "sweep=lr_optuna",
                *slurm_launcher(slurm_cluster),
                f"hydra.sweep.dir={sweep}",
                f"hydra.sweeper.n_trials={n_trials}",
                "hydra.sweeper.n_jobs=2",
                *TINY_TRAIN,
                *TINY_EPOCH,
            ],
            timeout=1800,
        )
        print(f"lr_optuna n_trials={n_trials}: {time.time() - t0:.0f}s")
        return proc

    # 1) two trials, one SLURM array of 2 tasks
    search(2)
    trials = _trials(sweep, "lr_optuna")
    assert [t.number for t in trials] == [0, 1]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    run_dirs = job_dirs(sweep)
    assert [p.name for p in run_dirs] == ["0", "1"]
    for trial, run_dir in zip(trials, run_dirs, strict=True):  # job num == trial number
        ov = run_overrides(run_dir)
        assert float(ov["optim.lr"]) == pytest.approx(trial.params["optim.lr"])
        assert float(ov["optim.beta2"]) == pytest.approx(trial.params["optim.beta2"])
        assert 1e-5 <= trial.params["optim.lr"] <= 1e-3
        status = json.loads((run_dir / "status.json").read_text())
        assert status["status"] == "completed"
        assert trial.value == pytest.approx(status["objective"])  # the objective reached Optuna
    first_arrays = _array_ids(sweep)
    assert len(first_arrays) == 1
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(min(t.value for t in trials))
    mtimes = {p.name: (p / "status.json").stat().st_mtime for p in run_dirs}

    # 2) the same command again: the study already has its 2 trials -> nothing runs
    proc = search(2)
    assert [(t.number, t.state, t.value) for t in _trials(sweep, "lr_optuna")] == [
        (t.number, t.state, t.value) for t in trials
    ]
    assert [p.name for p in job_dirs(sweep)] == ["0", "1"]
    assert _array_ids(sweep) == first_arrays  # nothing submitted
    assert "already has its 2 trials" in proc.stdout + proc.stderr

    # 3) n_trials raised to 3: exactly one new trial, in a new job dir; the old runs stay untouched
    search(3)
    trials3 = _trials(sweep, "lr_optuna")
    assert [t.number for t in trials3] == [0, 1, 2]
    assert [(t.params, t.value) for t in trials3[:2]] == [(t.params, t.value) for t in trials]
    assert trials3[2].state == optuna.trial.TrialState.COMPLETE
    run_dirs = job_dirs(sweep)
    assert [p.name for p in run_dirs] == ["0", "1", "2"]
    assert float(run_overrides(run_dirs[2])["optim.lr"]) == pytest.approx(trials3[2].params["optim.lr"])
    assert {p.name: (p / "status.json").stat().st_mtime for p in run_dirs[:2]} == mtimes
    assert len(_array_ids(sweep) - first_arrays) == 1  # one new submission
    summary = pd.read_csv(sweep / "sweep_summary.csv")
    assert sorted(summary["job"]) == [0, 1, 2] and set(summary["status"]) == {"completed"}


def test_failed_arm_is_recorded_and_the_others_run(slurm_cluster, neuromf_multirun, tmp_path):
    """x-prediction with the finite-difference JVP is an invalid combination: that arm's run dir says failed,
    its Optuna trial is FAIL (the arm returns NaN), and the valid arm completes. A NaN return is not an
    exception, so it does not count towards max_failure_rate: the search goes on."""
    sweep = tmp_path / "optuna"
    neuromf_multirun(
        [
            "sweep=lr_optuna",
            *slurm_launcher(slurm_cluster),
            f"hydra.sweep.dir={sweep}",
            "hydra/sweeper/sampler=grid",  # each JVP exactly once
            "hydra.sweeper.params=null",  # drop lr_optuna's search space; search only the command-line one
            "hydra.sweeper.baselines=null",
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.n_jobs=2",
            "hydra.sweeper.max_failure_rate=0.0",
            *TINY_TRAIN,
            *TINY_EPOCH,
            "model.prediction_type=x",
            "loss.jvp=choice(exact,fd)",
        ],
        timeout=1800,
    )
    trials = _trials(sweep, "lr_optuna")
    assert sorted(t.params["loss.jvp"] for t in trials) == ["exact", "fd"]
    by_jvp = {t.params["loss.jvp"]: t for t in trials}
    assert by_jvp["fd"].state == optuna.trial.TrialState.FAIL and by_jvp["fd"].value is None
    assert by_jvp["exact"].state == optuna.trial.TrialState.COMPLETE and math.isfinite(by_jvp["exact"].value)

    statuses = {}
    for run_dir in job_dirs(sweep):
        statuses[run_overrides(run_dir)["loss.jvp"]] = json.loads((run_dir / "status.json").read_text())
    assert statuses["fd"]["status"] == "failed"
    assert statuses["fd"]["reason"].startswith("InputError: model.prediction_type=x with loss.jvp=fd is refused")
    assert statuses["exact"]["status"] == "completed"
    assert statuses["exact"]["objective"] == pytest.approx(by_jvp["exact"].value)
    summary = pd.read_csv(sweep / "sweep_summary.csv").set_index("status")
    assert sorted(summary.index) == ["completed", "failed"]
    assert math.isnan(summary.loc["failed", "objective"])
