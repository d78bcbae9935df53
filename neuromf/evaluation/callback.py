"""EvaluationCallback: sample-quality metrics at several step counts, with real/noise reference levels.

At the end of each validation epoch (every ``every_n_epochs``; never during the sanity check) it draws
``num_samples`` fixed-seed noises (B, C, D, H, W), generates latents with
``pl_module.generate(noise, nfe, use_ema)`` for every ``nfe`` of ``nfe_list`` and logs, per step count N
(names and definitions in ``neuromf.evaluation.suite``):

* ``val/swd/nfeN``, ``val/swd_patch/nfeN`` — sliced Wasserstein on latents / 4^3 patches (every evaluation);
* ``val/{feat3d_fd,kid,precision,recall,density,coverage}/nfeN`` — deepbet 3D features of decoded volumes vs
  the decoded validation latents, and ``val/msssim/nfeN`` (mean pairwise MS-SSIM among the samples:
  diversity; 1 = all identical) — every ``feat3d_every_n_epochs``;
* ``val/fid_{axial,coronal,sagittal,mean}/nfeN`` — 2.5D FID (needs ``fid_weights``), every ``fid_every_n_epochs``;
* ``val/eval_time_s`` — wall time of the evaluation.

The metrics of the first NFE of ``nfe_list`` are also logged under the older names ``val/swd``,
``val/swd_patch``, ``val/feat3d_fd`` and ``val/fid_*`` (early stopping, reports and dashboards use them).
The family of ``objective_key`` is computed at every evaluation whatever its interval.

Reference levels (``reference_levels``): the same metrics for ``num_samples`` training latents (a seeded random
subset; real vs real: the floor), for one of them repeated with small noise (a collapsed sampler) and for
``num_samples`` Gaussian noise latents decoded the same way (the ceiling), all against the validation latents;
logged once per fit as ``ref/<metric>/real``, ``ref/<metric>/collapsed`` and ``ref/<metric>/noise`` and written
into ``summary.json`` (``reference``). They are cached with the real features (StatsCache, one file per data
set and metric settings), so they are computed once per data set.

The best value of every metric (lowest; highest for precision/recall/density/coverage; none for msssim)
is kept in the callback state (saved in checkpoints) and, with the history, in ``<output_dir>/summary.json``
(default ``<trainer.default_root_dir>/eval/summary.json``), rewritten atomically after every evaluation and
at the end of fit (global rank 0 only).
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
from neuromf.evaluation.frechet import FeatureStats
from neuromf.evaluation.ranking import collapsed_set
from neuromf.evaluation.registry import DEFAULT_OBJECTIVE, LEGACY_ALIASES, interval_keys, metric_direction
from neuromf.evaluation.suite import FEAT3D_METRICS, MetricSuite, RealReference
from neuromf.io_atomic import write_json_atomic
from neuromf.run_dir import RunDir

__all__ = ["EvaluationCallback"]

log = logging.getLogger(__name__)

_NOISE_SALT = 0x0F0E  # reference noise latents: another stream than the evaluation noise
_KNN_SALT = 0x6B4E4E  # the k-NN reference subset: another draw than the real-floor subset


class EvaluationCallback(pl.Callback):
    """Periodic sample-quality evaluation (plain-typed arguments for Hydra ``instantiate``).

    Args:
        every_n_epochs: evaluate (SWD) every n validation epochs (epoch % n == 0).
        num_samples: generated samples per evaluation and per NFE (also the size of the reference sets).
        nfe_list: step counts of the sampler; each gets its own ``/nfeN`` metrics.
        use_ema: passed to ``pl_module.generate`` (None = the module's default).
        swd_projections, swd_p: SWD projections and order.
        seed: seed of the evaluation noise and of the SWD projections (fixed across epochs).
        batch_size: generation / decoding batch size.
        fid_every_n_epochs, fid_weights, fid_planes, fid_central_fraction, fid_normalization,
        fid_slice_size: 2.5D FID settings; FID runs only when ``fid_weights`` is given.
        feat3d_every_n_epochs, feat3d_enabled, feat3d_input_size: deepbet feature metrics (and MS-SSIM) settings.
        knn_k: k of precision/recall/density/coverage.
        knn_num_real: size of the k-NN metrics' reference set, a seeded subset of the training latents disjoint
            from the real-floor set (4 validation volumes saturate them); None or no training latents: the
            validation set.
        bootstrap_resamples: resamples of the generated samples for each feature metric's interval, logged as
            ``val/<metric>/nfeN_se``, ``_ci_lo``, ``_ci_hi`` (0: none).
        msssim_enabled, msssim_kernel, msssim_max_samples: pairwise MS-SSIM diversity settings.
        reference_levels: compute (once per data set, cached) and log the real / noise reference levels.
        objective_key, objective_mode: the key summarised as ``objective`` in summary.json (min / max).
        num_real: use at most this many validation latents as the reference (None = all).
        cache_dir: real-statistics cache directory (None = ~/.cache/neuromf/eval_stats).
        dataset_key: extra identifier of the data set in the cache key.
        output_dir: where summary.json goes (None = <trainer.default_root_dir>/eval).
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        num_samples: int = 16,
        nfe_list: Sequence[int] = (1, 2, 10),
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
        knn_k: int = 3,
        knn_num_real: int | None = 64,
        bootstrap_resamples: int = 200,
        msssim_enabled: bool = True,
        msssim_kernel: int = 5,
        msssim_max_samples: int = 8,
        reference_levels: bool = True,
        objective_key: str = DEFAULT_OBJECTIVE,
        objective_mode: str = "min",
        num_real: int | None = None,
        cache_dir: str | None = None,
        dataset_key: str | None = None,
        output_dir: str | None = None,
    ) -> None:
        super().__init__()
        nfe_list = [int(n) for n in (nfe_list if isinstance(nfe_list, Sequence) else [nfe_list])]
        for name, v in (
            ("every_n_epochs", every_n_epochs),
            ("fid_every_n_epochs", fid_every_n_epochs),
            ("feat3d_every_n_epochs", feat3d_every_n_epochs),
            ("num_samples", num_samples),
            ("batch_size", batch_size),
            ("swd_projections", swd_projections),
            ("knn_k", knn_k),
            *(("nfe_list", n) for n in nfe_list),
        ):
            if int(v) < 1:
                raise ValueError(f"EvaluationCallback: {name} must be >= 1, got {v}")
        if not nfe_list or len(set(nfe_list)) != len(nfe_list):
            raise ValueError(f"EvaluationCallback: nfe_list must be non-empty without repeats, got {nfe_list}")
        if num_samples < 2 and (fid_weights or feat3d_enabled):
            raise ValueError("EvaluationCallback: FID / 3D distance need num_samples >= 2")
        if objective_mode not in ("min", "max"):
            raise ValueError(f"EvaluationCallback: objective_mode must be min or max, got {objective_mode!r}")
        self.every_n_epochs = int(every_n_epochs)
        self.num_samples = int(num_samples)
        self.nfe_list = nfe_list
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
        self.knn_k = int(knn_k)
        self.knn_num_real = int(knn_num_real) if knn_num_real else None
        self.bootstrap_resamples = int(bootstrap_resamples)
        self.knn_reference: dict[str, Any] = {}
        self.msssim_enabled = bool(msssim_enabled)
        self.msssim_kernel = int(msssim_kernel)
        self.msssim_max_samples = int(msssim_max_samples)
        self.reference_levels = bool(reference_levels)
        self.objective_key = str(objective_key)
        self.objective_mode = objective_mode
        self.num_real = num_real
        self.cache = StatsCache(cache_dir)
        self.dataset_key = dataset_key
        self.output_dir = output_dir
        self.best: dict[str, dict[str, float | int]] = {}
        self.history: list[dict[str, float | int]] = []
        self.reference: dict[str, float] = {}
        self._fid = None
        self._feat3d = None
        self._suite: MetricSuite | None = None
        self._real: torch.Tensor | None = None
        self._ref: RealReference | None = None
        self._dkey: dict[str, Any] | None = None
        self._ref_logged = False

    # ------------------------------------------------------------------ configuration / state
    def config(self) -> dict[str, Any]:
        keys = (
            "every_n_epochs",
            "num_samples",
            "nfe_list",
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
            "knn_k",
            "knn_num_real",
            "bootstrap_resamples",
            "msssim_enabled",
            "msssim_kernel",
            "msssim_max_samples",
            "reference_levels",
            "objective_key",
            "objective_mode",
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
        """Best value seen for ``metric`` (lowest; highest for precision/recall/density/coverage), or None."""
        return self.best.get(metric, {}).get("value")

    def _due(self, metric: str, every: int, epoch: int) -> bool:
        """First evaluation, or at least ``every`` epochs since ``metric`` was last computed."""
        last = [h["epoch"] for h in self.history if metric in h and h["epoch"] < epoch]
        return not last or epoch - max(last) >= every

    def _objective_base(self) -> str:
        parts = self.objective_key.split("/")
        return parts[1] if len(parts) > 1 else parts[0]

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
        elif not self.fid_weights:
            log.info("evaluation: 2.5D FID skipped (no eval.fid_weights)")
        if self.feat3d_enabled and self._feat3d is None:
            from neuromf.evaluation.feat3d import DeepBetFeatures

            self._feat3d = DeepBetFeatures(input_size=self.feat3d_input_size, device=device)
        base = self._objective_base()
        if base in (*FEAT3D_METRICS, "msssim") and not self.feat3d_enabled:
            log.warning("evaluation: objective %s needs feat3d_enabled=true; it will not be logged", self.objective_key)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        epoch = trainer.current_epoch
        if not self._due("val/swd", self.every_n_epochs, epoch):
            return
        t0 = time.perf_counter()
        metrics = self.evaluate(trainer, pl_module, epoch)
        seconds = time.perf_counter() - t0
        metrics["val/eval_time_s"] = seconds
        log.info(
            "evaluation at epoch %d took %.1f s (NFE %s, %d samples)", epoch, seconds, self.nfe_list, self.num_samples
        )
        logged = dict(metrics)
        if not self._ref_logged and self.reference:
            logged |= self.reference  # once per fit
            self._ref_logged = True
        for name, value in logged.items():
            # identical on every rank (same seeds and weights); sync_dist keeps the logged value consistent
            prog = name in ("val/swd", self.objective_key)
            pl_module.log(name, value, on_step=False, on_epoch=True, prog_bar=prog, sync_dist=True)
        self._update(metrics, epoch, trainer.global_step, seconds)
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
    def generate(self, pl_module: pl.LightningModule, shape: Sequence[int], nfe: int) -> torch.Tensor:
        """Fixed-seed noise (num_samples, *shape) -> generated latents with ``nfe`` steps, on pl_module.device."""
        gen = torch.Generator().manual_seed(self.seed)
        noise = torch.randn(self.num_samples, *shape, generator=gen)
        out = [
            pl_module.generate(noise[i : i + self.batch_size].to(pl_module.device), nfe=nfe, use_ema=self.use_ema)
            for i in range(0, self.num_samples, self.batch_size)
        ]
        return torch.cat(out).float()

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

    def _make_suite(self, dm, device) -> MetricSuite:
        if self._suite is None:
            self._suite = MetricSuite(
                getattr(dm, "decode", None),
                feat3d=self._feat3d,
                fid=self._fid,
                swd_projections=self.swd_projections,
                swd_p=self.swd_p,
                seed=self.seed,
                knn_k=self.knn_k,
                msssim=self.msssim_enabled and (self._feat3d is not None or self._fid is not None),
                msssim_kernel=self.msssim_kernel,
                msssim_max_samples=self.msssim_max_samples,
                batch_size=self.batch_size,
                device=device,
                bootstrap_resamples=self.bootstrap_resamples,
                bootstrap_seed=self.seed,
            )
        self._suite.device = torch.device(device)
        return self._suite

    def _reference_noise(self, shape: Sequence[int]) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed ^ _NOISE_SALT)
        return torch.randn(self.num_samples, *shape, generator=gen)

    def _train_latents(self, dm) -> torch.Tensor | None:
        if not hasattr(dm, "train_latents"):
            log.info("evaluation: ref/*/real skipped (the datamodule has no train_latents())")
            return None
        # a seeded random subset: the reference must span the training distribution as samples should
        z = dm.train_latents(self.num_samples, seed=self.seed).detach().float().cpu()
        if z.shape[0] < 2:
            log.info("evaluation: ref/*/real skipped (%d training latents, need >= 2)", z.shape[0])
            return None
        return z

    def _knn_latents(self, dm, floor: torch.Tensor | None) -> torch.Tensor | None:
        """The k-NN reference set: up to ``knn_num_real`` seeded training latents (N', C, D, H, W) that are not in
        the real-floor set; None (the validation set is used) without training latents or when off."""
        if not self.knn_num_real or not hasattr(dm, "train_latents"):
            return None
        extra = 0 if floor is None else floor.shape[0]
        z = dm.train_latents(self.knn_num_real + extra, seed=self.seed ^ _KNN_SALT).detach().float().cpu()
        if floor is not None and z.shape[0]:
            same = (z.flatten(1)[:, None, :] == floor.flatten(1)[None, :, :]).all(-1).any(1)
            z = z[~same]
        z = z[: self.knn_num_real]
        return z if z.shape[0] > self.knn_k else None

    @staticmethod
    def _template(dm, real: torch.Tensor, limit: int = 512) -> torch.Tensor:
        """Mean of (up to `limit`) training latents, (C, D, H, W); the validation latents' mean without them.
        (The mean of only eval.num_samples training latents is too noisy: 0.94 correlation with the full mean.)"""
        z = dm.train_latents(limit) if hasattr(dm, "train_latents") else None
        z = z if z is not None and z.shape[0] > 0 else real
        return z.detach().float().cpu().mean(0)

    def _reference(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> RealReference:
        """Real features (and the reference levels) for the validation set: cached per data set + settings."""
        if self._ref is not None:
            return self._ref
        dm = trainer.datamodule
        real = self._real_latents(trainer)
        suite = self._make_suite(dm, pl_module.device)
        if self._dkey is None:  # hashing the reference set once per fit is enough
            self._dkey = self._dataset_key(dm, real)
        train = self._train_latents(dm) if self.reference_levels else None
        knn = self._knn_latents(dm, train) if self._feat3d is not None else None
        # the mean training volume (or of the validation set): template_corr checks samples have brain structure
        template = self._template(dm, real)
        key = {
            "dataset": self._dkey,
            "backbone": {"backbone": "eval-reference"},
            "suite": suite.config(),
            "levels": self.reference_levels,
            "num_samples": self.num_samples,
            "train": tensor_fingerprint(train) if train is not None else None,
            "knn": tensor_fingerprint(knn) if knn is not None else None,
            "template": tensor_fingerprint(template),  # template_corr levels are part of the cache
        }

        def compute() -> dict[str, torch.Tensor]:
            for ext in (self._feat3d, self._fid):
                if ext is not None:
                    ext.to(pl_module.device)
            ref = suite.reference(real)
            ref.extra["template"] = template
            t: dict[str, torch.Tensor] = {}
            if ref.feat3d is not None:
                t["real/feat3d"] = ref.feat3d
                if knn is not None:  # features computed once, cached with the real ones
                    ref.knn_feat3d = t["real/knn_feat3d"] = suite.features(knn, fid=False, msssim=False)["feat3d"]
                    ref.knn_set = "train"
            if ref.msssim is not None:
                t["real/msssim"] = torch.tensor([ref.msssim], dtype=torch.float64)
            for plane, st in (ref.fid or {}).items():
                t |= {f"real/fid/{plane}/{p}": v for p, v in st.to_tensors().items()}
            if self.reference_levels:
                sets = {"noise": self._reference_noise(real.shape[1:])}
                if train is not None:  # a collapse onto one training volume sits between the floor and noise
                    gen = torch.Generator().manual_seed(self.seed ^ _NOISE_SALT ^ 1)
                    sets = {"real": train, "collapsed": collapsed_set(train, gen)} | sets
                for name, z in sets.items():
                    for m, v in suite(z.to(pl_module.device), ref).items():
                        t[f"ref/{m}/{name}"] = torch.tensor([v], dtype=torch.float64)
            return t

        t = self.cache.get_or_compute_tensors(key, compute)
        fid = None
        planes = sorted({k.split("/")[2] for k in t if k.startswith("real/fid/")})
        if planes:
            fid = {
                p: FeatureStats.from_tensors({q: t[f"real/fid/{p}/{q}"] for q in ("mu", "sigma", "n")}) for p in planes
            }
        msssim = float(t["real/msssim"]) if "real/msssim" in t else None
        knn_feat = t.get("real/knn_feat3d")
        self._ref = RealReference(
            latents=real,
            feat3d=t.get("real/feat3d"),
            knn_feat3d=knn_feat,
            knn_set="train" if knn_feat is not None else "validation",
            fid=fid,
            msssim=msssim,
            extra={"template": template},
        )
        if self._ref.feat3d is not None:
            knn_n = int((knn_feat if knn_feat is not None else self._ref.feat3d).shape[0])
            what = (
                "training latents (seeded subset, disjoint from the real-floor set)"
                if knn_feat is not None
                else ("validation latents")
            )
            self.knn_reference = {"set": self._ref.knn_set, "size": knn_n, "description": what, "k": self.knn_k}
        self.reference = {k: float(v) for k, v in t.items() if k.startswith("ref/")}
        return self._ref

    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> dict[str, float]:
        """Compute the metrics due at ``epoch`` for every NFE -> {"val/swd/nfe1": ..., "val/swd": ..., ...}."""
        ref = self._reference(trainer, pl_module)
        suite = self._make_suite(trainer.datamodule, pl_module.device)
        base = self._objective_base()
        feat3d = self._feat3d is not None and (
            self._due("val/feat3d_fd", self.feat3d_every_n_epochs, epoch) or base in (*FEAT3D_METRICS, "msssim")
        )
        fid = self._fid is not None and (
            self._due("val/fid_mean", self.fid_every_n_epochs, epoch) or base.startswith("fid_")
        )
        for ext in (self._feat3d, self._fid):  # setup() ran before the strategy moved the module to its device
            if ext is not None:
                ext.to(pl_module.device)
        metrics: dict[str, float] = {}
        for i, nfe in enumerate(self.nfe_list):
            fake = self.generate(pl_module, ref.latents.shape[1:], nfe)
            values, spread = suite.measure(fake, ref, feat3d=feat3d, fid=fid, msssim=feat3d or fid)
            metrics |= {f"val/{m}/nfe{nfe}": v for m, v in values.items()}
            metrics |= {f"val/{m}/nfe{nfe}_{b}": v for m, bounds in spread.items() for b, v in bounds.items()}
            if i == 0:
                metrics |= {f"val/{m}": v for m, v in values.items() if m in LEGACY_ALIASES}
        return metrics

    def _update(self, metrics: dict[str, float], epoch: int, step: int, seconds: float) -> None:
        self.history.append({"epoch": epoch, "step": step, "seconds": round(seconds, 3)} | metrics)
        for name, value in metrics.items():
            mode = metric_direction(name)
            if mode is None or not math.isfinite(value):
                continue
            better = name not in self.best or (
                value < self.best[name]["value"] if mode == "min" else value > self.best[name]["value"]
            )
            if better:
                self.best[name] = {"value": value, "epoch": epoch, "step": step}
                # the evaluation's own bootstrap interval of that value (neuromf.evaluation.bootstrap)
                self.best[name] |= {b: metrics[k] for b, k in interval_keys(name).items() if k in metrics}

    def _write_summary(self, trainer: pl.Trainer, finished: bool) -> None:
        default = RunDir(trainer.default_root_dir).eval_summary  # <run>/eval/summary.json
        path = Path(self.output_dir) / default.name if self.output_dir else default
        reference: dict[str, dict[str, float]] = {}
        for k, v in self.reference.items():  # ref/<metric>/<real|collapsed|noise>
            _, metric, level = k.split("/")
            reference.setdefault(metric, {})[level] = v
        summary = {
            "finished": finished,
            "objective_key": self.objective_key,
            "objective_mode": self.objective_mode,
            "objective": self.best_value(self.objective_key),
            "objective_interval": {b: self.best.get(self.objective_key, {}).get(b) for b in ("se", "ci_lo", "ci_hi")},
            "knn_reference": self.knn_reference,
            "best": self.best,
            "last": self.history[-1] if self.history else None,
            "reference": reference,
            "history": self.history,
            "config": self.config(),
        }
        write_json_atomic(path, summary)
