"""Is a re-run into an existing run dir the same run? The config and the data store a checkpoint was trained
with travel inside it (`RunRecordInCheckpoint`); before a run resumes, `config_changes` compares them with the
new ones. A change outside `resume.may_change` (conf/train.yaml) is refused before anything is written: resuming
a u-prediction checkpoint as x-prediction, or with another network, would mix two runs in one metrics.csv.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from neuromf.tracking.run import clean_config, flat_config

CHECKPOINT_KEY = "neuromf_run"  # {"config": nested resolved config, "data_store": store_identity(...)}
STORE_FILES = ("manifest.csv", "stats.json")
DATA_STORE = "data store"  # the name of the data store's identity among the compared keys


def store_identity(latent_dir: str | Path) -> dict[str, str]:
    """sha256 of the store's manifest.csv and stats.json (which subjects, their files, shapes and statistics):
    the same for a store that was moved, different for one encoded again or changed."""
    out = {}
    for name in STORE_FILES:
        path = Path(latent_dir) / name
        out[name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "absent"
    return out


def run_record(resolved_cfg: dict, latent_dir: str | Path | None) -> dict[str, Any]:
    """What a checkpoint records about its run: the resolved config (secrets dropped; JSON types only, so it
    loads with torch.load(weights_only=True)) and the data store's identity."""
    config = json.loads(json.dumps(clean_config(resolved_cfg), default=str))
    return {"config": config, "data_store": store_identity(latent_dir) if latent_dir else None}


class RunRecordInCheckpoint(pl.Callback):
    """Writes `run_record(...)` into every checkpoint under CHECKPOINT_KEY."""

    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = self.record


def _allowed(key: str, may_change: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in may_change)


def _normal(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def config_changes(
    recorded: dict[str, Any], current: dict[str, Any], may_change: list[str]
) -> list[tuple[str, Any, Any]]:
    """(key, recorded value, new value) for each dotted key that differs between two run records (a record:
    {"config": nested dict, "data_store": identity or None}) and is not matched by a `may_change` pattern
    (fnmatch, e.g. `trainer.max_epochs`, `logger.*`). A key present in one only is compared with '<absent>'.
    The data store is compared when both records name one."""
    old = flat_config(_normal(recorded.get("config") or {}))
    new = flat_config(_normal(current.get("config") or {}))
    changes = []
    for key in sorted(set(old) | set(new)):
        if _allowed(key, may_change):
            continue
        a, b = old.get(key, "<absent>"), new.get(key, "<absent>")
        if a != b:
            changes.append((key, a, b))
    old_store, new_store = recorded.get("data_store"), current.get("data_store")
    if old_store and new_store and old_store != new_store:
        differing = [name for name in STORE_FILES if old_store.get(name) != new_store.get(name)]
        changes.append((DATA_STORE, f"{'+'.join(differing)} sha256 {old_store[differing[0]][:12]}",
                        f"{new_store[differing[0]][:12]}"))  # fmt: skip
    return changes


def describe_changes(changes: list[tuple[str, Any, Any]], limit: int = 8) -> str:
    """'model.num_channels: [8, 8, 16] -> [8, 16, 16]; ...' (the first `limit`, then how many more)."""
    parts = [f"{key}: {a!r} -> {b!r}" if key != DATA_STORE else f"{key}: {a} -> {b}" for key, a, b in changes]
    more = f"; and {len(parts) - limit} more" if len(parts) > limit else ""
    return "; ".join(parts[:limit]) + more
