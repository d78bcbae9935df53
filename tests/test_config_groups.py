"""Ablation groups change one thing: composing an arm differs from the defaults only in the keys it names."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from neuromf.tracking.run import flat_config

CONF = str(Path(__file__).resolve().parent.parent / "conf")


def _flat(overrides: list[str]) -> dict:
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose(config_name="train", overrides=overrides)
    return flat_config(OmegaConf.to_container(cfg, resolve=False))


def _changed(overrides: list[str], base: list[str] | None = None) -> set[str]:
    a, b = _flat(base or []), _flat(overrides)
    return {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("v_head=off", {"model.use_v_head"}),
        ("v_head=res1", {"model.v_head_num_res_blocks"}),
        ("prediction=u_fd", {"loss.jvp"}),
        ("prediction=x_exact", {"model.prediction_type"}),
    ],
)
def test_an_ablation_group_changes_one_thing(override, expected):
    assert _changed([override]) == expected


def test_the_meanflow_recipe_changes_the_head_and_the_r_equals_t_share_and_says_so():
    assert _changed(["loss=meanflow"]) == {"model.use_v_head", "loss.time_sampler.data_proportion"}
    recipe = Path(CONF, "sweep", "recipe_imf_vs_meanflow.yaml").read_text()
    assert "loss: imf,meanflow" in recipe and "not one ablation" in recipe
