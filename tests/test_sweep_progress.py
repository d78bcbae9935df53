"""Per-arm progress while a multirun trains: progress.json from the run, one line per arm in the launcher."""

from __future__ import annotations

import io
import json
import time

import yaml
from omegaconf import OmegaConf
from training_helpers import tiny_cfg

from neuromf.sweep.progress import SweepProgress, progress_lines, swept_keys
from neuromf.train import train


def _arm(sweep, job: str, overrides: list[str], **progress) -> None:
    run = sweep / job
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (run / "progress.json").write_text(json.dumps(progress))


def test_lines_name_the_arm_its_step_loss_and_time_left(tmp_path):
    _arm(
        tmp_path, "0", ["v_head=res0", "sweep=demo"], state="training", step=40, total_steps=120, loss_u=0.5, eta_s=125
    )
    done = dict(state="finished", step=120, total_steps=120, loss_u=0.25, eta_s=0)
    _arm(tmp_path, "1", ["v_head=off", "sweep=demo"], **done)
    lines = progress_lines(tmp_path)
    assert lines["0"] == "[arm 0: v_head=res0] training step 40/120  loss_u 0.5  2m05s left"
    assert lines["1"] == "[arm 1: v_head=off] finished step 120/120  loss_u 0.25  done"


def test_lines_name_every_swept_key_while_one_arms_seeds_run_first(tmp_path):
    """sweep=v_head x seeds: the first two jobs to start are one arm's seeds 0 and 1. Labelled by what the started
    jobs do not share they would read `seed=0` / `seed=1` (the arm left out); by the swept keys they name it."""
    run = dict(state="training", step=1, total_steps=9, loss_u=1.0, eta_s=12)
    _arm(tmp_path, "0", ["v_head=off", "seed=0", "sweep=v_head", "data=latents"], **run)
    _arm(tmp_path, "1", ["v_head=off", "seed=1", "sweep=v_head", "data=latents"], **run)
    task = ["sweep=v_head", "data=latents", "optim.lr=1e-3,2e-3"]
    sweeper = {"params": {"v_head": "off,res0", "seed": "0,1"}}
    config = OmegaConf.create({"hydra": {"sweeper": sweeper, "overrides": {"task": task}}})
    swept = swept_keys(config)
    assert swept == {"v_head", "seed", "optim.lr"}
    lines = progress_lines(tmp_path, swept=swept)
    assert lines["0"].startswith("[arm 0: v_head=off seed=0] ") and lines["1"].startswith("[arm 1: v_head=off seed=1] ")
    assert progress_lines(tmp_path)["0"].startswith("[arm 0: seed=0] ")  # without the swept keys: the arm is lost


def test_the_launcher_thread_prints_changes_while_arms_run(tmp_path):
    out = io.StringIO()
    callback = SweepProgress(every_s=0.05, stream=out)
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    callback.on_multirun_start(config)
    _arm(tmp_path, "0", ["seed=1"], state="training", step=3, total_steps=9, loss_u=1.0, eta_s=12)
    deadline = time.monotonic() + 120  # until the thread printed the first state (however loaded the machine)
    while "training step 3/9" not in out.getvalue():
        assert time.monotonic() < deadline, "the progress thread never printed"
        time.sleep(0.05)
    (tmp_path / "0" / "progress.json").write_text(
        json.dumps({"state": "finished", "step": 9, "total_steps": 9, "loss_u": 0.5, "eta_s": 0})
    )
    callback.on_multirun_end(config)
    printed = out.getvalue().splitlines()
    assert printed == [
        "[arm 0: seed=1] training step 3/9  loss_u 1  12s left",
        "[arm 0: seed=1] finished step 9/9  loss_u 0.5  done",
    ]


def test_the_callback_pickles_while_its_thread_runs(tmp_path):
    """submitit pickles Hydra's callbacks with every job."""
    import pickle

    callback = SweepProgress(every_s=0.05, stream=io.StringIO())
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    callback.on_multirun_start(config)
    try:
        clone = pickle.loads(pickle.dumps(callback))
    finally:
        callback.on_multirun_end(config)
    assert clone.every_s == 0.05 and clone._thread is None


def test_a_run_writes_its_progress_file(tmp_path):
    run = tmp_path / "run"
    train(tiny_cfg("trainer.max_epochs=1", "+trainer.limit_train_batches=3", "+trainer.limit_val_batches=1"), run)
    progress = json.loads((run / "progress.json").read_text())
    assert progress["state"] == "finished" and progress["step"] == progress["total_steps"] == 3
    assert progress["loss_u"] > 0 and progress["eta_s"] == 0
