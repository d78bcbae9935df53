"""Hydra's instantiate, restricted to the project's own classes and Lightning's (configs cannot run other code)."""

from __future__ import annotations

from typing import Any

from hydra.utils import instantiate

TRUSTED_TARGETS = ["neuromf.*", "pytorch_lightning.*"]


def build(cfg: Any, **kwargs: Any) -> Any:
    """instantiate(cfg, **kwargs) with the execution whitelist `TRUSTED_TARGETS`."""
    return instantiate(cfg, _execution_whitelist_=TRUSTED_TARGETS, **kwargs)
