"""Hydra callback masking secrets in the files Hydra itself writes: a run's ``.hydra/{overrides,config,hydra}.yaml``
and a sweep's ``multirun.yaml`` (URL passwords and secret-looking keys, neuromf/tracking/redact.py).

Hydra writes these before the job starts, from the command line as given; the job keeps the unredacted config in
memory (it needs the database URL to reach its study), only the copies on disk are rewritten. Registered in
conf/train.yaml under hydra.callbacks.
"""

from __future__ import annotations

from pathlib import Path

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from neuromf.tracking.redact import redact_file

HYDRA_FILES = ("overrides.yaml", "config.yaml", "hydra.yaml")


def redact_hydra_files(hydra_dir: str | Path | None = None, sweep_dir: str | Path | None = None) -> list[Path]:
    """Rewrite `<hydra_dir>/{overrides,config,hydra}.yaml` (a run's .hydra/) and `<sweep_dir>/multirun.yaml`
    redacted; the files that changed."""
    paths = [Path(hydra_dir) / name for name in HYDRA_FILES] if hydra_dir else []
    paths += [Path(sweep_dir) / "multirun.yaml"] if sweep_dir else []
    return [p for p in paths if redact_file(p)]


class RedactHydraFiles(Callback):
    """Masks secrets in Hydra's files as each job starts (single runs and every job of a multirun) and once more
    when a multirun ends."""

    def on_job_start(self, config: DictConfig, **kwargs) -> None:
        hydra = config.hydra
        subdir = hydra.get("output_subdir")
        hydra_dir = Path(hydra.runtime.output_dir) / subdir if subdir else None
        redact_hydra_files(hydra_dir, hydra.sweep.dir if hydra.mode == RunMode.MULTIRUN else None)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        redact_hydra_files(sweep_dir=config.hydra.sweep.dir)
