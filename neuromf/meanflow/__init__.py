"""MeanFlow / improved MeanFlow maths: time sampling, JVP strategies, objective, samplers."""

from neuromf.meanflow.jvp import JVP_STRATEGIES, check_jvp_strategy, time_derivative
from neuromf.meanflow.objective import MeanFlowObjective, per_channel_distance
from neuromf.meanflow.sampling import noise_like, sample
from neuromf.meanflow.time_sampling import TimeSampler

__all__ = [
    "JVP_STRATEGIES",
    "MeanFlowObjective",
    "TimeSampler",
    "check_jvp_strategy",
    "noise_like",
    "per_channel_distance",
    "sample",
    "time_derivative",
]
