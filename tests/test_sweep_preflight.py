"""A multirun is checked before any job starts: one objective direction for the study, the runs, the report;
no GPU launcher profile for a CPU trainer; one line and exit 2 for each refusal."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import neuromf.sweep  # noqa: F401  (registers the resumable_optuna sweeper and the optuna_direction resolver)
from neuromf.config_schema import ConfigError, check_config
from neuromf.sweep.preflight import gpu_launcher_error, preflight_errors, sweeper_direction_error

CONF = str(Path(__file__).resolve().parent.parent / "conf")


@pytest.fixture(scope="module", autouse=True)
def _hydra():
    with initialize_config_dir(config_dir=CONF, version_base=None):
        yield


def _cfg(*overrides: str):
    cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    OmegaConf.update(cfg, "hydra.overrides.task", list(overrides), force_add=True)
    return cfg


@pytest.mark.parametrize("sweep", ["lr_optuna", "joint_optuna"])
@pytest.mark.parametrize(("mode", "objective", "direction"), [
    ("min", "val/feat3d_fd/nfe1", "minimize"),
    ("max", "val/template_corr/nfe1", "maximize"),
])  # fmt: skip
def test_the_study_direction_is_the_objective_mode(sweep, mode, objective, direction):
    cfg = _cfg(f"sweep={sweep}", f"objective={objective}", f"objective_mode={mode}")
    assert OmegaConf.select(cfg, "hydra.sweeper.direction") == direction  # composed, resolved
    assert preflight_errors(cfg) == []


def test_a_direction_set_apart_from_objective_mode_is_refused():
    cfg = _cfg("sweep=lr_optuna", "objective=val/template_corr/nfe1", "objective_mode=max",
               "hydra.sweeper.direction=minimize")  # fmt: skip
    message = sweeper_direction_error(cfg)
    assert "hydra.sweeper.direction=minimize contradicts objective_mode=max" in message and "(maximize)" in message
    assert preflight_errors(cfg) == [message]


def test_an_objective_mode_against_the_metrics_direction_is_refused_in_runs_and_sweeps():
    cfg = _cfg("sweep=lr_optuna", "objective=val/template_corr/nfe1")  # objective_mode stays min
    (error,) = preflight_errors(cfg)
    assert error == (
        "objective_mode='min': objective=val/template_corr/nfe1 is higher-is-better; set objective_mode=max"
    )
    with pytest.raises(ConfigError, match="set objective_mode=max"):
        check_config(cfg)
    check_config(_cfg("objective=val/loss_raw"))  # a loss: min, as the default mode


def test_a_gpu_launcher_profile_is_refused_for_the_cpu_trainer():
    message = gpu_launcher_error(_cfg("hydra/launcher=slurm_a100", "sweep=v_head"))
    assert "gpus_per_node=1" in message and "trainer.accelerator=cpu" in message
    assert "small CPU demo" in gpu_launcher_error(_cfg("hydra/launcher=slurm_a100", "trainer=gpu"))
    assert "experiment=brain_maisi data.latent_dir=" in message
    assert gpu_launcher_error(_cfg("hydra/launcher=slurm_a100", "experiment=brain_maisi")) is None
    assert gpu_launcher_error(_cfg("hydra/launcher=slurm_a100", "experiment=demo_gpu")) is None
    assert gpu_launcher_error(_cfg("hydra/launcher=slurm_a100", "hydra.launcher.gpus_per_node=null")) is None
    assert gpu_launcher_error(_cfg("hydra/launcher=local", "sweep=v_head")) is None


def test_a_contradicting_sweep_exits_2_in_one_line_before_any_job(tmp_path):
    sweep_dir = tmp_path / "study"
    cmd = [sys.executable, "-m", "neuromf.train", "-m", "sweep=lr_optuna", "objective=val/template_corr/nfe1",
           "objective_mode=max", "hydra.sweeper.direction=minimize", f"hydra.sweep.dir={sweep_dir}"]  # fmt: skip
    env = {**os.environ, "WANDB_MODE": "offline"}
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=1800, env=env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "contradicts objective_mode=max" in errors[0]
    assert not sweep_dir.exists()


def _identity(*overrides: str, lr: str = "tag(log, interval(1e-5, 1e-3))"):
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides

    from neuromf.sweep.optuna import study_identity

    cfg = _cfg("sweep=lr_optuna", *overrides)
    params = [f"{k}={lr if k == 'optim.lr' else v}" for k, v in cfg.hydra.sweeper.params.items()]
    space, _, _ = create_params_from_overrides(params)
    return study_identity(cfg, space)


def test_a_study_is_keyed_by_its_search_space_and_fixed_config(tmp_path):
    import optuna

    from neuromf.sweep.optuna import StudyMismatchError, check_study_identity
    from neuromf.sweep.storage import open_storage

    base = _identity()
    # the launcher, the storage form, n_trials and logging do not change what a trial measures
    assert (
        _identity("hydra/launcher=slurm_a100", "hydra.sweeper.n_trials=3", "logger=csv", "torch_threads=1")[0]
        == (base[0])
    )
    assert _identity("trainer.max_epochs=100")[0] == base[0]  # longer trials resume the same study
    assert _identity("experiment=demo_gpu")[0] != base[0]
    assert _identity(lr="tag(log, interval(1e-4, 1e-2))")[0] != base[0]

    storage = open_storage(f"sqlite:///{tmp_path}/optuna.db")
    study = optuna.create_study(study_name="lr_optuna", storage=storage)
    check_study_identity(study, *base, where="optuna.journal")  # a new study records its identity
    again = optuna.load_study(study_name="lr_optuna", storage=storage)
    check_study_identity(again, *base, where="optuna.journal")  # the same sweep resumes it
    with pytest.raises(StudyMismatchError) as err:
        check_study_identity(again, *_identity("experiment=demo_gpu"), where="optuna.journal")
    message = str(err.value)
    assert "study 'lr_optuna' in optuna.journal was created with another search space or fixed config" in message
    assert "data.batch_size: 4 -> 8" in message  # the differing keys, old -> new
    assert "\n" not in message


def test_the_smoke_config_shortens_any_preset_to_minutes():
    cfg = _cfg("experiment=brain_maisi", "data.latent_dir=/data/latents", "debug=smoke", "hydra/launcher=slurm_a100")
    assert (cfg.trainer.max_epochs, cfg.trainer.limit_train_batches, cfg.trainer.limit_val_batches) == (1, 2, 1)
    assert cfg.model.num_channels == [64, 128, 256, 512] and cfg.trainer.accelerator == "gpu"  # the preset's own
    assert cfg.eval.num_samples == 4 and list(cfg.callbacks.samples.nfe_list) == [1]
    assert gpu_launcher_error(cfg) is None
