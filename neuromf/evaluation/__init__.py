"""Evaluation: SWD on latents, 2.5D FID, deepbet 3D feature distance, statistics cache, callback."""

from neuromf.evaluation.cache import StatsCache, default_cache_dir, tensor_fingerprint
from neuromf.evaluation.callback import EvaluationCallback
from neuromf.evaluation.frechet import FeatureStats, feature_stats, fid_from_features, frechet_distance
from neuromf.evaluation.swd import random_projections, sliced_wasserstein

__all__ = [
    "EvaluationCallback",
    "FeatureStats",
    "StatsCache",
    "default_cache_dir",
    "feature_stats",
    "fid_from_features",
    "frechet_distance",
    "random_projections",
    "sliced_wasserstein",
    "tensor_fingerprint",
]
