"""ProgressFile: <run_dir>/progress.json (step, total, loss, elapsed, time left), rewritten every few seconds.

What a sweep's launcher reads to print per-arm progress (neuromf/sweep/progress.py): submitit keeps each arm's
own output in its log file, so without this a multirun shows nothing for minutes.
"""

from __future__ import annotations

import math
import time

import pytorch_lightning as pl

from neuromf.run_dir import RunDir
from neuromf.tracking.run import write_redacted_json


class ProgressFile(pl.Callback):
    """Rank 0 writes {step, total_steps, epoch, loss_term, <loss_term>, elapsed_s, eta_s, state} at most every
    `every_s` seconds; loss_term is the objective's headline term (its first declared one, e.g. loss_u).

    The time left extrapolates the steps this process ran (a resumed run does not count the restored ones).
    """

    def __init__(self, run_dir: str, every_s: float = 5.0):
        self.path, self.every_s = RunDir(run_dir).progress, every_s
        self._t0 = self._last = None
        self._step0 = 0

    def _total(self, trainer) -> int | None:
        total = trainer.estimated_stepping_batches
        return int(total) if total is not None and math.isfinite(total) else None

    def _write(self, trainer, pl_module, state: str) -> None:
        step, total = trainer.global_step, self._total(trainer)
        elapsed = time.perf_counter() - self._t0
        done = step - self._step0
        eta = elapsed / done * (total - step) if total and done > 0 else None
        terms = getattr(pl_module, "loss_terms", None) or ("loss_u",)
        term = terms[0]
        raw = pl_module.last_diagnostics.get(term, pl_module.last_diagnostics.get("loss_raw"))
        write_redacted_json(
            self.path,
            {
                "state": state,
                "step": step,
                "total_steps": total,
                "epoch": trainer.current_epoch,
                "loss_term": term,
                term: None if raw is None else float(raw),
                "elapsed_s": round(elapsed, 1),
                "eta_s": None if eta is None else round(max(eta, 0.0), 1),
                "updated": time.time(),
            },
        )
        self._last = time.perf_counter()

    def on_train_start(self, trainer, pl_module) -> None:
        self._t0, self._step0 = time.perf_counter(), trainer.global_step
        if trainer.is_global_zero:
            self._write(trainer, pl_module, "training")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.is_global_zero and time.perf_counter() - self._last >= self.every_s:
            self._write(trainer, pl_module, "training")

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero and not trainer.sanity_checking and self._t0 is not None:
            self._write(trainer, pl_module, "evaluating")

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self._write(trainer, pl_module, "finished")
