"""Pruning, stale trials, baselines and shared storages of the resumable Optuna sweeper, with the real training app
on the local SLURM (tiny network, 2 steps per epoch, 1 CPU per job)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import torch
from conftest import TINY_TRAIN, job_dirs, run_overrides, slurm_launcher
from training_helpers import HOPELESS, PRUNING_EPOCHS

from neuromf.sweep.storage import find_storage, open_storage

pytestmark = [pytest.mark.integration, pytest.mark.slow]
State = optuna.trial.TrialState
EPOCHS = PRUNING_EPOCHS  # 6 steps
# Waits on other processes end on what they do (exit, a file, a study state), never on a fixed time: these deadlines
# only stop a hung test, and the SLURM job limit only kills a hung job, on a loaded 2-core CI machine included.
DEADLINE_S = 1800
JOB_LIMIT_MIN = 60


def _study(sweep_dir: Path, storage: str | None = None, name: str = "lr_optuna") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(storage or find_storage(sweep_dir)))


MEDIAN = [
    "hydra/sweeper/pruner=median",
    "hydra.sweeper.pruner.n_startup_trials=2",
    "hydra.sweeper.pruner.n_warmup_steps=0",
]
FOUR = [*HOPELESS, *EPOCHS, "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2"]


def _search(run, partition: str, sweep: Path, *args: str, timeout: float = DEADLINE_S):
    return run(
        [
            "sweep=lr_optuna",
            *slurm_launcher(partition, timeout_min=JOB_LIMIT_MIN),
            f"hydra.sweep.dir={sweep}",
            *TINY_TRAIN,
            *args,
        ],
        timeout=timeout,
    )


def test_hopeless_trials_are_pruned_and_baselines_run_first(slurm_cluster, neuromf_multirun, tmp_path):
    """4 trials, 2 per batch: the two enqueued baselines (lr 1e-3) run first and complete; the two sampled trials
    (lr 1e-12) are pruned by the median pruner at their first validation (step 2 of 6), stop cleanly with their
    checkpoint, and say so in status.json, the sweep summary and the study. Re-running resumes the journal study
    and enqueues nothing twice."""
    sweep = tmp_path / "optuna"
    t0 = time.time()
    _search(neuromf_multirun, slurm_cluster, sweep, *MEDIAN, *FOUR)
    print(f"pruned study (4 trials): {time.time() - t0:.0f}s")
    assert find_storage(sweep).startswith("journal:///")  # SLURM default storage
    trials = sorted(_study(sweep).get_trials(), key=lambda t: t.number)
    assert [t.state for t in trials] == [State.COMPLETE, State.COMPLETE, State.PRUNED, State.PRUNED]
    assert [t.user_attrs.get("baseline", False) for t in trials] == [True, True, False, False]
    assert {t.params["optim.beta2"] for t in trials[:2]} == {0.99, 0.999}
    for t in trials:  # every job reported at each validation, by training step
        assert t.user_attrs["run_dir"] == str(sweep / str(t.number))
        if t.state == State.COMPLETE:
            assert sorted(t.intermediate_values) == [2, 4, 6]
        else:
            assert sorted(t.intermediate_values) == [2]
            assert t.intermediate_values[2] > max(b.intermediate_values[2] for b in trials[:2])
    for run_dir in job_dirs(sweep):
        ov, status = run_overrides(run_dir), json.loads((run_dir / "status.json").read_text())
        ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        if int(run_dir.name) < 2:
            assert float(ov["optim.lr"]) == 1e-3 and status["status"] == "completed" and status["global_step"] == 6
        else:
            assert float(ov["optim.lr"]) == 1e-12 and status["status"] == "pruned"
            assert status["pruned_step"] == 2 == status["global_step"] == ckpt["global_step"]  # before the last epoch
            assert status["reason"].startswith("pruned by MedianPruner at step 2")
    summary = pd.read_csv(sweep / "sweep_summary.csv").sort_values("job")
    assert list(summary["status"]) == ["completed", "completed", "pruned", "pruned"]
    assert list(summary["pruned_step"].fillna(-1)) == [-1, -1, 2, 2]
    assert (summary["saved_gpu_h"].iloc[2:] > 0).all()

    proc = _search(neuromf_multirun, slurm_cluster, sweep, *MEDIAN, *FOUR)
    assert "already has its 4 trials" in proc.stdout + proc.stderr
    assert len(_study(sweep).trials) == 4  # the baselines were not enqueued again


def test_killed_launchers_running_trial_is_closed_as_fail(slurm_cluster, neuromf_multirun, tmp_path):
    """The launcher is killed (SIGKILL) while its trial trains and the SLURM job is cancelled: the trial stays
    RUNNING. The same command again closes it as FAIL with a reason and runs a new trial in the next job dir."""
    sweep = tmp_path / "optuna"
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "WANDB_MODE": "offline"}
    args = [
        "sweep=lr_optuna",
        *slurm_launcher(slurm_cluster, timeout_min=JOB_LIMIT_MIN),
        f"hydra.sweep.dir={sweep}",
        "hydra.sweeper.n_trials=1",
        "hydra.sweeper.n_jobs=1",
        "hydra.sweeper.baselines=null",
        *TINY_TRAIN,
    ]
    launcher = subprocess.Popen(
        [sys.executable, "-m", "neuromf.train", "-m", *args, "trainer.max_epochs=1000", "+trainer.limit_val_batches=1"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline, job = time.time() + DEADLINE_S, None
        while time.time() < deadline and job is None:  # until the job started and recorded itself on its trial
            time.sleep(2)
            if find_storage(sweep):
                running = _study(sweep).get_trials(states=(State.RUNNING,))
                job = running[0].user_attrs.get("slurm_job_id") if running else None
        assert job, "the trial's job never started"
    finally:
        os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait()
    subprocess.run(["scancel", job], check=True)
    deadline = time.time() + DEADLINE_S
    while time.time() < deadline:  # until SLURM no longer runs it
        out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True).stdout.split()
        if not out or out[0] not in ("RUNNING", "COMPLETING", "PENDING"):
            break
        time.sleep(1)
    assert [t.state for t in _study(sweep).trials] == [State.RUNNING]

    neuromf_multirun([*args, "trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1",
                      "hydra.sweeper.n_trials=1"], timeout=DEADLINE_S)  # fmt: skip
    t0, t1 = sorted(_study(sweep).trials, key=lambda t: t.number)
    assert t0.state == State.FAIL and t0.user_attrs["fail_reason"].startswith("stale: job in")
    assert f"SLURM job {job}" in t0.user_attrs["fail_reason"]
    assert t1.state == State.COMPLETE and t1.user_attrs["run_dir"] == str(sweep / "1")


def test_two_launchers_share_a_postgresql_study(slurm_cluster, postgres_url, tmp_path, neuromf_multirun):
    """Two launchers at once (own sweep dirs) on one study in a real PostgreSQL server: both trials complete,
    numbered apart, and their jobs reported their intermediate values to the server."""
    name = f"pg_{os.getpid()}_{int(time.time())}"
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "WANDB_MODE": "offline"}
    common = [
        "sweep=lr_optuna",
        *slurm_launcher(slurm_cluster, timeout_min=JOB_LIMIT_MIN),
        f"hydra.sweeper.storage={postgres_url}",
        f"hydra.sweeper.study_name={name}",
        "hydra.sweeper.n_trials=1",
        "hydra.sweeper.n_jobs=1",
        "hydra.sweeper.baselines=null",
        *TINY_TRAIN,
        "trainer.max_epochs=2",
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1",
    ]
    procs = [
        subprocess.Popen([sys.executable, "-m", "neuromf.train", "-m", *common, f"hydra.sweep.dir={tmp_path / d}"],
                         cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for d in ("a", "b")
    ]  # fmt: skip
    for p in procs:
        out, _ = p.communicate(timeout=DEADLINE_S)  # each waits on its own process: no fixed sleep
        assert p.returncode == 0, out[-4000:]
    study = _study(tmp_path, postgres_url, name)
    trials = sorted(study.trials, key=lambda t: t.number)
    assert len(trials) >= 2 and len({t.number for t in trials}) == len(trials)
    assert all(t.state == State.COMPLETE and sorted(t.intermediate_values) == [2, 4] for t in trials)
    assert {Path(t.user_attrs["run_dir"]).parent.name for t in trials} == {"a", "b"}
    assert not find_storage(tmp_path / "a")  # no file storage next to the runs
