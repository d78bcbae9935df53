"""The files of a run dir, named in one place: `neuromf.train` and `neuromf.evaluate` write them; the sweep
summary and progress, the report, the dashboards and the lock read them. It imports nothing from neuromf, so every
layer may use it (the evaluation callback and the datamodule included).

    <run_dir>/status.json       status, reason, objective, steps (neuromf/tracking/run.py)
    <run_dir>/progress.json     step, loss, time left while training (neuromf/training/progress.py)
    <run_dir>/metrics.csv       every logged value (neuromf/tracking/csv_logger.py)
    <run_dir>/.hydra/           config.yaml, hydra.yaml, overrides.yaml (what the run was trained with)
    <run_dir>/checkpoints/      last.ckpt (+ last.prev.ckpt), best-*.ckpt
    <run_dir>/samples/          epoch_NNNN/ sample latents and previews (SampleCollector)
    <run_dir>/eval/             summary.json of the validation passes (EvaluationCallback), final.json of the
                                test-split evaluation (python -m neuromf.evaluate)
    <run_dir>/split.json        the train/val/test subjects (neuromf/data/datamodule.py)
    <run_dir>/budget.json       the equal-compute budget and schedule (neuromf/training/budget.py)
    <run_dir>/wandb_id.txt      the W&B run id, kept over requeues
    <run_dir>/.lock             one writer per run dir (neuromf/tracking/lock.py)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunDir:
    """One run dir; each property is the path of one of its files or folders (nothing is created)."""

    path: Path

    def __init__(self, path: str | os.PathLike) -> None:
        object.__setattr__(self, "path", Path(path))

    @property
    def status(self) -> Path:
        return self.path / "status.json"

    @property
    def progress(self) -> Path:
        return self.path / "progress.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def hydra(self) -> Path:
        return self.path / ".hydra"

    @property
    def config(self) -> Path:
        return self.hydra / "config.yaml"

    @property
    def overrides(self) -> Path:
        return self.hydra / "overrides.yaml"

    @property
    def hydra_settings(self) -> Path:
        """Hydra's own node (runtime choices, launcher, sweeper) as the run was launched with."""
        return self.hydra / "hydra.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def samples(self) -> Path:
        return self.path / "samples"

    @property
    def eval(self) -> Path:
        return self.path / "eval"

    @property
    def eval_summary(self) -> Path:
        return self.eval / "summary.json"

    @property
    def eval_final(self) -> Path:
        return self.eval / "final.json"

    @property
    def split(self) -> Path:
        return self.path / "split.json"

    @property
    def wandb_id(self) -> Path:
        return self.path / "wandb_id.txt"

    @property
    def budget(self) -> Path:
        return self.path / "budget.json"

    @property
    def lock(self) -> Path:
        return self.path / ".lock"
