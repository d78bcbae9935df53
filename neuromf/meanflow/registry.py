"""The objectives by name, and what the rest of the code asks of a `loss` config: its objective class, its sampler,
every loss term and diagnostic any objective logs. Above the objectives (each file imports only the contract)."""

from __future__ import annotations

from typing import Any

from neuromf.meanflow.alphaflow import AlphaFlowObjective
from neuromf.meanflow.contract import Objective
from neuromf.meanflow.flow_matching import FlowMatchingObjective
from neuromf.meanflow.objective import MeanFlowObjective
from neuromf.meanflow.split_meanflow import SplitMeanFlowObjective
from neuromf.meanflow.warm_start import WarmStartObjective

# every objective class by its `loss=` family name (the dashboards' candidate keys, the cost rows)
OBJECTIVES: dict[str, type[Objective]] = {
    cls.name: cls
    for cls in (
        MeanFlowObjective,
        FlowMatchingObjective,
        AlphaFlowObjective,
        SplitMeanFlowObjective,
        WarmStartObjective,
    )
}


def objective_class(loss_cfg: dict[str, Any] | None) -> type[Objective]:
    """The objective class a `loss` config names (`_target_`, a neuromf class); MeanFlow for configs without one
    (runs from before the contract)."""
    target = (loss_cfg or {}).get("_target_") if isinstance(loss_cfg, dict) else None
    if not target:
        return MeanFlowObjective
    if not str(target).startswith("neuromf."):
        raise ValueError(f"loss._target_={target!r}: not a neuromf objective")
    from hydra.utils import get_class

    cls = get_class(str(target))
    if not (isinstance(cls, type) and issubclass(cls, Objective)):
        raise ValueError(f"loss._target_={target!r}: not an objective (neuromf.meanflow.contract.Objective)")
    return cls


def sampler_of(loss_cfg: dict[str, Any] | None) -> str:
    """The sampler the objective of a `loss` config trains its network for ("average" / "instantaneous")."""
    return objective_class(loss_cfg).sampler


def all_terms() -> tuple[str, ...]:
    """Every loss term any objective can log (the dashboards' candidate keys)."""
    cfgs = [{"model": {"use_v_head": h}} for h in (False, True)]
    return tuple(dict.fromkeys(k for cls in OBJECTIVES.values() for c in cfgs for k in cls.terms(c)))


def all_diagnostics() -> tuple[str, ...]:
    """Every diagnostic key any objective can log (the dashboards' candidate keys)."""
    full = {"model": {"use_v_head": True}}
    keys = [k for cls in OBJECTIVES.values() for k in cls.diagnostics(full)]
    return tuple(dict.fromkeys(keys))
