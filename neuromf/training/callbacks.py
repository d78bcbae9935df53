"""Training callbacks: divergence monitor, diagnostics logger, sample collector, objective tracker."""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only

from neuromf.evaluation.registry import DEFAULT_OBJECTIVE
from neuromf.io_atomic import atomic_path
from neuromf.meanflow import noise_like
from neuromf.meanflow.jvp import rms_norm, time_derivative_parts
from neuromf.run_dir import RunDir


class DivergenceMonitor(pl.Callback):
    """Stops training when the raw loss is NaN/Inf (at once), or, after `grace_steps`, when its running median
    over the last `window` steps exceeds `threshold` x the lowest running median so far.

    MeanFlow's raw loss is heavy tailed (the h du/dt term): healthy runs have single batches at 100x the lowest
    one, so single values are not compared; a sustained rise moves the median within window/2 + 1 steps.
    `window=1` compares raw values. The window, the minimum and the reason (`self.reason`, for the run's status)
    are checkpointed.
    """

    def __init__(self, threshold: float = 100.0, grace_steps: int = 100, window: int = 25):
        if window < 1:
            raise ValueError(f"callbacks.divergence.window={window}: must be >= 1")
        self.threshold, self.grace_steps, self.window = threshold, grace_steps, window
        self.recent: deque[float] = deque(maxlen=window)
        self.running_min = math.inf
        self.reason: str | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        raw = pl_module.last_diagnostics.get("loss_raw")
        if raw is None:
            return
        value, step = float(raw), trainer.global_step
        if not math.isfinite(value):
            self._stop(trainer, f"raw loss is {value} at step {step}")
            return
        self.recent.append(value)
        if len(self.recent) < self.window:
            return
        smoothed = statistics.median(self.recent)
        if step > self.grace_steps and smoothed > self.threshold * self.running_min:
            self._stop(
                trainer,
                f"raw loss (median of the last {self.window} steps) {smoothed:.4g} > {self.threshold} x its "
                f"running minimum {self.running_min:.4g} at step {step}",
            )
        self.running_min = min(self.running_min, smoothed)

    def _stop(self, trainer, reason: str) -> None:
        self.reason = reason
        trainer.should_stop = True

    def state_dict(self) -> dict:
        return {"running_min": self.running_min, "reason": self.reason, "recent": list(self.recent)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.running_min, self.reason = state_dict["running_min"], state_dict["reason"]
        self.recent = deque(state_dict.get("recent", []), maxlen=self.window)


class DiagnosticsLogger(pl.Callback):
    """Every `every_n_steps`: the objective's diagnostics (from the step itself), the split of du/dt at that
    step's (z_t, r, t, v~) into `train/jvp_t_norm` (d_t u) and `train/jvp_z_norm` ((d_z u) v~) — two extra
    float32 JVPs, no graph — throughput in samples/s since the last log, and peak GPU memory (GiB)."""

    def __init__(self, every_n_steps: int = 10):
        self.every_n_steps = every_n_steps
        self._t0, self._samples = None, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._t0 is None:
            self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._samples += batch.shape[0] * trainer.world_size
        if trainer.global_step % self.every_n_steps:
            return
        metrics = {
            f"train/{k}": float(v)
            for k, v in pl_module.last_diagnostics.items()
            if k not in ("loss", "loss_raw") and math.isfinite(float(v))
        }
        metrics.update(self.jvp_parts(pl_module))
        elapsed = time.perf_counter() - self._t0
        metrics["train/samples_per_s"] = self._samples / max(elapsed, 1e-9)
        if torch.cuda.is_available() and pl_module.device.type == "cuda":
            metrics["train/peak_mem_gb"] = torch.cuda.max_memory_allocated(pl_module.device) / 2**30
        pl_module.log_dict(metrics, on_step=True, on_epoch=False, batch_size=batch.shape[0])
        self._t0, self._samples = time.perf_counter(), 0

    @staticmethod
    def jvp_parts(pl_module) -> dict[str, float]:
        """RMS norms (per sample, averaged) of the t- and z-parts of du/dt at the last training step's point."""
        point = getattr(getattr(pl_module, "objective", None), "last_point", None)
        if not point:
            return {}
        du_dt_t, du_dt_z = time_derivative_parts(pl_module.net, **point)
        return {"train/jvp_t_norm": float(rms_norm(du_dt_t)), "train/jvp_z_norm": float(rms_norm(du_dt_z))}


def _last_validation(trainer) -> bool:
    """The validation of the final weights: a step-limited run (a budget: max_steps, validations mid-epoch) at its
    last step, or an epoch-limited one in its last epoch."""
    max_steps, max_epochs = getattr(trainer, "max_steps", None), getattr(trainer, "max_epochs", None)
    if max_steps is not None and max_steps > 0:
        return trainer.global_step >= max_steps
    return max_epochs is not None and max_epochs > 0 and trainer.current_epoch + 1 >= max_epochs


class SampleCollector(pl.Callback):
    """Every `every_n_epochs` (at validation end), samples the same seeded noise at each NFE in `nfe_list`,
    with EMA weights when `use_ema`; saves latents (.pt), decoded NIfTI and tri-planar PNGs under
    <run_dir>/samples/epoch_XXXX/nfe_N/, logs the PNGs, and `val/nfe_consistency` = RMS distance between
    the 1-NFE samples and those of the largest NFE. Rank 0 only."""

    def __init__(
        self,
        run_dir: str,
        every_n_epochs: int = 1,
        num_samples: int = 2,
        nfe_list=(1, 2, 5),
        seed: int = 1234,
        use_ema: bool = True,
        save_nifti: bool = True,
        label: str = "",
    ):
        self.run_dir, self.every_n_epochs, self.num_samples = Path(run_dir), every_n_epochs, num_samples
        self.label = label  # the arm (overrides), in the logged images' captions
        self.nfe_list, self.seed, self.use_ema, self.save_nifti = sorted(nfe_list), seed, use_ema, save_nifti
        self.last: dict[int, torch.Tensor] = {}

    def should_run(self, trainer) -> bool:
        return (
            not trainer.sanity_checking
            and trainer.is_global_zero
            and ((trainer.current_epoch + 1) % self.every_n_epochs == 0 or _last_validation(trainer))
        )

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self.should_run(trainer):
            self.collect(trainer, pl_module)

    @rank_zero_only
    def collect(self, trainer, pl_module) -> dict[int, torch.Tensor]:
        dm = trainer.datamodule
        noise = noise_like((self.num_samples, *dm.latent_shape), self.seed)
        out_dir = RunDir(self.run_dir).samples / f"epoch_{trainer.current_epoch:04d}"
        self.last = {}
        images = {}
        for nfe in self.nfe_list:
            z = pl_module.generate(noise, nfe=nfe, use_ema=self.use_ema).float().cpu()
            self.last[nfe] = z
            nfe_dir = out_dir / f"nfe_{nfe}"
            with atomic_path(nfe_dir / "latents.pt") as tmp:  # creates nfe_dir
                torch.save(z, tmp)
            if self.save_nifti:
                paths = [dm.save_sample(z[i], nfe_dir / f"sample_{i:02d}") for i in range(len(z))]
                images[nfe] = [str(p[-1]) for p in paths]
        if len(self.nfe_list) > 1:
            a, b = self.last[self.nfe_list[0]], self.last[self.nfe_list[-1]]
            pl_module.log("val/nfe_consistency", (a - b).pow(2).mean().sqrt().item(), rank_zero_only=True)
        for logger in trainer.loggers:
            if hasattr(logger, "log_image") and images:
                for nfe, pngs in images.items():
                    captions = [
                        f"{self.label or 'run'} | {nfe} step{'s' * (nfe > 1)} | step {trainer.global_step} | sample {i}"
                        for i in range(len(pngs))
                    ]
                    logger.log_image(key=f"samples/nfe_{nfe}", images=pngs, step=trainer.global_step, caption=captions)
        return self.last


class ObjectiveTracker(pl.Callback):
    """Keeps the best value of the sweep objective (`key`, minimised or maximised) seen at validation ends."""

    def __init__(self, key: str = DEFAULT_OBJECTIVE, mode: str = "min"):
        if mode not in ("min", "max"):
            raise ValueError(f"objective_mode={mode!r}: expected min or max")
        self.key, self.mode = key, mode
        self.best: float | None = None
        self.best_step: int | None = None

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or self.key not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.key])
        better = self.best is None or (value < self.best if self.mode == "min" else value > self.best)
        if math.isfinite(value) and better:
            self.best, self.best_step = value, trainer.global_step

    def state_dict(self) -> dict:
        return {"best": self.best, "best_step": self.best_step}

    def load_state_dict(self, state_dict: dict) -> None:
        self.best, self.best_step = state_dict["best"], state_dict["best_step"]
