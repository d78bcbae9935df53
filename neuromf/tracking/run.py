"""Run-dir bookkeeping: status.json, a W&B run id that survives requeues, the secret-free config, provenance.

Everything written here passes through neuromf/tracking/redact.py (URL passwords, secret-looking keys)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

from neuromf.tracking.redact import is_secret_key, redact, redact_text


def write_json_atomic(path: Path, payload: dict) -> None:
    """Write JSON to `path` via a temp file + os.replace, with URL passwords and secret-looking keys masked."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(redact(payload), indent=2, default=str))
    os.replace(tmp, path)


def read_status(run_dir: Path) -> dict:
    path = Path(run_dir) / "status.json"
    return json.loads(path.read_text()) if path.exists() else {}


def update_status(run_dir: Path, **fields: Any) -> dict:
    """Merge `fields` into <run_dir>/status.json and return the new status."""
    status = {**read_status(run_dir), **fields}
    write_json_atomic(Path(run_dir) / "status.json", status)
    return status


def stable_run_id(run_dir: Path) -> str:
    """The W&B run id of this run dir: created once, re-read after a requeue so the W&B run resumes."""
    path = Path(run_dir) / "wandb_id.txt"
    if path.exists():
        return path.read_text().strip()
    run_id = uuid.uuid4().hex[:12]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id)
    return run_id


def clean_config(cfg: dict) -> dict[str, Any]:
    """The nested config with keys that look like secrets (api keys, tokens, ...) dropped at any depth and URL
    passwords masked (what the loggers record: W&B config, hparams.yaml)."""
    return redact(cfg, drop=True)


def flat_config(cfg: dict, prefix: str = "") -> dict[str, Any]:
    """{'model': {'lr': 1}} -> {'model.lr': 1}, dropping keys that look like secrets (api keys, tokens, ...)."""
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if is_secret_key(key):
            continue
        if isinstance(value, dict):
            out.update(flat_config(value, prefix=f"{name}."))
        else:
            out[name] = redact(value)
    return out


def provenance(repo: str | Path | None = None) -> dict[str, Any]:
    """Git commit and dirty flag of the code (None outside a git checkout), the command line, host and date."""
    import socket
    import subprocess
    import sys
    import time

    repo = Path(repo) if repo else Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    dirty = None if commit is None else bool(git("status", "--porcelain", "--untracked-files=no"))
    return {
        "git_commit": commit,
        "git_dirty": dirty,
        "command": redact_text(" ".join([Path(sys.executable).name, *sys.argv])),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
