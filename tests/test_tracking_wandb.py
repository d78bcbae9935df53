"""W&B setup (offline, no account): run id stable across requeues, group/job_type/tags, flat secret-free config."""

import pytest
from training_helpers import tiny_cfg

from neuromf.tracking.run import clean_config, flat_config, read_status, stable_run_id, update_status
from neuromf.tracking.wandb_setup import (
    ObjectiveSummary,
    define_metrics,
    job_type,
    make_wandb_logger,
    override_tags,
    run_group,
    run_name,
    wandb_mode,
)


def test_flat_config_drops_secrets_and_keeps_everything_else():
    cfg = {
        "model": {"lr": 1e-3, "layers": [1, 2]},
        "logger": {"wandb": {"api_key": "s3cret", "project": "p"}},
        "token": "x",
        "objective_key": "val/swd",
        "monkey": 1,
    }
    flat = flat_config(cfg)
    assert flat == {
        "model.lr": 1e-3,
        "model.layers": [1, 2],
        "logger.wandb.project": "p",
        "objective_key": "val/swd",
        "monkey": 1,
    }


def test_clean_config_is_nested_and_secret_free():
    cfg = {"trainer": {"max_epochs": 3}, "logger": {"wandb": {"api_key": "s", "project": "p"}}, "token": "x"}
    assert clean_config(cfg) == {"trainer": {"max_epochs": 3}, "logger": {"wandb": {"project": "p"}}}


def test_define_metrics_step_axis_and_summaries():
    calls = {}

    class Run:
        def define_metric(self, name, step_metric=None, step_sync=None, summary=None, **kw):
            calls[name] = (step_metric, summary)

    cfg = {
        "model": {"use_v_head": False, "in_channels": 1},
        "trainer": {"accelerator": "cpu"},
        "eval": {"enabled": True, "nfe_list": [1, 10], "feat3d_enabled": True, "reference_levels": True},
        "callbacks": {"samples": {"enabled": True, "nfe_list": [1, 5]}},
    }
    define_metrics(Run(), cfg)
    assert calls["*"][0] == "trainer/global_step"
    assert calls["val/kid/nfe10"] == ("trainer/global_step", "min,last")
    assert calls["val/coverage/nfe1"] == ("trainer/global_step", "max,last")
    assert calls["train/loss_u"][1] == "min,last" and "train/loss_v" not in calls
    assert "train/peak_mem_gb" not in calls and not any("fid" in k for k in calls)


def test_run_id_is_created_once_per_run_dir(tmp_path):
    first = stable_run_id(tmp_path)
    assert stable_run_id(tmp_path) == first and stable_run_id(tmp_path / "other") != first


def test_status_updates_merge(tmp_path):
    update_status(tmp_path, status="running", objective_key="val/swd")
    status = update_status(tmp_path, status="completed", objective=0.5)
    assert status == {"status": "completed", "objective_key": "val/swd", "objective": 0.5}


def test_override_tags_and_mode(monkeypatch):
    assert override_tags(["model.conditioning=dual", "seed=1", "+data.seed=2", "hydra.launcher.partition=x"]) == [
        "model.conditioning=dual"
    ]
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert wandb_mode(None) == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "k")
    assert wandb_mode(None) == "online" and wandb_mode("disabled") == "disabled"


@pytest.mark.slow
def test_offline_wandb_run_has_group_job_type_and_resumable_id(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = tiny_cfg("logger=wandb", "sweep_name=conditioning")
    run_id = stable_run_id(tmp_path)
    logger = make_wandb_logger(cfg, tmp_path, run_id)
    run = logger.experiment
    assert (run.id, run.group, run.job_type) == (run_id, "conditioning", "train")
    logger.log_hyperparams(clean_config({"model": {"conditioning": "dual"}}))
    assert run.config["model"]["conditioning"] == "dual" and "model.conditioning" not in run.config
    run.finish()
    assert list((tmp_path / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))


def _flat(summary: dict, prefix: str = "") -> dict:
    """W&B's runs-table view of a summary: nested dicts as dotted names (``{"k": {"min": 1}}`` -> ``k.min``)."""
    out = {}
    for k, v in summary.items():
        out |= _flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
    return out


@pytest.mark.slow
def test_dashboards_read_the_summary_holding_the_best_value(tmp_path, monkeypatch):
    """A real offline run with define_metrics, read back with `wandb leet`: every summary the dashboards read
    exists, the objective's is its best over validations (what the report ranks by), the reference levels bare."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    import wandb
    from dashboard_helpers import summary_refs

    from neuromf.dashboards import build, compose, sweep_plan
    from neuromf.tracking.keys import expected_keys, metric_direction

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = compose(["sweep=demo"])
    assert (cfg["objective"], cfg["objective_mode"]) == ("val/feat3d_fd/nfe1", "min")
    run = wandb.init(project="p", dir=str(tmp_path), mode="offline", settings=wandb.Settings(console="off"))
    summaries = define_metrics(run, cfg)
    # the objective: no summary option, its plain key set to the best value (ObjectiveSummary)
    assert summaries["val/feat3d_fd/nfe1"] is None and summaries["val/feat3d_fd/nfe10"] == "min,last"
    assert summaries["ref/feat3d_fd/real"] is None
    tracker = ObjectiveSummary("val/feat3d_fd/nfe1", "min")
    values = {"min": [3.0, 1.0, 2.0], "max": [0.1, 0.5, 0.3], None: [5.0, 6.0, 7.0]}  # best at validation 2
    logged = [k for ks in expected_keys(cfg).values() for k in ks if not k.startswith("samples/")]
    for i in range(3):
        row = {k: values[metric_direction(k) if k.startswith("val/") else None][i] for k in logged}
        run.log(row | {"trainer/global_step": 10 * i})
        run.summary["val/feat3d_fd/nfe1"] = tracker.update(row["val/feat3d_fd/nfe1"])  # as on_validation_end
    run_dir = Path(run.dir).parent
    run.finish()
    leet = Path(sys.executable).parent / "wandb"
    res = subprocess.run([str(leet), "leet", "inspect", "--summary", "--json", str(run_dir)], capture_output=True)
    summary = _flat(json.loads(res.stdout)["summary"])
    assert summary["val/feat3d_fd/nfe1"] == 1.0  # the plain objective key holds a number: the best value
    assert summary["val/feat3d_fd/nfe10.min"] == 1.0 and summary["val/feat3d_fd/nfe10.last"] == 2.0
    assert summary["val/coverage/nfe1.max"] == 0.5
    assert summary["ref/kid/real"] == 7.0  # no summary option: the bare key keeps the last value

    out = tmp_path / "dash"
    build("e", "p", "demo", out, sweep_plan(sweep="demo"))
    refs = set()
    for name in ("workspace_monitor.json", "report_ablation.json"):
        refs |= summary_refs((out / name).read_text())
    assert "val/feat3d_fd/nfe1" in refs and "ref/kid/real" in refs
    assert refs <= set(summary), f"dashboards read summaries W&B does not store: {sorted(refs - set(summary))}"


@pytest.mark.slow
def test_an_unreachable_wandb_server_falls_back_to_offline_with_one_warning(tmp_path):
    """WANDB_API_KEY exported and no network (the compute-node case): after logger.wandb.init_timeout seconds the
    run logs offline, with one warning naming `wandb sync`, and completes."""
    import os
    import subprocess
    import sys

    from test_training_faults import REPO, SMALL, TINY

    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_API_KEY": "x" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9"}
    env.pop("WANDB_MODE", None)
    env.pop("WANDB_SERVICE", None)  # an earlier in-process test's W&B service: this run starts its own
    cmd = [sys.executable, "-m", "neuromf.train", *TINY, *SMALL, "logger=wandb", "logger.wandb.init_timeout=5",
           "trainer.max_epochs=1", f"hydra.run.dir={run}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: W&B")]
    assert len(warnings) == 1, proc.stderr[-3000:]
    assert "could not start an online run within 5 s" in warnings[0]
    assert f"wandb sync {run}/wandb/offline-run-*" in warnings[0]
    assert len(list((run / "wandb").glob("offline-run-*"))) == 1
    assert read_status(run)["status"] == "completed"


def test_without_the_offline_fallback_a_missing_key_is_one_clear_error(tmp_path, monkeypatch):
    from neuromf.tracking.wandb_setup import WandbUnavailable, start_wandb_logger

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    cfg = tiny_cfg("logger=wandb", "logger.wandb.init_timeout=5", "logger.wandb.offline_fallback=false")
    with pytest.raises(WandbUnavailable) as err:
        start_wandb_logger(cfg, tmp_path, "abc")
    message = str(err.value)
    assert message.startswith("W&B could not start an online run within 5 s (UsageError: ") and "\n" not in message
    assert "set WANDB_MODE=offline" in message


def test_run_name_says_the_arm_and_the_seed():
    tags = override_tags(["model.prediction_type=x", "loss.norm_p=1.0", "seed=2"])
    assert run_name(tags, 2) == "prediction_type=x,norm_p=1.0 seed=2"
    assert run_name([], 0, "u-dual") == "u-dual seed=0"  # no overrides: the config's tag (prediction-conditioning)


def test_group_is_the_sweep_its_preset_and_its_launch():
    assert run_group("demo", None, "2026-01-01_10-00-00") == "demo/2026-01-01_10-00-00"
    assert run_group("demo", None, "2026-01-01_10-00-00") != run_group("demo", None, "2026-01-02_09-00-00")
    assert run_group("adhoc", "brain_maisi", None) != run_group("adhoc", "demo_gpu", None)  # presets do not mix
    assert run_group("brain_maisi", "brain_maisi", None) == "brain_maisi"
    assert job_type({"optuna": {"trial": 3}}, True) == "optuna-trial"
    assert job_type({}, True) == "sweep-arm" and job_type({}, False) == "train"


@pytest.mark.parametrize(
    ("mode", "values", "best"), [("min", [3.0, 1.0, float("nan"), 2.0], 1.0), ("max", [0.1, 0.5, 0.3], 0.5)]
)
def test_objective_summary_keeps_the_best_value(mode, values, best):
    tracker = ObjectiveSummary("val/feat3d_fd/nfe1", mode)
    seen = [tracker.update(v) for v in values]
    assert seen[-1] == best and tracker.state_dict() == {"best": best}
    again = ObjectiveSummary("val/feat3d_fd/nfe1", mode)
    again.load_state_dict(tracker.state_dict())  # a resumed run keeps its best
    assert again.update(values[-1]) == best
