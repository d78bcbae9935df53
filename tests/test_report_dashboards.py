"""Dashboards as code: offline build writes reviewable, stable JSON with the expected panels."""

from __future__ import annotations

import json

import pytest

from neuromf.dashboards import main


def _panels(sections):
    return {s["name"]: s["panels"] for s in sections}


def _build(out) -> int:
    """`python -m neuromf.dashboards build` for a fixed entity/project/group into `out`."""
    args = ["build", "--entity", "ent", "--project", "proj", "--group", "abl_pred", "--out", str(out)]
    return main([*args, "--nfe", "1", "4"])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("dash")
    assert _build(out) == 0
    return out


def test_workspace_sections_and_keys(built):
    w = json.loads((built / "workspace_monitor.json").read_text())
    assert (w["entity"], w["project"]) == ("ent", "proj")
    section = w["spec"]["section"]
    panels = _panels(section["panelBankConfig"]["sections"])
    assert list(panels) == ["losses", "JVP", "throughput / memory", "eval", "samples"]

    def metrics(name):
        return {m for p in panels[name] for m in p["config"].get("metrics", [])}

    assert {"train/loss", "train/loss_raw", "train/loss_u", "train/loss_v"} <= metrics("losses")
    assert {"train/jvp_norm", "train/cos_V_v", "train/cos_vhat_v"} <= metrics("JVP")
    assert {"train/samples_per_s", "train/peak_mem_gb"} <= metrics("throughput / memory")
    assert {"val/swd", "val/fid_mean", "val/feat3d_fd", "val/nfe_consistency"} <= metrics("eval")
    media = [p for p in panels["samples"] if p["viewType"] == "Media Browser"]
    assert [p["config"]["mediaKeys"] for p in media] == [["samples/nfe_1"], ["samples/nfe_4"]]
    runset = section["runSets"][0]
    assert runset["grouping"][0] == {"section": "run", "name": "group"}
    assert {"section": "config", "name": "model.value.prediction_type"} in runset["grouping"]
    assert runset["filters"]["filters"][0]["value"] == "abl_pred"


def test_report_groups_arms(built):
    r = json.loads((built / "report_ablation.json").read_text())
    assert r["project"] == {"entityName": "ent", "name": "proj"}
    grids = [b["metadata"] for b in r["spec"]["blocks"] if b.get("type") == "panel-grid"]
    assert grids
    rs = grids[0]["runSets"][0]
    assert [g["name"] for g in rs["grouping"]] == [
        "model.value.prediction_type",
        "model.value.conditioning",
        "loss.value.norm_p",
        "optim.value.lr",
    ]
    assert rs["filters"]["filters"][0]["key"]["name"] == "group"
    types = [p["viewType"] for p in grids[0]["panelBankSectionConfig"]["panels"]]
    assert "Bar Chart" in types and "Parallel Coordinates Plot" in types


def test_build_is_stable(built, tmp_path):
    assert _build(tmp_path) == 0
    for name in ("workspace_monitor.json", "report_ablation.json"):
        assert (tmp_path / name).read_text() == (built / name).read_text()


def test_push_without_key_errors(monkeypatch, capsys):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    assert main(["push", "--entity", "ent", "--project", "proj"]) == 2
    assert "WANDB_API_KEY" in capsys.readouterr().err
