"""Stopping on SIGTERM (what SLURM sends on preemption, `scancel` and at the time limit).

Lightning's signal connector turns SIGTERM into a `SIGTERMException` at the end of the current training batch;
`CheckpointOnSigterm` (Lightning's ModelCheckpoint, saving on that exception only) writes last.ckpt there, so
the steps since the last periodic checkpoint are kept. `train` then records status "stopped" and the process
exits with `STOPPED_EXIT_CODE` (128 + SIGTERM, what a shell reports for a SIGTERM'd process), so SLURM and
submitit see a job that did not finish.
"""

from __future__ import annotations

import signal
from typing import Any

from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException

STOPPED_EXIT_CODE = 128 + signal.SIGTERM


class RunStopped(Exception):
    """The run was stopped by SIGTERM after writing last.ckpt; the message says how to resume."""


class CheckpointOnSigterm(ModelCheckpoint):
    """last.ckpt when training is stopped by SIGTERM, and at no other time (no periodic or epoch-end saves: the
    run's other ModelCheckpoints do those). Any other exception saves nothing: it may come mid-step."""

    def __init__(self, dirpath: str, filename: str = "last") -> None:
        super().__init__(
            dirpath=dirpath,
            filename=filename,
            every_n_train_steps=0,
            every_n_epochs=0,
            save_on_exception=True,
            enable_version_counter=False,
        )

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            super().on_exception(trainer, pl_module, exception)

    @property
    def state_key(self) -> str:
        return self._generate_state_key(on="sigterm", filename=self.filename)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass
