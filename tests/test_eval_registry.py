"""The metric registry: one entry per metric, read by the suite, the keys W&B defines, the config check and the
sweep summary."""

import pytest

from neuromf.config_schema import direction_errors
from neuromf.evaluation import registry
from neuromf.evaluation.registry import (
    DEFAULT_OBJECTIVE,
    LEGACY_ALIASES,
    METRICS,
    interval_keys,
    metric_direction,
    spec,
    split_interval,
)
from neuromf.evaluation.suite import FEAT3D_METRICS, HIGHER_IS_BETTER, UNRANKED
from neuromf.tracking.keys import expected_keys, summary_mode


@pytest.mark.parametrize(
    ("key", "direction"),
    [
        ("val/feat3d_fd/nfe1", "min"),
        ("val/feat3d_fd", "min"),
        ("ref/kid/real", "min"),
        ("val/precision/nfe2", "max"),
        ("val/coverage/nfe10", "max"),
        ("val/template_corr/nfe1", "max"),
        ("val/msssim/nfe1", None),
        ("val/eval_time_s", None),
        ("val/nfe_consistency", None),
        ("val/feat3d_fd/nfe1_ci_lo", None),
        ("val/coverage/nfe1_se", None),
        ("train/loss_u", "min"),
        ("val/loss_raw", "min"),
        ("lr-AdamW", None),
        ("val/not_a_metric/nfe1", None),
    ],
)
def test_direction_of_a_logged_key(key, direction):
    assert metric_direction(key) == direction


def test_names_are_unique_and_views_follow_the_registry():
    names = [m.name for m in METRICS]
    assert len(names) == len(set(names))
    assert all(m.direction in ("min", "max", None) for m in METRICS)
    assert HIGHER_IS_BETTER == {m.name for m in METRICS if m.direction == "max"}
    assert UNRANKED == {m.name for m in METRICS if m.direction is None}
    assert FEAT3D_METRICS == ("feat3d_fd", "kid", "precision", "recall", "density", "coverage")
    assert LEGACY_ALIASES == ("swd", "swd_patch", "feat3d_fd", "fid_axial", "fid_coronal", "fid_sagittal", "fid_mean")
    assert spec("val/kid/nfe2").needs == "feat3d" and spec("kid").interval and not spec("swd").interval


def test_the_default_objective_is_the_configs():
    """DEFAULT_OBJECTIVE (the code's fallback) and conf/train.yaml's `objective` (the config default) agree, and it
    is a registered metric that has a better direction."""
    from pathlib import Path

    from omegaconf import OmegaConf

    train = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "train.yaml")
    assert train.objective == DEFAULT_OBJECTIVE
    assert spec(DEFAULT_OBJECTIVE) is not None and metric_direction(DEFAULT_OBJECTIVE) == train.objective_mode


def test_interval_keys_round_trip():
    keys = interval_keys("val/kid/nfe1")
    assert keys == {"se": "val/kid/nfe1_se", "ci_lo": "val/kid/nfe1_ci_lo", "ci_hi": "val/kid/nfe1_ci_hi"}
    assert {split_interval(k) for k in keys.values()} == {
        ("val/kid/nfe1", "_se"),
        ("val/kid/nfe1", "_ci_lo"),
        ("val/kid/nfe1", "_ci_hi"),
    }
    assert split_interval("val/kid/nfe1") == ("val/kid/nfe1", None)


def _cfg(**ev):
    return {"eval": {"enabled": True, "nfe_list": [1, 2], "feat3d_enabled": True, "reference_levels": True} | ev}


def test_expected_keys_follow_the_registry():
    keys = expected_keys(_cfg(bootstrap_resamples=200))["eval"]
    assert "val/feat3d_fd/nfe2_ci_hi" in keys and "val/coverage/nfe1_se" in keys
    assert not any(k.startswith("val/swd/") and k.endswith("_se") for k in keys)
    assert "val/feat3d_fd/nfe1_se" not in expected_keys(_cfg(bootstrap_resamples=0))["eval"]
    ref = expected_keys(_cfg())["reference"]
    assert "ref/kid/noise" in ref and not any("eval_time_s" in k for k in ref)
    assert summary_mode("val/precision/nfe1") == "max" and summary_mode("val/kid/nfe1_ci_lo") is None


def test_a_new_entry_is_seen_by_every_reader(monkeypatch):
    # adding a metric is one entry: its direction reaches the config check and the W&B summaries
    new = registry.MetricSpec("sharpness", "max", "volumes", "a test metric")
    monkeypatch.setattr(registry, "_BY_NAME", {**registry._BY_NAME, "sharpness": new})
    assert metric_direction("val/sharpness/nfe1") == "max" and summary_mode("val/sharpness/nfe1") == "max"
    errors = direction_errors({"objective": "val/sharpness/nfe1", "objective_mode": "min"})
    assert errors and "higher-is-better" in errors[0] and "objective_mode=max" in errors[0]


def test_bad_interval_and_knn_settings_name_the_key():
    from neuromf.config_schema import config_errors

    cfg = {"eval": {"bootstrap_resamples": -1, "knn_num_real": 0}}
    errors = config_errors(cfg)
    assert any(e.startswith("eval.bootstrap_resamples=-1: must be an integer >= 0") for e in errors)
    assert any(e.startswith("eval.knn_num_real=0: must be an integer") for e in errors)
    assert config_errors({"eval": {"bootstrap_resamples": 200, "knn_num_real": None}}) == []
