"""The run's local metrics file (<run_dir>/metrics.csv): Lightning's CSVLogger, appending across resumes."""

from __future__ import annotations

import csv

from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter


class _AppendingWriter(ExperimentWriter):
    """Lightning's writer deletes an existing metrics.csv; a resumed or requeued run keeps it and appends
    (readers keep the last row of a step that was logged twice)."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = next(csv.reader(f), [])


class RunCSVLogger(CSVLogger):
    """CSVLogger writing <run_dir>/metrics.csv and hparams.yaml, appending when the run resumes."""

    def __init__(self, run_dir: str):
        super().__init__(save_dir=run_dir, name="", version="")

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
