"""Ablation groups change one thing: composing an arm differs from the defaults only in the keys it names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import neuromf.sweep  # noqa: F401  (registers the resumable_optuna sweeper schema, as neuromf.train does)
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


SWEEPS = sorted((Path(CONF).parent / "sweeps").glob("*.yaml"))


def _compose(overrides: list[str], hydra: bool = False):
    with initialize_config_dir(config_dir=CONF, version_base=None):
        return compose(config_name="train", overrides=overrides, return_hydra_config=hydra)


def _values(spec) -> list[str] | None:
    """A sweeper param's values: a grid `a,b,c` or Optuna's `choice(a, b)`; None for a range or an interval."""
    spec = str(spec).strip()
    choice = re.fullmatch(r"choice\((.*)\)", spec)
    if choice:
        return [v.strip() for v in choice.group(1).split(",")]
    return None if "(" in spec else [v.strip() for v in spec.split(",")]


def _same(a, b) -> bool:
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def test_sweep_group_is_the_sweeps_folder():
    assert Path(CONF, "sweep").resolve() == (Path(CONF).parent / "sweeps").resolve()
    assert {p.stem for p in SWEEPS} >= {"demo", "v_head", "time_scale", "recipe_imf_vs_meanflow", "joint_optuna"}


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_every_sweep_composes_with_each_of_its_values(path):
    """sweep=<name> composes (its launcher and sweeper included); every grid / choice value composes as an arm and
    resolves; a plain key's arms differ in that key alone; a group's arms differ; ranges name existing keys."""
    name = path.stem
    cfg = _compose([f"sweep={name}"], hydra=True)
    assert cfg.sweep_name == name
    params = cfg.hydra.sweeper.params
    assert params, f"{path}: no hydra.sweeper.params"
    for key, spec in params.items():
        values = _values(spec)
        if values is None:  # an Optuna range or interval
            assert OmegaConf.select(cfg, key) is not None, (path, key)
            continue
        arms = {}
        for value in values:
            arm = _compose([f"sweep={name}", f"{key}={value}"])
            OmegaConf.to_container(arm, resolve=True)  # every interpolation resolves
            arms[value] = flat_config(OmegaConf.to_container(arm, resolve=False))
            if not Path(CONF, key).is_dir():  # a plain key, not a config group
                assert _same(OmegaConf.select(arm, key), value), (path, key, value)
        first, *others = arms.values()
        for other in others:
            changed = {k for k in first.keys() | other.keys() if first.get(k) != other.get(k)}
            if Path(CONF, key).is_dir():
                assert changed, (path, key)  # a group's values are different configs
            else:
                assert changed == {key}, (path, key, changed)


def test_time_scale_sweep_changes_the_time_embedding_scale_alone():
    params = _compose(["sweep=time_scale"], hydra=True).hydra.sweeper.params
    assert [float(v) for v in _values(params["model.time_scale"])] == [1.0, 1000.0]
    assert _changed(["sweep=time_scale", "model.time_scale=1.0"], ["sweep=time_scale", "model.time_scale=1000.0"]) == {
        "model.time_scale"
    }
