"""Damaged Optuna study files (a crash mid-write, a full disk): a truncated or 0-byte optuna.db and a journal whose
last record is torn are named in one line with what to do, before anything is written to them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from training_helpers import TINY_TRAIN

from neuromf.sweep.storage import JOURNAL, StorageError, open_storage

REPO = Path(__file__).resolve().parent.parent


def _study_files(tmp_path: Path) -> tuple[Path, Path]:
    """An optuna.db and an optuna.journal of a 3-trial study."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    db, journal = tmp_path / "optuna.db", tmp_path / "optuna.journal"
    for storage in (f"sqlite:///{db}", f"{JOURNAL}{journal}"):
        study = optuna.create_study(study_name="s", storage=open_storage(storage))
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    return db, journal


def test_intact_study_files_open_and_damaged_ones_are_named(tmp_path):
    db, journal = _study_files(tmp_path)
    for storage in (f"sqlite:///{db}", f"{JOURNAL}{journal}"):
        assert len(optuna.load_study(study_name="s", storage=open_storage(storage)).trials) == 3

    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2])
    with pytest.raises(StorageError, match=rf"^{db}: damaged SQLite study \(database disk image is malformed\)"):
        open_storage(f"sqlite:///{db}")
    db.write_bytes(b"")
    with pytest.raises(StorageError, match=rf"^{db}: 0 bytes, not an Optuna study"):
        open_storage(f"sqlite:///{db}")
    assert db.stat().st_size == 0  # not made into a new empty study

    whole = journal.read_bytes()
    journal.write_bytes(whole[:-20])  # the last record cut mid-line
    end = whole[:-20].rfind(b"\n") + 1
    with pytest.raises(StorageError) as err:
        open_storage(f"{JOURNAL}{journal}")
    assert str(err.value).startswith(f"{journal}: its last record is torn ({len(whole) - 20 - end} bytes after")
    assert f"truncate -s {end} {journal}" in str(err.value)
    assert journal.read_bytes() == whole[:-20]  # nothing appended onto the torn record
    journal.write_bytes(whole[:end])  # what the message says to do: the study opens with its complete records
    assert len(optuna.load_study(study_name="s", storage=open_storage(f"{JOURNAL}{journal}")).trials) >= 2

    lines = whole.splitlines(keepends=True)
    journal.write_bytes(b"".join([lines[0], b"{not json\n", *lines[1:]]))
    with pytest.raises(StorageError, match=rf"^{journal}: record 2 is not JSON"):
        open_storage(f"{JOURNAL}{journal}")


def test_a_sweep_on_a_torn_journal_is_one_error_line_and_leaves_the_file_alone(tmp_path):
    _, journal = _study_files(tmp_path)
    torn = journal.read_bytes()[:-20]
    journal.write_bytes(torn)
    cmd = [sys.executable, "-m", "neuromf.train", "-m", "sweep=lr_optuna", *TINY_TRAIN, "hydra/launcher=basic",
           f"hydra.sweeper.storage={JOURNAL}{journal}", f"hydra.sweep.dir={tmp_path / 'sweep'}"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {journal}: its last record is torn"), proc.stderr
    assert journal.read_bytes() == torn
    assert not list((tmp_path / "sweep").glob("*/.hydra"))  # no job started
