"""SIGTERM (what SLURM sends on preemption, `scancel` and at the time limit) to a training run and to a sequential
sweep, with real processes and signals: last.ckpt at the signal, status.json "stopped" with the reason, exit
status 143, and the same command resuming the uninterrupted loss curve and running the arms not yet run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_training_faults import SMALL, _trained_steps, step_rows
from training_helpers import TINY, tiny_cfg

from neuromf.tracking.run import read_status
from neuromf.train import train
from neuromf.training.checkpoint_io import validate_checkpoint
from neuromf.training.preemption import STOPPED_EXIT_CODE

REPO = Path(__file__).resolve().parent.parent
# 4 steps per epoch, 2 epochs; periodic last.ckpt only at epoch ends (step 4): what is trained after it is kept
# only by the checkpoint at the signal
EIGHT_STEPS = ["trainer.limit_train_batches=4", "trainer.max_epochs=2", "callbacks.checkpoint.every_n_train_steps=100"]
DEADLINE_S = 900  # only stops a hung test: every wait below ends on what the process writes


def _popen(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "neuromf.train", *args]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _sigterm_after_step(proc: subprocess.Popen, metrics: Path, step: int) -> tuple[str, str]:
    """SIGTERM once `step`'s loss row is in metrics.csv (mid-epoch 2); the process's (stdout, stderr)."""
    deadline = time.monotonic() + DEADLINE_S
    while step not in _trained_steps(metrics):
        assert proc.poll() is None, "the run ended before it could be stopped:\n" + proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    return proc.communicate(timeout=DEADLINE_S)


def _assert_stopped(run: Path, stderr: str) -> int:
    """The run recorded "stopped" at the step its last.ckpt holds (after the epoch-end checkpoint); that step."""
    assert "Traceback" not in stderr, stderr[-3000:]
    status = read_status(run)
    held = validate_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"]
    assert status["status"] == "stopped" and "SIGTERM at step" in status["reason"], status
    assert status["checkpoint_step"] == status["global_step"] == held and 5 <= held <= 7, (status, held)
    return held


@pytest.mark.slow
def test_sigterm_to_a_run_checkpoints_at_the_signal_and_exits_143(tmp_path):
    run = tmp_path / "run"
    proc = _popen([*TINY, *SMALL, *EIGHT_STEPS, f"hydra.run.dir={run}"])
    _, stderr = _sigterm_after_step(proc, run / "metrics.csv", 4)
    assert proc.returncode == STOPPED_EXIT_CODE == 143, stderr[-3000:]
    held = _assert_stopped(run, stderr)
    stopped = [line for line in stderr.splitlines() if line.startswith("stopped: ")]
    assert stopped == [
        f"stopped: {run}: stopped by SIGTERM at step {held} (preemption, scancel or the time limit); last.ckpt "
        f"holds step {held}; re-run the same command with hydra.run.dir={run} to resume"
    ]


@pytest.mark.slow
def test_sigterm_to_a_sequential_sweep_stops_it_and_the_same_command_resumes_and_runs_the_rest(tmp_path):
    """Arm 0 is stopped mid-epoch: the sweep exits 143 without starting arm 1, its summary lists arm 0 stopped and
    arm 1 not started; the same command resumes arm 0 to the loss curve of an uninterrupted run and runs arm 1."""
    reference = tmp_path / "straight"
    train(tiny_cfg(*SMALL, *EIGHT_STEPS, "optim.lr=1e-3"), reference)
    sweep = tmp_path / "sweep"
    command = ["-m", *TINY, *SMALL, *EIGHT_STEPS, "optim.lr=1e-3,2e-3", f"hydra.sweep.dir={sweep}"]
    proc = _popen(command)
    stdout, stderr = _sigterm_after_step(proc, sweep / "0" / "metrics.csv", 4)
    assert proc.returncode == 143, stderr[-3000:]
    _assert_stopped(sweep / "0", stderr)
    assert f"re-run the same command with hydra.sweep.dir={sweep} to resume it" in stderr
    assert not (sweep / "1").exists()
    rows = json.loads((sweep / "sweep_summary.json").read_text())["runs"]
    assert [(r["job"], r["status"]) for r in rows] == [("0", "stopped"), ("1", "not started")]
    assert rows[1]["overrides"].endswith("optim.lr=0.002")
    assert "sweep summary: 0/2 runs completed, 1 stopped, 1 not started" in stdout + stderr  # Hydra's log

    again = _popen(command)
    _, stderr = again.communicate(timeout=DEADLINE_S)
    assert again.returncode == 0, stderr[-3000:]
    rows = json.loads((sweep / "sweep_summary.json").read_text())["runs"]
    assert [(r["job"], r["status"]) for r in rows] == [("0", "completed"), ("1", "completed")]
    curve, straight = step_rows(sweep / "0"), step_rows(reference)  # one row per step
    assert list(curve.index) == list(range(8)) == list(step_rows(sweep / "1").index)
    torch.testing.assert_close(torch.tensor(curve.values), torch.tensor(straight.values), rtol=1e-5, atol=1e-6)
