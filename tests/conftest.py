"""Shared fixtures: the local SLURM cluster (scripts/slurm-local.sh) and a runner for the real training app.

The SLURM integration tests start the local cluster once per session. Where it cannot be started they are
skipped, except under CI=true, where that is an error.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from training_helpers import TINY, TINY_TRAIN, slurm_launcher  # noqa: F401  (re-exported to the tests)

REPO = Path(__file__).resolve().parents[1]
SLURM_SCRIPT = REPO / "scripts" / "slurm-local.sh"
SLURM_PARTITION = os.environ.get("SLURM_LOCAL_PARTITION", "local")
POSTGRES_SCRIPT = REPO / "scripts" / "postgres-local.sh"


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """Starts (installing if needed) the local SLURM; returns its partition name."""
    try:
        cmd = ["bash", str(SLURM_SCRIPT), "start"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        ok, msg = proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr.strip()[-2000:]}"
    except (OSError, subprocess.TimeoutExpired) as err:
        ok, msg = False, repr(err)
    if not ok:
        reason = f"local SLURM could not be started with {SLURM_SCRIPT} start ({msg})"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return SLURM_PARTITION


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """Starts (installing if needed) a local PostgreSQL (scripts/postgres-local.sh); returns its SQLAlchemy URL.
    Skipped where it cannot be started, except under CI=true."""
    try:
        proc = subprocess.run(["bash", str(POSTGRES_SCRIPT), "start"], capture_output=True, text=True, timeout=600)
        ok, msg = proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr.strip()[-2000:]}"
        if ok:
            import psycopg2  # noqa: F401  (the driver of postgresql:// URLs)
    except (OSError, subprocess.TimeoutExpired, ImportError) as err:
        ok, msg = False, repr(err)
    if not ok:
        reason = f"local PostgreSQL could not be started with {POSTGRES_SCRIPT} start ({msg})"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return proc.stdout.strip().splitlines()[-1]


TINY_EPOCH = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1"]


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The run dirs of a sweep dir (named by job number), in job order."""
    return sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def run_overrides(run_dir: Path) -> dict[str, str]:
    """key -> value of a run's .hydra/overrides.yaml."""
    lines = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    return dict(line.split("=", 1) for line in lines)


@pytest.fixture(scope="session")
def demo_latents() -> Path:
    """The small demo latent store, built once before the sweeps start (their jobs would otherwise race)."""
    from neuromf.data.demo import ensure_demo

    return ensure_demo("small")


@pytest.fixture
def neuromf_multirun(tmp_path, demo_latents):
    """Runs `python -m neuromf.train -m <args>` in tmp_path and returns the finished process (asserts exit 0
    unless check=False)."""

    def run(args: list[str], timeout: float, check: bool = True) -> subprocess.CompletedProcess:
        env = {**os.environ, "HYDRA_FULL_ERROR": "1", "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
        proc = subprocess.run(
            [sys.executable, "-m", "neuromf.train", "-m", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
        if check:
            assert proc.returncode == 0, f"multirun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        return proc

    return run
