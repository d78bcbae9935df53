"""Evaluation: SWD on latents, 2.5D FID, deepbet 3D feature distance, statistics cache, callback."""

from neuromf.evaluation.cache import StatsCache, default_cache_dir, tensor_fingerprint
from neuromf.evaluation.callback import EvaluationCallback
from neuromf.evaluation.frechet import FeatureStats, feature_stats, frechet_distance
from neuromf.evaluation.swd import sliced_wasserstein

__all__ = [
    "EvaluationCallback",
    "FeatureStats",
    "StatsCache",
    "default_cache_dir",
    "feature_stats",
    "frechet_distance",
    "sliced_wasserstein",
    "tensor_fingerprint",
]
