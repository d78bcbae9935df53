"""MetricSuite: every sample-quality metric of one set of latents against a real reference set.

Used by the EvaluationCallback (per NFE, and for the reference levels) and by ``neuromf.evaluation.ranking``.
Metric names (the callback logs them as ``val/<name>/nfe<N>``):

* latent space: ``swd``, ``swd_patch`` (sliced Wasserstein on whole latents / random 4^3 patches);
* deepbet 3D features of decoded volumes: ``feat3d_fd`` (Frechet), ``kid`` (unbiased polynomial MMD^2),
  ``precision``, ``recall``, ``density``, ``coverage`` (k-NN, Naeem et al. 2020);
* diversity of decoded volumes: ``msssim`` (mean pairwise MS-SSIM within the set; compare with the real set's);
* 2.5D FID (with weights): ``fid_<plane>``, ``fid_mean``.

A metric that cannot be computed (too few samples for k-NN, ...) is left out with one logged line naming why.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from neuromf.evaluation.bootstrap import feature_intervals
from neuromf.evaluation.frechet import FeatureStats, feature_stats, frechet_distance
from neuromf.evaluation.registry import METRICS, metrics_needing
from neuromf.evaluation.sample_metrics import kid, pairwise_msssim, prdc
from neuromf.evaluation.swd import patch_sliced_wasserstein, sliced_wasserstein

__all__ = ["FEAT3D_METRICS", "HIGHER_IS_BETTER", "MetricSuite", "RealReference", "UNRANKED"]

log = logging.getLogger(__name__)

# views of the metric registry (neuromf.evaluation.registry)
FEAT3D_METRICS = metrics_needing("feat3d")
HIGHER_IS_BETTER = frozenset(m.name for m in METRICS if m.direction == "max")
UNRANKED = frozenset(m.name for m in METRICS if m.direction is None)  # diversity: compare with the real one


@dataclass
class RealReference:
    """The real set: latents (N, C, D, H, W), deepbet features (N, 256), FID stats per plane, its own MS-SSIM;
    knn_feat3d (N', 256): the k-NN metrics' reference features (None: feat3d), knn_set: what that set is."""

    latents: torch.Tensor
    feat3d: torch.Tensor | None = None
    knn_feat3d: torch.Tensor | None = None
    knn_set: str = "validation"
    fid: dict[str, FeatureStats] | None = None
    msssim: float | None = None
    extra: dict = field(default_factory=dict)


def template_correlation(latents: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each latent (M, C, D, H, W) with a template (C, D, H, W), e.g. the mean training
    volume: (M,). Brains all resemble the mean brain (real demo volumes: 0.76-0.88), noise does not (~0)."""
    x = latents.flatten(1).double()
    t = template.flatten().double().to(x.device)
    x, t = x - x.mean(1, keepdim=True), t - t.mean()
    return (x @ t) / (x.norm(dim=1) * t.norm()).clamp_min(1e-12)


def _skip(name: str, reason: str) -> None:
    log.info("evaluation: %s skipped (%s)", name, reason)


class MetricSuite:
    """Metrics of latent sets against a RealReference (plain Python, no Lightning).

    Args:
        decode: latents (B, C, D, H, W) -> volumes (B, 1, X, Y, Z) (needed for feat3d / fid / msssim).
        feat3d: a DeepBetFeatures extractor or None.
        fid: an FID25D or None.
        swd_projections, swd_p, seed: sliced Wasserstein settings.
        knn_k: k of the k-NN metrics.
        msssim: compute the pairwise MS-SSIM diversity; msssim_kernel: its Gaussian kernel size.
        msssim_max_samples: at most this many volumes per set enter the diversity (pairs grow quadratically).
        batch_size: decoding batch size.
        bootstrap_resamples, bootstrap_seed: resamples of the generated samples for the intervals of
            ``measure`` (0: none).
    """

    def __init__(
        self,
        decode: Callable[[torch.Tensor], torch.Tensor] | None,
        feat3d=None,
        fid=None,
        swd_projections: int = 256,
        swd_p: float = 2.0,
        seed: int = 0,
        knn_k: int = 3,
        msssim: bool = True,
        msssim_kernel: int = 5,
        msssim_max_samples: int = 8,
        batch_size: int = 8,
        device: torch.device | str = "cpu",
        bootstrap_resamples: int = 0,
        bootstrap_seed: int = 0,
    ) -> None:
        self.decode, self.feat3d, self.fid = decode, feat3d, fid
        self.swd_projections, self.swd_p, self.seed = int(swd_projections), float(swd_p), int(seed)
        self.knn_k, self.msssim, self.msssim_kernel = int(knn_k), bool(msssim), int(msssim_kernel)
        self.msssim_max_samples = int(msssim_max_samples)
        self.batch_size, self.device = int(batch_size), torch.device(device)
        self.bootstrap_resamples, self.bootstrap_seed = int(bootstrap_resamples), int(bootstrap_seed)

    def config(self) -> dict:
        """What determines the values (for the reference-level cache key)."""
        return {
            "swd": [self.swd_projections, self.swd_p, self.seed],
            "knn_k": self.knn_k,
            "kid": "poly3-unbiased",
            "msssim": [self.msssim, self.msssim_kernel, self.msssim_max_samples],
            "feat3d": self.feat3d.cache_key() if self.feat3d is not None else None,
            "fid": self.fid.cache_key() if self.fid is not None else None,
        }

    # ------------------------------------------------------------------ decoding + features
    def features(self, latents: torch.Tensor, feat3d: bool = True, fid: bool = True, msssim: bool = True) -> dict:
        """Decode latents (N, C, D, H, W) in batches -> {"feat3d": (N, 256), "fid": {plane: (S, 2048)},
        "volumes": (<= msssim_max_samples, 1, X, Y, Z)} (only the parts asked for and available)."""
        feat3d, fid = feat3d and self.feat3d is not None, fid and self.fid is not None
        msssim = msssim and self.msssim
        out: dict = {}
        if not (feat3d or fid or msssim):
            return out
        if self.decode is None:
            _skip("decoded-volume metrics", "no decoder")
            return out
        f3, ff, vols = [], [], []
        for i in range(0, latents.shape[0], self.batch_size):
            v = self.decode(latents[i : i + self.batch_size].to(self.device))
            v = (v.as_tensor() if hasattr(v, "as_tensor") else v).float()  # MONAI MetaTensor -> plain tensor
            if feat3d:
                f3.append(self.feat3d(v))
            if fid:
                ff.append(self.fid.features(v))
            if msssim and sum(x.shape[0] for x in vols) < self.msssim_max_samples:
                vols.append(v.cpu())
        if feat3d:
            out["feat3d"] = torch.cat(f3)
        if fid:
            out["fid"] = {p: torch.cat([b[p] for b in ff]) for p in ff[0]}
        if msssim:
            out["volumes"] = torch.cat(vols)[: self.msssim_max_samples]
        return out

    def reference(self, real: torch.Tensor, feat3d: bool = True, fid: bool = True) -> RealReference:
        """Decode and featurise the real set once (N >= 2)."""
        f = self.features(real, feat3d=feat3d, fid=fid)
        ref = RealReference(latents=real.detach().float().cpu(), feat3d=f.get("feat3d"))
        if "fid" in f:
            ref.fid = {p: feature_stats(x) for p, x in f["fid"].items()}
        if "volumes" in f:
            ref.msssim = self._msssim(f["volumes"], "real")
        return ref

    def _msssim(self, vols: torch.Tensor, what: str) -> float | None:
        if vols.shape[0] < 2:
            _skip(f"msssim ({what})", f"{vols.shape[0]} volume(s), need >= 2")
            return None
        return pairwise_msssim(vols, kernel_size=self.msssim_kernel)

    # ------------------------------------------------------------------ metrics
    def __call__(
        self, latents: torch.Tensor, ref: RealReference, feat3d: bool = True, fid: bool = True, msssim: bool = True
    ) -> dict[str, float]:
        """Metrics of latents (M, C, D, H, W) against ref -> {name: value} (names in the module docstring)."""
        return self.measure(latents, ref, feat3d=feat3d, fid=fid, msssim=msssim, intervals=False)[0]

    def measure(
        self,
        latents: torch.Tensor,
        ref: RealReference,
        feat3d: bool = True,
        fid: bool = True,
        msssim: bool = True,
        intervals: bool = True,
    ) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
        """Metrics of latents (M, C, D, H, W) against ref -> ({name: value}, {name: {"se", "ci_lo", "ci_hi"}}):
        the bootstrap intervals (``neuromf.evaluation.bootstrap``, ``bootstrap_resamples`` > 0) of the feature
        metrics, from the features computed once.

        Non-finite latents give inf distances and 0 precision/recall/density/coverage without decoding."""
        spread: dict[str, dict[str, float]] = {}
        real = ref.latents.to(latents.device)
        out = {
            "swd": float(
                sliced_wasserstein(latents, real, num_projections=self.swd_projections, p=self.swd_p, seed=self.seed)
            ),
            "swd_patch": float(
                patch_sliced_wasserstein(
                    latents, real, num_projections=self.swd_projections, p=self.swd_p, seed=self.seed
                )
            ),
        }
        feat3d = feat3d and self.feat3d is not None and ref.feat3d is not None
        fid = fid and self.fid is not None and ref.fid is not None
        if not torch.isfinite(latents).all():
            bad = int((~torch.isfinite(latents.flatten(1))).any(1).sum())
            log.warning(
                "evaluation: %d of %d samples are not finite: feature metrics set to their worst values (0 / inf)",
                bad,
                latents.shape[0],
            )
            if feat3d:
                out |= {m: (0.0 if m in HIGHER_IS_BETTER else math.inf) for m in FEAT3D_METRICS}
            if fid:
                out |= {f"fid_{p}": math.inf for p in ref.fid} | {"fid_mean": math.inf}
            if msssim and self.msssim:
                _skip("msssim", "non-finite samples")
            return out, spread
        msssim = msssim and self.msssim and ref.msssim is not None
        f = self.features(latents, feat3d=feat3d, fid=fid, msssim=msssim)
        if "feat3d" in f:
            out |= self.feature_metrics(f["feat3d"], ref.feat3d, ref.knn_feat3d)
            if intervals and self.bootstrap_resamples > 0:
                spread = feature_intervals(
                    f["feat3d"], ref.feat3d, ref.knn_feat3d, self.knn_k, self.bootstrap_resamples, self.bootstrap_seed
                )
        if "fid" in f:
            if f["fid"][next(iter(f["fid"]))].shape[0] < 2:
                _skip("fid", "fewer than 2 slices")
            else:
                out |= self.fid.distance({p: feature_stats(x) for p, x in f["fid"].items()}, ref.fid)
        if "volumes" in f and (v := self._msssim(f["volumes"], "samples")) is not None:
            out["msssim"] = v
        if ref.extra.get("template") is not None:
            corr = template_correlation(latents, ref.extra["template"].to(latents.device))
            out |= {"template_corr": float(corr.median()), "template_corr_min": float(corr.min())}
        return out, spread

    def feature_metrics(
        self, fake: torch.Tensor, real: torch.Tensor, knn_real: torch.Tensor | None = None
    ) -> dict[str, float]:
        """feat3d_fd, kid of fake (M, F) vs real (N, F); precision, recall, density, coverage vs knn_real (N', F)
        (default real); each one that cannot be computed is left out with one logged line."""
        out: dict[str, float] = {}
        m, n = fake.shape[0], real.shape[0]
        if m < 2 or n < 2:
            _skip("feat3d_fd, kid", f"{m} generated / {n} real samples, need >= 2 each")
        else:
            out["feat3d_fd"] = frechet_distance(feature_stats(fake), feature_stats(real))
            out["kid"] = kid(fake, real)
        knn_real = real if knn_real is None else knn_real
        if min(m, knn_real.shape[0]) <= self.knn_k:
            _skip(
                "precision, recall, density, coverage",
                f"{m} generated / {knn_real.shape[0]} real samples, k-NN with k={self.knn_k} needs more than k of each",
            )
        else:
            out |= prdc(fake, knn_real, k=self.knn_k)
        return out
