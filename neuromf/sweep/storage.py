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


def open_storage(storage: str):
    """What optuna.create_study/load_study take: a JournalStorage for journal URLs, else the URL itself."""
    if storage.startswith(JOURNAL):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = Path(storage[len(JOURNAL) :])
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if storage.startswith("sqlite:///"):
        Path(storage[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    return storage


def find_storage(sweep_dir: str | Path) -> str | None:
    """The storage URL of a sweep dir's own study file (journal or SQLite), None without one."""
    sweep_dir = Path(sweep_dir)
    if (sweep_dir / JOURNAL_FILE).is_file():
        return JOURNAL + str((sweep_dir / JOURNAL_FILE).resolve())
    if (sweep_dir / SQLITE_FILE).is_file():
        return f"sqlite:///{(sweep_dir / SQLITE_FILE).resolve()}"
    return None
