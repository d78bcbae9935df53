"""Run-dir bookkeeping: status.json, a W&B run id that survives requeues, the secret-free config, provenance.

Everything written here passes through neuromf/tracking/redact.py (URL passwords, secret-looking keys)."""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

from neuromf.io_atomic import write_json_atomic, write_text_atomic
from neuromf.run_dir import RunDir
from neuromf.tracking.redact import is_secret_key, redact, redact_text


def write_redacted_json(path: Path, payload: dict) -> None:
    """Write JSON to `path` atomically, with URL passwords and secret-looking keys masked."""
    write_json_atomic(path, redact(payload))


class DamagedStatusError(ValueError):
    """status.json exists but is not a JSON object (a node crash can leave a zero-length file)."""


def read_status(run_dir: Path) -> dict:
    """<run_dir>/status.json as a dict ({} when absent); DamagedStatusError naming the file when unreadable."""
    path = RunDir(run_dir).status
    if not path.exists():
        return {}
    text = path.read_text(errors="replace")
    try:
        status = json.loads(text)
    except json.JSONDecodeError as err:
        what = "empty (0 bytes)" if not text.strip() else f"not valid JSON ({err})"
        raise DamagedStatusError(f"{path}: {what}") from err
    if not isinstance(status, dict):
        raise DamagedStatusError(f"{path}: not a JSON object")
    return status


def update_status(run_dir: Path, **fields: Any) -> dict:
    """Merge `fields` into <run_dir>/status.json and return the new status. A damaged status.json is replaced
    (with a warning naming it): the checkpoint and metrics.csv, not status.json, hold the run's progress."""
    try:
        previous = read_status(run_dir)
    except DamagedStatusError as err:
        print(f"warning: {err}; writing a new one (the checkpoint and metrics.csv are kept)", file=sys.stderr)
        previous = {"replaced_damaged_status": str(err)}
    status = {**previous, **fields}
    write_redacted_json(RunDir(run_dir).status, status)
    return status


def save_hydra_record(run_dir: Path, task_cfg) -> None:
    """<run_dir>/.hydra/{config,hydra,overrides}.yaml as Hydra writes them (conf/train.yaml sets
    hydra.output_subdir: null so that Hydra does not: a re-run with another config must be refused before the
    run dir's record of what its checkpoint was trained with is overwritten)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    run = RunDir(run_dir)
    write_text_atomic(run.config, redact_text(OmegaConf.to_yaml(task_cfg)))  # no password reaches a file
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        hydra_yaml = OmegaConf.to_yaml(OmegaConf.create({"hydra": hydra_cfg}))
        write_text_atomic(run.hydra_settings, redact_text(hydra_yaml))
        write_text_atomic(run.overrides, redact_text(OmegaConf.to_yaml(hydra_cfg.overrides.task)))


def stable_run_id(run_dir: Path) -> str:
    """The W&B run id of this run dir: created once, re-read after a requeue so the W&B run resumes."""
    path = RunDir(run_dir).wandb_id
    if path.exists():
        return path.read_text().strip()
    run_id = uuid.uuid4().hex[:12]
    write_text_atomic(path, run_id)  # a crash never leaves an empty id that a requeue would resume with
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


def git_state(repo: str | Path | None = None) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the code's git checkout (default: this project's); (None, None) outside one."""
    import subprocess

    repo = Path(repo) if repo else Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    dirty = None if commit is None else bool(git("status", "--porcelain", "--untracked-files=no"))
    return commit, dirty


def provenance(repo: str | Path | None = None) -> dict[str, Any]:
    """Git commit and dirty flag of the code (None outside a git checkout), the command line, host and date."""
    import socket
    import time

    commit, dirty = git_state(repo)
    return {
        "git_commit": commit,
        "git_dirty": dirty,
        "command": redact_text(" ".join([Path(sys.executable).name, *sys.argv])),
        "host": socket.gethostname(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
