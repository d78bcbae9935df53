"""EvaluationCallback: SWD / 2.5D FID / 3D feature distance on generated samples during training.

At the end of each validation epoch (every ``every_n_epochs``; never during the sanity check) it draws
``num_samples`` fixed-seed noises (B, C, D, H, W), generates latents with
``pl_module.generate(noise, nfe, use_ema)`` and logs

* ``val/swd`` — sliced Wasserstein distance to ``trainer.datamodule.val_latents()`` (every evaluation), and
  ``val/swd_patch`` — the same on random 4^3 patches (local structure);
* ``val/fid_axial|coronal|sagittal``, ``val/fid_mean`` — 2.5D FID of decoded volumes (needs ``fid_weights``);
* ``val/feat3d_fd`` — deepbet 3D feature distance.

Each metric is computed at the first evaluation (the baseline) and then once at least its interval
(``every_n_epochs``, ``fid_every_n_epochs``, ``feat3d_every_n_epochs``) has passed since it was last
computed — so it also works with ``Trainer(check_val_every_n_epoch=k)``.

Real statistics come from the decoded validation latents and are cached on disk (StatsCache). The best
(lowest) value of every metric is kept in the callback state (saved in checkpoints) and, with the history,
in ``<output_dir>/summary.json`` (default ``<trainer.default_root_dir>/eval/summary.json``), rewritten
atomically after every evaluation and at the end of fit (global rank 0 only). Early stopping: add
``pytorch_lightning.callbacks.EarlyStopping(monitor="val/swd", mode="min", patience=...)`` (patience counts
validation epochs; keep ``every_n_epochs=1`` and thin validation with ``check_val_every_n_epoch`` instead).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping

from neuromf.evaluation.cache import StatsCache, tensor_fingerprint
from neuromf.evaluation.frechet import FeatureStats, feature_stats, frechet_distance
from neuromf.evaluation.swd import patch_sliced_wasserstein, sliced_wasserstein
from neuromf.tracking.run import write_json_atomic

__all__ = ["EvaluationCallback"]

log = logging.getLogger(__name__)


class EvaluationCallback(pl.Callback):
    """Periodic sample-quality evaluation (plain-typed arguments for Hydra ``instantiate``).

    Args:
        every_n_epochs: evaluate (SWD) every n validation epochs (epoch % n == 0).
        num_samples: generated samples per evaluation.
        nfe: number of function evaluations of the sampler.
        use_ema: passed to ``pl_module.generate`` (None = the module's default).
        swd_projections, swd_p: SWD projections and order.
        seed: seed of the evaluation noise and of the SWD projections (fixed across epochs).
        batch_size: generation / decoding batch size.
        fid_every_n_epochs, fid_weights, fid_planes, fid_central_fraction, fid_normalization,
        fid_slice_size: 2.5D FID settings; FID runs only when ``fid_weights`` is given.
        feat3d_every_n_epochs, feat3d_enabled, feat3d_input_size: deepbet 3D feature distance settings.
        num_real: use at most this many validation latents as the reference (None = all).
        cache_dir: real-statistics cache directory (None = ~/.cache/neuromf/eval_stats).
        dataset_key: extra identifier of the data set in the cache key.
        output_dir: where summary.json goes (None = <trainer.default_root_dir>/eval).
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        num_samples: int = 16,
        nfe: int = 1,
        use_ema: bool | None = True,
        swd_projections: int = 256,
        swd_p: float = 2.0,
        seed: int = 0,
        batch_size: int = 8,
        fid_every_n_epochs: int = 5,
        fid_weights: str | None = None,
        fid_planes: Sequence[str] = ("axial", "coronal", "sagittal"),
        fid_central_fraction: float = 0.5,
        fid_normalization: str = "imagenet",
        fid_slice_size: int | None = None,
        feat3d_every_n_epochs: int = 5,
        feat3d_enabled: bool = True,
        feat3d_input_size: int = 96,
        num_real: int | None = None,
        cache_dir: str | None = None,
        dataset_key: str | None = None,
        output_dir: str | None = None,
    ) -> None:
        super().__init__()
        for name, v in (
            ("every_n_epochs", every_n_epochs),
            ("fid_every_n_epochs", fid_every_n_epochs),
            ("feat3d_every_n_epochs", feat3d_every_n_epochs),
            ("num_samples", num_samples),
            ("nfe", nfe),
            ("batch_size", batch_size),
            ("swd_projections", swd_projections),
        ):
            if int(v) < 1:
                raise ValueError(f"EvaluationCallback: {name} must be >= 1, got {v}")
        if num_samples < 2 and (fid_weights or feat3d_enabled):
            raise ValueError("EvaluationCallback: FID / 3D distance need num_samples >= 2")
        self.every_n_epochs = int(every_n_epochs)
        self.num_samples = int(num_samples)
        self.nfe = int(nfe)
        self.use_ema = use_ema
        self.swd_projections = int(swd_projections)
        self.swd_p = float(swd_p)
        self.seed = int(seed)
        self.batch_size = int(batch_size)
        self.fid_every_n_epochs = int(fid_every_n_epochs)
        self.fid_weights = str(fid_weights) if fid_weights else None
        self.fid_planes = tuple(fid_planes)
        self.fid_central_fraction = float(fid_central_fraction)
        self.fid_normalization = fid_normalization
        self.fid_slice_size = fid_slice_size
        self.feat3d_every_n_epochs = int(feat3d_every_n_epochs)
        self.feat3d_enabled = bool(feat3d_enabled)
        self.feat3d_input_size = int(feat3d_input_size)
        self.num_real = num_real
        self.cache = StatsCache(cache_dir)
        self.dataset_key = dataset_key
        self.output_dir = output_dir
        self.best: dict[str, dict[str, float | int]] = {}
        self.history: list[dict[str, float | int]] = []
        self._fid = None
        self._feat3d = None
        self._real: torch.Tensor | None = None
        self._dkey: dict[str, Any] | None = None

    # ------------------------------------------------------------------ configuration / state
    def config(self) -> dict[str, Any]:
        keys = (
            "every_n_epochs",
            "num_samples",
            "nfe",
            "use_ema",
            "swd_projections",
            "swd_p",
            "seed",
            "batch_size",
            "fid_every_n_epochs",
            "fid_weights",
            "fid_planes",
            "fid_central_fraction",
            "fid_normalization",
            "fid_slice_size",
            "feat3d_every_n_epochs",
            "feat3d_enabled",
            "feat3d_input_size",
            "num_real",
            "dataset_key",
        )
        return {k: getattr(self, k) for k in keys} | {"cache_dir": str(self.cache.cache_dir)}

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = dict(state_dict.get("best", {}))
        self.history = list(state_dict.get("history", []))

    def best_value(self, metric: str = "val/swd") -> float | None:
        """Best (lowest) value seen for ``metric``, or None."""
        return self.best.get(metric, {}).get("value")

    def _due(self, metric: str, every: int, epoch: int) -> bool:
        """First evaluation, or at least ``every`` epochs since ``metric`` was last computed."""
        last = [h["epoch"] for h in self.history if metric in h and h["epoch"] < epoch]
        return not last or epoch - max(last) >= every

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Build the feature extractors early so that a bad weights file fails before training."""
        if stage != "fit":
            return
        for cb in trainer.callbacks:
            if isinstance(cb, EarlyStopping) and cb.monitor.startswith("val/") and self.every_n_epochs > 1:
                log.warning(
                    "EvaluationCallback(every_n_epochs=%d) with EarlyStopping(monitor=%s): on skipped epochs "
                    "the previous value is seen again and counts against patience; prefer every_n_epochs=1, "
                    "Trainer(check_val_every_n_epoch=%d)",
                    self.every_n_epochs,
                    cb.monitor,
                    self.every_n_epochs,
                )
        device = pl_module.device
        if self.fid_weights and self._fid is None:
            from neuromf.evaluation.fid25d import FID25D

            self._fid = FID25D(
                self.fid_weights,
                planes=self.fid_planes,
                central_fraction=self.fid_central_fraction,
                normalization=self.fid_normalization,
                slice_size=self.fid_slice_size,
                device=device,
            )
        if self.feat3d_enabled and self._feat3d is None:
            from neuromf.evaluation.feat3d import DeepBetFeatures

            self._feat3d = DeepBetFeatures(input_size=self.feat3d_input_size, device=device)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch
        if not self._due("val/swd", self.every_n_epochs, epoch):
            return
        t0 = time.perf_counter()
        metrics = self.evaluate(trainer, pl_module, epoch)
        for name, value in metrics.items():
            # identical on every rank (same seeds and weights); sync_dist keeps the logged value consistent
            pl_module.log(name, value, on_step=False, on_epoch=True, prog_bar=name == "val/swd", sync_dist=True)
        self._update(metrics, epoch, trainer.global_step, time.perf_counter() - t0)
        if trainer.is_global_zero:
            self._write_summary(trainer, finished=False)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self._write_summary(trainer, finished=True)

    # ------------------------------------------------------------------ work
    def _real_latents(self, trainer: pl.Trainer) -> torch.Tensor:
        if self._real is None:
            dm = trainer.datamodule
            if dm is None or not hasattr(dm, "val_latents"):
                raise RuntimeError("EvaluationCallback needs trainer.datamodule with val_latents()")
            real = dm.val_latents().detach().float().cpu()
            if self.num_real is not None:
                real = real[: int(self.num_real)]
            if real.shape[0] < 2:
                raise ValueError(f"EvaluationCallback: need >= 2 validation latents, got {real.shape[0]}")
            self._real = real
        return self._real

    @torch.no_grad()
    def generate(self, pl_module: pl.LightningModule, shape: Sequence[int]) -> torch.Tensor:
        """Fixed-seed noise (num_samples, *shape) -> generated latents on pl_module.device."""
        gen = torch.Generator().manual_seed(self.seed)
        noise = torch.randn(self.num_samples, *shape, generator=gen)
        out = [
            pl_module.generate(noise[i : i + self.batch_size].to(pl_module.device), nfe=self.nfe, use_ema=self.use_ema)
            for i in range(0, self.num_samples, self.batch_size)
        ]
        return torch.cat(out).float()

    def _decoded_batches(self, dm, z: torch.Tensor, device):
        for i in range(0, z.shape[0], self.batch_size):
            yield dm.decode(z[i : i + self.batch_size].to(device)).float()

    def _dataset_key(self, dm, real: torch.Tensor) -> dict[str, Any]:
        key: dict[str, Any] = {"user": self.dataset_key, "val_latents": tensor_fingerprint(real)}
        latent_dir = getattr(dm, "latent_dir", None)
        stats_file = Path(latent_dir) / "stats.json" if latent_dir else None
        if stats_file is not None and stats_file.is_file():
            try:
                s = json.loads(stats_file.read_text())
                key["preprocessing"] = {"encoder": s.get("encoder"), "preprocess": s.get("preprocess")}
            except (OSError, json.JSONDecodeError) as e:
                log.warning("could not read %s for the statistics cache key (%s)", stats_file, e)
        return key

    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> dict[str, float]:
        """Compute the metrics due at ``epoch`` -> {"val/swd": ..., ...}."""
        real = self._real_latents(trainer)
        fake = self.generate(pl_module, real.shape[1:])
        metrics = {
            "val/swd": float(
                sliced_wasserstein(
                    fake,
                    real.to(fake.device),
                    num_projections=self.swd_projections,
                    p=self.swd_p,
                    seed=self.seed,
                )
            ),
            "val/swd_patch": float(
                patch_sliced_wasserstein(
                    fake, real.to(fake.device), num_projections=self.swd_projections, p=self.swd_p, seed=self.seed
                )
            ),
        }
        extractors = []
        if self._fid is not None and self._due("val/fid_mean", self.fid_every_n_epochs, epoch):
            extractors.append(("fid", self._fid))
        if self._feat3d is not None and self._due("val/feat3d_fd", self.feat3d_every_n_epochs, epoch):
            extractors.append(("feat3d", self._feat3d))
        if not extractors:
            return metrics
        if not torch.isfinite(fake).all():
            for kind, _ in extractors:
                names = [f"fid_{p}" for p in self.fid_planes] + ["fid_mean"] if kind == "fid" else ["feat3d_fd"]
                metrics |= {f"val/{n}": math.inf for n in names}
            return metrics
        dm = trainer.datamodule
        if self._dkey is None:  # hashing the reference set once per fit is enough
            self._dkey = self._dataset_key(dm, real)
        dkey = self._dkey
        for _, ext in extractors:  # setup() ran before the strategy moved the module to its device
            ext.to(pl_module.device)
        fake_feats: dict[str, list] = {kind: [] for kind, _ in extractors}
        for vol in self._decoded_batches(dm, fake, pl_module.device):
            for kind, ext in extractors:
                fake_feats[kind].append(self._features(kind, ext, vol))
        for kind, ext in extractors:
            key = {"dataset": dkey, "backbone": ext.cache_key(), "kind": kind}

            def compute(kind=kind, ext=ext):
                feats = [self._features(kind, ext, v) for v in self._decoded_batches(dm, real, pl_module.device)]
                return self._stats(feats)

            real_stats = self.cache.get_or_compute(key, compute)
            fake_stats = self._stats(fake_feats[kind])
            if kind == "fid":
                metrics |= {f"val/{k}": v for k, v in self._fid.distance(fake_stats, real_stats).items()}
            else:
                metrics["val/feat3d_fd"] = frechet_distance(fake_stats["feat3d"], real_stats["feat3d"])
        return metrics

    @staticmethod
    def _features(kind: str, ext, vol: torch.Tensor) -> dict[str, torch.Tensor]:
        return ext.features(vol) if kind == "fid" else {"feat3d": ext(vol)}

    @staticmethod
    def _stats(batches: list[dict[str, torch.Tensor]]) -> dict[str, FeatureStats]:
        return {n: feature_stats(torch.cat([b[n] for b in batches])) for n in batches[0]}

    def _update(self, metrics: dict[str, float], epoch: int, step: int, seconds: float) -> None:
        self.history.append({"epoch": epoch, "step": step, "seconds": round(seconds, 3)} | metrics)
        for name, value in metrics.items():
            if math.isfinite(value) and (name not in self.best or value < self.best[name]["value"]):
                self.best[name] = {"value": value, "epoch": epoch, "step": step}

    def _write_summary(self, trainer: pl.Trainer, finished: bool) -> None:
        out = Path(self.output_dir) if self.output_dir else Path(trainer.default_root_dir) / "eval"
        summary = {
            "finished": finished,
            "objective_key": "val/swd",
            "objective": self.best_value("val/swd"),
            "best": self.best,
            "last": self.history[-1] if self.history else None,
            "history": self.history,
            "config": self.config(),
        }
        write_json_atomic(out / "summary.json", summary)
