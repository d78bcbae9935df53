"""A re-run into an existing run dir: with another config or data store it is refused before anything is written
(the run dir keeps the record of what its checkpoint was trained with); with an allowed change (more epochs) it
resumes, also when a node crash left a zero-length status.json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_training_faults import SMALL, cli, one_error_line, step_rows
from training_helpers import tiny_cfg

from neuromf.tracking.run import DamagedStatusError, read_status, update_status
from neuromf.train import InputError, train
from neuromf.training.resume_guard import DATA_STORE, config_changes, describe_changes, store_identity

KEPT = (".lock", "train.log")  # the lock's holder line and Hydra's job log


def _files(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name not in KEPT}


def test_config_changes_lists_the_differing_keys_outside_the_allowed_patterns():
    old = {"config": {"model": {"ch": [8, 8], "pred": "u"}, "trainer": {"max_epochs": 1}, "logger": {"a": 1}},
           "data_store": {"manifest.csv": "a" * 64, "stats.json": "b" * 64}}  # fmt: skip
    new = {"config": {"model": {"ch": [8, 16], "pred": "u", "extra": 1}, "trainer": {"max_epochs": 9},
                      "logger": {"a": 2}},
           "data_store": {"manifest.csv": "a" * 64, "stats.json": "c" * 64}}  # fmt: skip
    changes = config_changes(old, new, ["trainer.max_epochs", "logger.*"])
    assert changes == [
        ("model.ch", [8, 8], [8, 16]),
        ("model.extra", "<absent>", 1),
        (DATA_STORE, "stats.json sha256 bbbbbbbbbbbb", "cccccccccccc"),
    ]
    assert describe_changes(changes) == (
        "model.ch: [8, 8] -> [8, 16]; model.extra: '<absent>' -> 1; data store: stats.json sha256 bbbbbbbbbbbb -> "
        "cccccccccccc"
    )
    assert config_changes(old, {**old, "data_store": None}, []) == []  # a record without a store: not compared
    assert describe_changes([("k", i, i + 1) for i in range(10)], limit=2) == "k: 0 -> 1; k: 1 -> 2; and 8 more"


def test_damaged_status_json_is_named_and_replaced_on_the_next_update(tmp_path, capsys):
    (tmp_path / "status.json").write_text("")
    with pytest.raises(DamagedStatusError, match=r"status\.json: empty \(0 bytes\)"):
        read_status(tmp_path)
    assert update_status(tmp_path, status="running")["status"] == "running"
    assert f"warning: {tmp_path}/status.json: empty (0 bytes); writing a new one" in capsys.readouterr().err
    assert read_status(tmp_path)["status"] == "running"


@pytest.mark.slow
def test_a_rerun_with_another_config_is_refused_and_an_allowed_one_resumes(tmp_path):
    run = tmp_path / "run"
    train(tiny_cfg(*SMALL, "trainer.max_epochs=1"), run)
    assert read_status(run)["status"] == "completed"
    before = _files(run)
    assert {".hydra/config.yaml", "hparams.yaml", "metrics.csv", "status.json", "checkpoints/last.ckpt"} <= set(before)

    # another network and objective: one line naming both keys, exit 2, no file of the run dir changed
    proc = cli(run, "trainer.max_epochs=2", "model.num_channels=[8,16,16]", "model.prediction_type=x")
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = one_error_line(proc.stderr)
    assert f"error: {run}: not resuming {run}/checkpoints/last.ckpt (step 2): it was trained with another" in line
    assert "model.num_channels: [8, 8, 16] -> [8, 16, 16]" in line and "model.prediction_type: 'u' -> 'x'" in line
    assert "trainer.max_epochs" not in line  # allowed to change
    assert _files(run) == before

    # more epochs (allowed) after a node crash left a zero-length status.json: named, and the run resumes
    (run / "status.json").write_text("")
    proc = cli(run, "trainer.max_epochs=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"warning: {run}/status.json: empty (0 bytes); writing a new one" in proc.stderr
    status = read_status(run)
    assert status["status"] == "completed" and status["resumed_step"] == 2 and status["global_step"] == 4
    assert list(step_rows(run).index) == [0, 1, 2, 3]


@pytest.mark.slow
def test_a_rerun_on_a_changed_data_store_is_refused(tmp_path):
    """The store moved is fine (data.latent_dir may change); the store encoded again is not."""
    from neuromf.data.demo import ensure_demo

    store = tmp_path / "store"
    shutil.copytree(ensure_demo("small"), store)
    run = tmp_path / "run"
    train(tiny_cfg(*SMALL, "trainer.max_epochs=1", f"data.latent_dir={store}"), run)
    moved = tmp_path / "moved"
    store.rename(moved)
    identity = store_identity(moved)
    stats = json.loads((moved / "stats.json").read_text())
    stats["channel_mean"] = [m + 0.5 for m in stats["channel_mean"]]
    before = _files(run)
    (moved / "stats.json").write_text(json.dumps(stats))
    with pytest.raises(InputError) as err:
        train(tiny_cfg(*SMALL, "trainer.max_epochs=2", f"data.latent_dir={moved}"), run)
    new = store_identity(moved)["stats.json"]
    assert f"data store: stats.json sha256 {identity['stats.json'][:12]} -> {new[:12]}" in str(err.value)
    assert "data.latent_dir" not in str(err.value) and _files(run) == before
