"""One name for each file of a run dir, and one definition of a run's arm."""

from __future__ import annotations

from pathlib import Path

from neuromf.run_dir import RunDir
from neuromf.tracking.metrics import device_count, is_arm_key, split_arm
from neuromf.tracking.wandb_setup import override_tags


def test_run_dir_names_each_file():
    run = RunDir("/r/3")
    assert run.path == Path("/r/3") and run == RunDir(Path("/r/3"))
    assert (run.status, run.progress, run.metrics) == (Path("/r/3/status.json"), Path("/r/3/progress.json"),
                                                        Path("/r/3/metrics.csv"))  # fmt: skip
    assert (run.config, run.overrides) == (Path("/r/3/.hydra/config.yaml"), Path("/r/3/.hydra/overrides.yaml"))
    assert run.last_checkpoint == Path("/r/3/checkpoints/last.ckpt") and run.lock == Path("/r/3/.lock")
    assert run.eval_summary == Path("/r/3/eval/summary.json") and run.samples == Path("/r/3/samples")
    assert run.wandb_id == Path("/r/3/wandb_id.txt")
    assert (run.eval_final, run.split) == (Path("/r/3/eval/final.json"), Path("/r/3/split.json"))
    assert run.hydra_settings == Path("/r/3/.hydra/hydra.yaml")


def test_the_arm_of_a_run_leaves_out_seeds_launch_and_trial_keys():
    overrides = ["optim.lr=1e-3", "seed=2", "+model.seed=5", "hydra/launcher=slurm_a100",
                 "hydra.launcher.partition=x", "optuna.trial=4", "+data.split_seed=1"]  # fmt: skip
    assert split_arm(overrides) == ({"data.split_seed": "1", "optim.lr": "1e-3"}, "5")
    assert [k for k in ("seed", "model.seed", "hydra/launcher", "optuna.trial") if is_arm_key(k)] == []
    assert override_tags(overrides) == ["optim.lr=1e-3", "data.split_seed=1"]  # the same keys, in command order


def test_device_count_is_devices_times_nodes():
    assert device_count({}) == 1
    assert device_count({"devices": 4, "num_nodes": 2}) == 8
    assert device_count({"devices": [0, 1, 3]}) == 3
    assert device_count({"devices": "auto", "num_nodes": "x"}) == 1
