"""MeanFlow-family maths: time sampling, JVP strategies, the objective contract, the objectives, samplers."""

from neuromf.meanflow.alphaflow import AlphaFlowObjective
from neuromf.meanflow.contract import SAMPLERS, Objective, per_channel_distance
from neuromf.meanflow.flow_matching import FlowMatchingObjective
from neuromf.meanflow.jvp import JVP_STRATEGIES, check_jvp_strategy, time_derivative
from neuromf.meanflow.objective import MeanFlowObjective
from neuromf.meanflow.registry import OBJECTIVES, objective_class, sampler_of
from neuromf.meanflow.sampling import noise_like, sample
from neuromf.meanflow.split_meanflow import SplitMeanFlowObjective
from neuromf.meanflow.time_sampling import TimeSampler
from neuromf.meanflow.warm_start import WarmStartObjective

__all__ = [
    "JVP_STRATEGIES",
    "OBJECTIVES",
    "SAMPLERS",
    "AlphaFlowObjective",
    "FlowMatchingObjective",
    "MeanFlowObjective",
    "Objective",
    "SplitMeanFlowObjective",
    "TimeSampler",
    "WarmStartObjective",
    "check_jvp_strategy",
    "noise_like",
    "objective_class",
    "per_channel_distance",
    "sample",
    "sampler_of",
    "time_derivative",
]
