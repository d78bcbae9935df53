"""Dashboards as code: offline build writes reviewable, stable JSON; a sweep's panels match what its runs log."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from dashboard_helpers import panel_keys

from neuromf.dashboards import main, sweep_plan, varying_keys

# Two runs of `sweep=demo` (v_head=res0 / v_head=off) recorded with scripts/record_logged_keys.py: their
# composed configs and every key they logged (metrics.csv columns + W&B media keys).
RECORDED = Path(__file__).parent / "data" / "demo_sweep_logged"


def _panels(sections):
    return {s["name"]: s["panels"] for s in sections}


def _build(out, *extra) -> int:
    args = ["build", "--entity", "ent", "--project", "proj", "--group", "abl_pred", "--out", str(out)]
    return main([*args, *extra])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("dash")
    assert _build(out, "--sweep-dir", str(RECORDED)) == 0
    return out


def test_panels_are_exactly_the_logged_keys(built):
    logged = set()
    for run in ("0", "1"):
        logged |= set(json.loads((RECORDED / run / "logged_keys.json").read_text()))
    w = json.loads((built / "workspace_monitor.json").read_text())
    r = json.loads((built / "report_ablation.json").read_text())
    shown = panel_keys(w) | panel_keys(r)
    assert shown and shown <= logged, f"panels for keys no run logs: {sorted(shown - logged)}"
    regex = [
        p["config"]["metricRegex"]
        for s in w["spec"]["section"]["panelBankConfig"]["sections"]
        for p in s["panels"]
        if p.get("config", {}).get("metricRegex")
    ]
    unshown = {k for k in logged - shown if not any(re.fullmatch(rx, k) for rx in regex)}
    assert unshown == set(), f"logged keys on no panel: {sorted(unshown)}"
    assert "train/peak_mem_gb" not in shown and not any("fid" in k for k in shown)  # CPU, no FID weights
    assert {"ref/kid/real", "ref/kid/noise", "samples/nfe_10"} <= shown and "samples/nfe_4" not in shown


def test_arms_fall_into_different_groups(built):
    plan = sweep_plan(sweep_dir=RECORDED)
    assert plan["arm_keys"] == ("model.use_v_head",)  # v_head=off|res0, resolved
    from neuromf.tracking.metrics import read_config

    values = {read_config(RECORDED / run)["model"]["use_v_head"] for run in ("0", "1")}
    assert values == {True, False}
    w = json.loads((built / "workspace_monitor.json").read_text())
    runset = w["spec"]["section"]["runSets"][0]
    assert {"section": "config", "name": "model.value.use_v_head"} in runset["grouping"]
    lines = [p for s in w["spec"]["section"]["panelBankConfig"]["sections"] for p in s["panels"]]
    lines = [p for p in lines if p["viewType"] == "Run History Line Plot"]
    assert lines and {p["config"]["xAxis"] for p in lines} == {"trainer/global_step"}


def test_sweep_by_name_resolves_group_overrides():
    plan = sweep_plan(sweep="v_head")
    # by name: every launch of the sweep (its sweep_name); a launched sweep dir: that launch's W&B group
    assert plan["arm_keys"] == ("model.use_v_head", "model.v_head_num_res_blocks")
    assert plan["sweep_name"] == "v_head" and plan["group"] is None
    assert sweep_plan(sweep_dir=RECORDED)["group"].startswith("demo/")
    assert "train/loss_v" in plan["keys"] and "train/peak_mem_gb" not in plan["keys"]
    assert varying_keys([{"a": {"b": 1}, "seed": 0}, {"a": {"b": 2}, "seed": 1}]) == ["a.b"]


def test_report_groups_arms(built):
    r = json.loads((built / "report_ablation.json").read_text())
    assert r["project"] == {"entityName": "ent", "name": "proj"}
    grids = [b["metadata"] for b in r["spec"]["blocks"] if b.get("type") == "panel-grid"]
    rs = grids[0]["runSets"][0]
    assert [g["name"] for g in rs["grouping"]] == ["model.value.use_v_head"]
    assert rs["filters"]["filters"][0]["key"]["name"] == "group"
    types = [p["viewType"] for p in grids[0]["panelBankSectionConfig"]["panels"]]
    assert "Bar Chart" in types and "Parallel Coordinates Plot" in types


def test_build_is_stable(built, tmp_path):
    assert _build(tmp_path, "--sweep-dir", str(RECORDED)) == 0
    for name in ("workspace_monitor.json", "report_ablation.json"):
        assert (tmp_path / name).read_text() == (built / name).read_text()


def test_push_without_key_errors(monkeypatch, capsys):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert main(["push", "--entity", "ent", "--project", "proj", "--sweep-dir", str(RECORDED)]) == 2
    assert "WANDB_API_KEY" in capsys.readouterr().err


# Every sweep file -> the resolved config keys its arms differ in (group overrides such as `prediction` or
# `loss` resolved to the keys they set; Optuna ranges as they are); seeds and the derived `tag` never group.
SWEEP_ARM_KEYS = {
    "conditioning": ("model.conditioning",),
    "demo": (  # imf, alphaflow, fm: each one's own settings vary (absent in the others)
        "loss._target_",
        "loss.alpha_end",
        "loss.alpha_start",
        "loss.anneal_end",
        "loss.anneal_start",
        "loss.clamp",
        "loss.gamma",
        "loss.imf_v_loss",
        "loss.norm_p",
        "loss.schedule",
        "loss.schedule_unit",
        "loss.time_sampler.data_proportion",
        "model.use_v_head",
    ),  # fmt: skip
    "joint_optuna": ("loss.jvp", "loss.norm_p", "model.conditioning", "model.prediction_type", "optim.lr"),
    "lr": ("optim.lr",),
    "lr_optuna": ("optim.lr", "optim.beta2", "optim.warmup_steps"),
    "norm_p": ("loss.norm_p",),
    "prediction": ("loss.jvp", "model.prediction_type"),
    "recipe_imf_vs_meanflow": ("loss.time_sampler.data_proportion", "model.use_v_head"),
    "objectives": (  # every objective: each one's own settings vary (absent in the others)
        "loss._target_",
        "loss.alpha_end",
        "loss.alpha_start",
        "loss.anneal_end",
        "loss.anneal_start",
        "loss.clamp",
        "loss.fm_steps",
        "loss.gamma",
        "loss.gap_anneal_steps",
        "loss.gap_gamma",
        "loss.imf_v_loss",
        "loss.norm_p",
        "loss.ramp_steps",
        "loss.schedule",
        "loss.schedule_unit",
        "loss.time_sampler.data_proportion",
        "model.use_v_head",
    ),  # fmt: skip
    "time_sampling": ("loss.time_sampler.distribution",),
    "time_scale": ("model.time_scale",),
    "v_head": ("model.use_v_head", "model.v_head_num_res_blocks"),
}
OPTUNA_RANGES = {"joint_optuna": ("optim.lr",), "lr_optuna": ("optim.lr", "optim.beta2", "optim.warmup_steps")}
SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"


def test_every_sweep_file_has_known_arm_keys():
    assert {p.stem for p in SWEEPS.glob("*.yaml")} == set(SWEEP_ARM_KEYS)


@pytest.mark.parametrize("sweep", sorted(SWEEP_ARM_KEYS))
def test_dashboards_for_every_sweep_group_by_its_resolved_keys(sweep, tmp_path):
    args = ["build", "--entity", "ent", "--project", "proj", "--sweep", sweep, "--out", str(tmp_path)]
    assert main(args) == 0
    # an Optuna search's continuous parameters get importances / scatter plots instead of groups
    grouped = [k for k in SWEEP_ARM_KEYS[sweep] if k not in OPTUNA_RANGES.get(sweep, ())]
    cols = [f"{k.split('.')[0]}.value.{k.split('.', 1)[1]}" for k in grouped]
    w = json.loads((tmp_path / "workspace_monitor.json").read_text())
    runset = w["spec"]["section"]["runSets"][0]
    assert [g["name"] for g in runset["grouping"] if g["section"] == "config"] == cols
    assert runset["filters"]["filters"][0]["value"] == sweep  # every launch of the sweep (its sweep_name)
    r = json.loads((tmp_path / "report_ablation.json").read_text())
    grid = next(b["metadata"] for b in r["spec"]["blocks"] if b.get("type") == "panel-grid")
    assert [g["name"] for g in grid["runSets"][0]["grouping"]] == cols


def test_optuna_sweep_builds_in_a_fresh_process(tmp_path):
    # the sweeper schema must be registered by neuromf.dashboards itself, not by an earlier import in the session
    args = ["build", "--entity", "e", "--project", "p", "--sweep", "lr_optuna", "--out", str(tmp_path)]
    res = subprocess.run([sys.executable, "-m", "neuromf.dashboards", *args], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "workspace_monitor.json").is_file() and "Traceback" not in res.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--sweep", "nope"], "Could not find 'sweep/nope' Available options in 'sweep': conditioning, demo,"),
        (["--sweep", "demo", "--override", "model.nope=1"], "Could not override 'model.nope'."),
        (["--sweep", "demo", "--override", "oops"], "Error parsing override 'oops'"),
    ],
)
def test_bad_sweep_is_one_error_line(extra, message, tmp_path, capsys):
    assert main(["build", "--entity", "e", "--project", "p", *extra, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())


def test_shipped_dashboards_are_the_built_ones(tmp_path):
    # dashboards/README.md's command; a change to the code or the keys needs the files rebuilt
    args = ["build", "--entity", "YOUR_ENTITY", "--project", "neuromf", "--sweep", "demo", "--out", str(tmp_path)]
    assert main(args) == 0
    shipped = Path(__file__).resolve().parents[1] / "dashboards"
    for name in ("workspace_monitor.json", "report_ablation.json"):
        assert (tmp_path / name).read_text() == (shipped / name).read_text(), f"dashboards/{name} is stale"
    assert 'summary:val/feat3d_fd/nfe1"' in (shipped / "workspace_monitor.json").read_text()  # the plain key


def _views(data) -> list[dict]:
    found = []

    def walk(x):
        if isinstance(x, dict):
            if "viewType" in x:
                found.append(x)
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(data)
    return found


def test_build_writes_to_an_output_path_unless_refresh(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tracked = Path(__file__).resolve().parents[1] / "dashboards"
    before = {p.name: p.stat().st_mtime_ns for p in tracked.glob("*.json")}
    assert main(["build", "--entity", "e", "--project", "p", "--sweep-dir", str(RECORDED)]) == 0
    assert sorted(p.name for p in (tmp_path / "build" / "dashboards").iterdir()) == [
        "report_ablation.json",
        "workspace_monitor.json",
    ]
    assert {p.name: p.stat().st_mtime_ns for p in tracked.glob("*.json")} == before  # tracked files untouched
    with pytest.raises(SystemExit):
        main(["build", "--entity", "e", "--project", "p", "--refresh", "--out", str(tmp_path)])


def test_runs_sorted_by_the_objective_smoothed_lines_and_a_config_comparer(built):
    w = json.loads((built / "workspace_monitor.json").read_text())
    runset = w["spec"]["section"]["runSets"][0]
    assert runset["sort"]["keys"] == [{"ascending": True, "key": {"name": "val/feat3d_fd/nfe1", "section": "summary"}}]
    views = _views(w)
    lines = [v for v in views if v["viewType"] == "Run History Line Plot"]
    assert lines and all(v["config"].get("smoothingWeight") == 0.6 for v in lines)
    assert any(v["viewType"] == "Run Comparer" for v in views)
    r = json.loads((built / "report_ablation.json").read_text())
    assert any(v["viewType"] == "Run Comparer" for v in _views(r))
    grid = next(b["metadata"] for b in r["spec"]["blocks"] if b.get("type") == "panel-grid")
    assert grid["runSets"][0]["sort"]["keys"][0]["key"]["name"] == "val/feat3d_fd/nfe1"


def test_optuna_search_gets_importances_and_objective_per_parameter(tmp_path):
    args = ["build", "--entity", "e", "--project", "p", "--sweep", "lr_optuna", "--out", str(tmp_path)]
    assert main(args) == 0
    w = json.loads((tmp_path / "workspace_monitor.json").read_text())
    runset = w["spec"]["section"]["runSets"][0]
    assert [g["name"] for g in runset["grouping"]] == ["group"]  # continuous parameters do not group
    views = _views(w)
    imp = [v for v in views if v["viewType"] == "Parameter Importance"]
    assert len(imp) == 1 and imp[0]["config"]["targetKey"] == "val/feat3d_fd/nfe1"
    scatter = {v["config"]["xAxis"]: v["config"]["yAxis"] for v in views if v["viewType"] == "Scatter Plot"}
    assert scatter == {f"config:optim.value.{k}": "summary:val/feat3d_fd/nfe1" for k in ("lr", "beta2", "warmup_steps")}


def test_push_updates_one_view(monkeypatch):
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    from neuromf.dashboards import push, sweep_plan

    saved = []
    monkeypatch.setenv("WANDB_API_KEY", "k")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setattr(ws.Workspace, "save", lambda self: saved.append(self._internal_name) or self)
    monkeypatch.setattr(ws.Workspace, "url", property(lambda self: f"ws:{self._internal_name}"))
    monkeypatch.setattr(wr.Report, "save", lambda self, *a, **k: self)
    monkeypatch.setattr(wr.Report, "url", property(lambda self: "report"))
    plan = sweep_plan(sweep_dir=RECORDED)
    push("e", "p", "demo/2026-01-01_00-00-00", plan)
    push("e", "p", "demo/2026-01-01_00-00-00", plan)
    push("e", "p", "demo/2026-02-02_00-00-00", plan)
    assert saved[0] == saved[1] != saved[2] and re.fullmatch(r"nw-\w+-v", saved[0])
