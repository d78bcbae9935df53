"""Dashboards as code: offline build writes reviewable, stable JSON; a sweep's panels match what its runs log."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from neuromf.dashboards import main, panel_keys, sweep_plan, varying_keys

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
    plan = sweep_plan(sweep="demo")
    assert plan["arm_keys"] == ("model.use_v_head",) and plan["group"] == "demo"
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
