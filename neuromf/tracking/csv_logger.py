"""The run's local metrics file (<run_dir>/metrics.csv): Lightning's CSVLogger, appending across resumes."""

from __future__ import annotations

import csv
import io
import os

from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from neuromf.io_atomic import write_text_atomic


def truncate_metrics(path: str, resume_step: int) -> int:
    """Drop the rows of metrics.csv logged at step >= `resume_step` (the steps a resumed run trains again), so
    the file keeps one row per step. Rewritten atomically; returns the number of rows dropped."""
    if not os.path.isfile(path):
        return 0
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        rows = list(reader)
    if not header or "step" not in header:
        return 0
    col = header.index("step")

    def keep(row: list[str]) -> bool:
        try:
            return int(float(row[col])) < resume_step
        except (IndexError, ValueError):
            return False  # a row cut short by a kill mid-write

    kept = [r for r in rows if keep(r)]
    if len(kept) == len(rows):
        return 0
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(kept)
    write_text_atomic(path, buf.getvalue(), newline="")
    return len(rows) - len(kept)


class _AppendingWriter(ExperimentWriter):
    """Lightning's writer deletes an existing metrics.csv; a resumed or requeued run keeps it and appends, after
    dropping the rows of the steps it trains again (`resume_step` on: the resumed checkpoint's global step)."""

    def __init__(self, log_dir: str, resume_step: int | None = None):
        self.resume_step = resume_step
        super().__init__(log_dir=log_dir)

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            if self.resume_step is not None:
                truncate_metrics(self.metrics_file_path, self.resume_step)
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                self.metrics_keys = next(csv.reader(f), [])

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        """A new metric column: rewrite the file under the wider header atomically (a kill keeps the old file)."""
        with open(self.metrics_file_path, newline="") as f:
            rows = list(csv.DictReader(f))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(self.metrics_file_path, buf.getvalue(), newline="")


class RunCSVLogger(CSVLogger):
    """CSVLogger writing <run_dir>/metrics.csv and hparams.yaml, appending when the run resumes.

    resume_step: the global step the run starts from (0 for a fresh start, the checkpoint's step on resume):
    rows from that step on are dropped; None keeps every row. Rows are flushed at every logged step, so a killed
    run loses none of the steps its checkpoint holds."""

    def __init__(self, run_dir: str, resume_step: int | None = None, flush_logs_every_n_steps: int = 1):
        super().__init__(save_dir=run_dir, name="", version="", flush_logs_every_n_steps=flush_logs_every_n_steps)
        self.resume_step = resume_step

    @property
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._experiment = _AppendingWriter(log_dir=self.log_dir, resume_step=self.resume_step)
        return self._experiment
