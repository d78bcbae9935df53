"""A report over a damaged run dir: a metrics.csv whose last row was cut off (a kill or a full disk mid-write) is
read up to its last complete row, and the run's notes name the file and what could be read."""

from __future__ import annotations

import json

from neuromf.report import run_table
from neuromf.tracking.metrics import load_run


def _run(tmp_path, metrics: str):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- optim.lr=0.001\n")
    (run / "metrics.csv").write_text(metrics)
    (run / "status.json").write_text(json.dumps({"status": "running", "objective_key": "val/loss_raw"}))
    return run


def test_a_cut_last_row_is_left_out_and_named(tmp_path):
    # the last row "3,0,2.7" lost its last two characters: read as-is, the final loss would be 2.0
    run = _run(tmp_path, "step,epoch,train/loss_raw\n0,0,3.1\n1,0,2.9\n2,0,2.8\n3,0,2.")
    record = load_run(run)
    assert record.final["train/loss_raw"] == 2.8 and list(record.metrics["step"]) == [0, 1, 2]
    note = (
        f"{run}/metrics.csv: last row cut off (6 bytes without a line end: a kill or a full disk mid-write); "
        "read 3 complete rows, up to step 2, the cut row left out"
    )
    assert record.notes == [note]
    assert run_table([record], ["optim.lr=0.001"]).loc[0, "notes"] == note


def test_an_intact_metrics_csv_has_no_note(tmp_path):
    record = load_run(_run(tmp_path, "step,epoch,train/loss_raw\n0,0,3.1\n1,0,2.9\n"))
    assert record.final["train/loss_raw"] == 2.9 and record.notes == []


def test_a_zero_length_status_json_is_named_in_the_notes(tmp_path):
    run = _run(tmp_path, "step,epoch,train/loss_raw\n0,0,3.1\n")
    (run / "status.json").write_text("")
    record = load_run(run)
    assert record.status == "unknown"
    assert record.notes == [f"{run}/status.json: empty (0 bytes): the run's status is unknown"]
