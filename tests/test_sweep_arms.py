"""Every sweep under every preset compares what it names: the arms differ exactly in the keys the sweep sweeps
(a group resolved to the keys its options set), identically with and without a preset; a grid whose jobs compose
the same config is refused before any job starts."""

from __future__ import annotations

import functools
import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import neuromf.sweep  # noqa: F401  (registers the resumable_optuna sweeper schema, as neuromf.train does)
from neuromf.tracking.run import flat_config

CONF = Path(__file__).resolve().parent.parent / "conf"
SWEEPS = sorted(p.stem for p in (CONF / "sweep").glob("*.yaml"))
PRESETS = [None, *sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))]
ABLATION_GROUPS = ("loss", "prediction", "v_head")


@pytest.fixture(scope="module", autouse=True)
def _hydra():
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        yield


def _compose(overrides: list[str], hydra: bool = False):
    return compose(config_name="train", overrides=overrides, return_hydra_config=hydra)


@functools.cache
def _flat_cached(overrides: tuple[str, ...]) -> dict:
    return flat_config(OmegaConf.to_container(_compose(list(overrides)), resolve=False))


def _flat(overrides: list[str]) -> dict:
    return _flat_cached(tuple(overrides))


def _body_keys(path: Path, group: str | None) -> set[str]:
    """The flat keys a config file sets: its body, and what its defaults list pulls in under a package."""
    text = path.read_text()
    data = yaml.safe_load(text) or {}
    is_global = "@package _global_" in text
    keys = set()
    for entry in data.pop("defaults", []) or []:
        spec = next(iter(entry)) if isinstance(entry, dict) else entry
        m = re.fullmatch(r"/(\w+)/(\w+)@(\w+)", str(spec))
        if m:  # e.g. /loss/imf@loss: that option's keys under `loss.`
            keys |= {f"{m.group(3)}.{k}" for k in _body_keys(CONF / m.group(1) / f"{m.group(2)}.yaml", None)}
    flat = flat_config(data)
    prefix = "" if is_global or group is None else f"{group}."
    return keys | {f"{prefix}{k}" for k in flat}


def _declared(group: str) -> set[str]:
    """Every key any option of an ablation group sets (a non-global group owns its whole package)."""
    keys = set()
    for path in (CONF / group).glob("*.yaml"):
        keys |= _body_keys(path, group)
    return keys


def _owned(key: str, declared: set[str]) -> bool:
    return any(key == d or key.startswith(f"{d}.") for d in declared)


def _arm_values(spec) -> list[str]:
    """A sweeper param's values: a grid `a,b,c` or Optuna's `choice(a, b)`; for a range or an interval, its two
    ends (two distinct values the search can ask for)."""
    spec = str(spec).strip()
    choice = re.fullmatch(r"choice\((.*)\)", spec)
    if choice:
        return [v.strip() for v in choice.group(1).split(",")]
    if "(" in spec:
        numbers = re.findall(r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?", spec.split("step=")[0])
        return list(dict.fromkeys(numbers))[:2]
    return [v.strip() for v in spec.split(",")]


def _allowed(key: str) -> set[str]:
    return _declared(key) | ({"loss"} if key == "loss" else set()) if (CONF / key).is_dir() else {key}


def _arm_diffs(sweep: str, preset: str | None) -> dict[tuple[str, str, str], set[str]]:
    """(param, value a, value b) -> the keys in which the two arms differ, all other params at their first value."""
    base = [f"experiment={preset}"] if preset else []
    params = _compose([*base, f"sweep={sweep}"], hydra=True).hydra.sweeper.params
    grid = {k: _arm_values(v) for k, v in params.items()}
    fixed = {k: v[0] for k, v in grid.items()}
    out = {}
    for key, values in grid.items():
        arms = {}
        for value in values:
            arm = {**fixed, key: value}
            arms[value] = _flat([*base, f"sweep={sweep}", *(f"{k}={v}" for k, v in arm.items())])
        for a, b in itertools.combinations(values, 2):
            fa, fb = arms[a], arms[b]
            out[(key, a, b)] = {k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k)}
    return out


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p or "no-preset")
@pytest.mark.parametrize("sweep", SWEEPS)
def test_arms_differ_exactly_in_what_the_sweep_names_under_every_preset(sweep, preset):
    diffs = _arm_diffs(sweep, preset)
    reference = _arm_diffs(sweep, None) if preset else diffs
    assert diffs, f"sweep={sweep}: no arms to compare"
    for (key, a, b), changed in diffs.items():
        where = f"sweep={sweep} experiment={preset}: {key}={a} vs {key}={b}"
        assert changed, f"{where}: identical arms"
        outside = {k for k in changed if not _owned(k, _allowed(key))}
        assert not outside, f"{where}: differ outside what {key} names: {sorted(outside)}"
        assert changed == reference[(key, a, b)], f"{where}: the preset changes what the arms differ in"


def _ablation_keys(group: str) -> set[str]:
    """The keys in which the options of an ablation group differ from one another (each composed alone)."""
    options = [_flat([f"{group}={p.stem}"]) for p in sorted((CONF / group).glob("*.yaml"))]
    keys = set().union(*options)
    return {k for k in keys if len({repr(o.get(k)) for o in options}) > 1}


@pytest.mark.parametrize(
    "path",
    sorted((CONF / "experiment").glob("*.yaml")) + sorted((CONF / "sweep").glob("*.yaml")),
    ids=lambda p: f"{p.parent.name}/{p.stem}",
)
def test_presets_and_sweep_files_set_no_ablation_key_in_their_body(path):
    """Their body is merged after the ablation groups: a key set there would override every arm of that group."""
    body = flat_config({k: v for k, v in (yaml.safe_load(path.read_text()) or {}).items() if k != "defaults"})
    for group in ABLATION_GROUPS:
        clash = set(body) & _ablation_keys(group)
        assert not clash, f"{path}: sets {sorted(clash)}, which the {group}/ group decides: choose an option instead"


def test_the_production_preset_runs_the_ablation_it_is_asked_for():
    """The measured failure: under experiment=brain_maisi, v_head=off, prediction=u_fd and loss=meanflow were
    overridden by the preset's body."""
    preset = ["experiment=brain_maisi"]
    assert _compose(preset).model.prediction_type == "x" and _compose(preset).loss.jvp == "exact_fused"
    assert _compose([*preset, "v_head=off"]).model.use_v_head is False
    fd = _compose([*preset, "prediction=u_fd"])
    assert (fd.model.prediction_type, fd.loss.jvp) == ("u", "fd")
    mf = _compose([*preset, "loss=meanflow"])
    assert mf.model.use_v_head is False and mf.loss.time_sampler.data_proportion == 0.75


def test_a_grid_with_identical_jobs_is_refused_before_any_job_starts(tmp_path):
    sweep_dir = tmp_path / "sweep"
    env = {**os.environ, "WANDB_MODE": "offline"}
    cmd = [sys.executable, "-m", "neuromf.train", "-m", "seed=3,3", f"hydra.sweep.dir={sweep_dir}"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=1800, env=env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "jobs 0 (seed=3) and 1 (seed=3)" in errors[0], proc.stderr[-3000:]
    assert not sweep_dir.exists()  # nothing started, nothing written


def test_distinct_jobs_pass_the_check():
    from neuromf.sweep.arms import grid_jobs, identical_jobs

    cfg = _compose(["sweep=v_head"], hydra=True)
    OmegaConf.update(cfg, "hydra.overrides.task", ["sweep=v_head"], force_add=True)
    jobs = grid_jobs(cfg)
    assert len(jobs) == 9 and {j[0] for j in jobs} == {"v_head=off", "v_head=res0", "v_head=res1"}
    assert identical_jobs(cfg) == []
    OmegaConf.update(cfg, "hydra.overrides.task", ["sweep=v_head", "v_head=res0,res0"], force_add=True)
    assert identical_jobs(cfg)[0] == (0, 3)


@pytest.mark.parametrize("data", ["demo", "demo_large", "latents"])
@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p or "no-preset")
def test_every_preset_and_data_option_fixes_the_split_apart_from_the_run_seed(preset, data):
    """The split is decided by data.split_seed (0), not by the run seed: every arm and seed of a sweep, under every
    preset and data option, trains and validates on the same subjects (tests/test_data_demo.py: the same split.json)."""
    base = [f"experiment={preset}"] if preset else []
    if preset is None or data != "demo":
        base += [f"data={data}", *(["data.latent_dir=/x"] if data == "latents" else [])]
    for seed in (0, 7):
        raw = OmegaConf.to_container(_compose([*base, f"seed={seed}"]).data, resolve=False)
        assert raw["split_seed"] == 0, f"experiment={preset} data={data}: split_seed {raw['split_seed']!r}"


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p or "no-preset")
def test_the_production_time_sampler_is_uniform_pairs_under_every_preset(preset):
    """Measured (README, Time sampling): uniform (r, t) pairs keep the mode shares and the demo's 1-step objective
    where logit-normal loses them, so every MeanFlow-family objective draws uniform pairs by default, under every
    preset, and flow matching (r = t only, their multi-step reference) uniform t: logit-normal left its Euler start
    at t = 1 untrained (README, One-step objectives)."""
    base = [f"experiment={preset}"] if preset else []
    for loss in ("imf", "meanflow", "alphaflow", "fm_warmstart", "imf_schedule", "splitmeanflow", "fm"):
        got = _compose([*base, f"loss={loss}"]).loss.time_sampler.distribution
        assert got == "uniform", f"experiment={preset} loss={loss}: {got}"
