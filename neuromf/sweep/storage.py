"""Where an Optuna study lives: a SQLAlchemy URL (SQLite, PostgreSQL, ...) or a journal file.

`journal:///<path>` (relative) or `journal:////<absolute path>` names an append-only JournalStorage file
(optuna.storages.JournalStorage + JournalFileBackend): safe on NFS/Lustre with many writers, where SQLite locks
or corrupts. `auto` picks the journal file for SLURM launchers and SQLite for local ones.
"""

from __future__ import annotations

from pathlib import Path

JOURNAL = "journal:///"
JOURNAL_FILE = "optuna.journal"
SQLITE_FILE = "optuna.db"


def resolve_storage(storage: str | None, sweep_dir: str | Path, on_slurm: bool) -> str | None:
    """The storage URL with `auto` resolved and file paths (sqlite, journal) made absolute."""
    if storage is None:
        return None
    storage = str(storage)
    if storage == "auto":
        name = JOURNAL_FILE if on_slurm else SQLITE_FILE
        return absolute(f"{JOURNAL if on_slurm else 'sqlite:///'}{Path(sweep_dir) / name}")
    return absolute(storage)


def absolute(storage: str) -> str:
    """sqlite:///rel.db -> sqlite:////abs/rel.db, and the same for journal:///; other URLs unchanged (jobs may
    run in another directory than the launcher)."""
    for prefix in ("sqlite:///", JOURNAL):
        if storage.startswith(prefix) and storage[len(prefix) :] not in ("", ":memory:"):
            return prefix + str(Path(storage[len(prefix) :]).absolute())
    return storage


class StorageError(ValueError):
    """A study file that Optuna cannot use as it is (damaged SQLite file, torn journal): the message names the
    file and what to do. Raised before anything is written to it."""


def check_sqlite(path: Path) -> None:
    """StorageError when an existing SQLite study file is empty (SQLite would take a 0-byte file for a new, empty
    database: the sweep would start its study over) or fails SQLite's own integrity check (quick_check)."""
    import sqlite3

    if not path.exists():
        return
    if path.stat().st_size == 0:
        raise StorageError(
            f"{path}: 0 bytes, not an Optuna study (a crash while it was created?); delete it to start the study "
            "over, or restore it from a backup"
        )
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:  # read-only: nothing is written
            result = db.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as err:
        result = str(err)
    if result != "ok":
        raise StorageError(
            f"{path}: damaged SQLite study ({result}); restore it from a backup, or move it aside to start the "
            "study over (`sqlite3 <file> .recover` may save the trials)"
        )


def check_journal(path: Path) -> None:
    """StorageError when a journal file's last record is torn (a crash mid-append: Optuna would append the next
    record onto it and every later read would fail) or a record before it is not JSON. Journal records are one
    JSON object per line (optuna.storages.journal.JournalFileBackend)."""
    import json

    from optuna.storages.journal import JournalFileSymlinkLock
    from optuna.storages.journal._file import get_lock_file

    if not path.exists():
        return
    with get_lock_file(JournalFileSymlinkLock(str(path))):  # Optuna's append lock: no record is half-written
        data = path.read_bytes()
    if not data:
        return  # an empty journal is an empty study
    end = data.rfind(b"\n") + 1  # the byte after the last complete record
    if end < len(data):
        raise StorageError(
            f"{path}: its last record is torn ({len(data) - end} bytes after the last complete line, a crash "
            f"mid-write); nothing was written to it. Keep a copy, cut the torn record off with `truncate -s {end} "
            f"{path}`, then re-run"
        )
    for number, line in enumerate(data.splitlines(), start=1):
        try:
            json.loads(line)
        except ValueError as err:
            raise StorageError(
                f"{path}: record {number} is not JSON ({err}): the journal is damaged before its end; restore "
                "it from a backup"
            ) from err


def open_storage(storage: str):
    """What optuna.create_study/load_study take: a JournalStorage for journal URLs, else the URL itself. An
    existing study file is checked first (`check_journal`, `check_sqlite`: StorageError naming it)."""
    if storage.startswith(JOURNAL):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = Path(storage[len(JOURNAL) :])
        check_journal(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if storage.startswith("sqlite:///"):
        path = Path(storage[len("sqlite:///") :])
        if str(path) != ":memory:":
            check_sqlite(path)
        path.parent.mkdir(parents=True, exist_ok=True)
    return storage


def find_storage(sweep_dir: str | Path) -> str | None:
    """The storage URL of a sweep dir's own study file (journal or SQLite), None without one."""
    sweep_dir = Path(sweep_dir)
    if (sweep_dir / JOURNAL_FILE).is_file():
        return JOURNAL + str((sweep_dir / JOURNAL_FILE).resolve())
    if (sweep_dir / SQLITE_FILE).is_file():
        return f"sqlite:///{(sweep_dir / SQLITE_FILE).resolve()}"
    return None
