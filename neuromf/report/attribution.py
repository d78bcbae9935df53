"""Why the arms' resolved configs differ: each differing key is set by the arm label (composing each arm's
overrides with Hydra gives it a different value), by the equal-compute budget (its step count per arm), or by
neither (a confound: e.g. runs of another code version, or a hand-edited config)."""

from __future__ import annotations

from dataclasses import dataclass, field

from neuromf.tracking.metrics import RunRecord
from neuromf.tracking.run import flat_config

# what neuromf.train sets from budget.flops / budget.fm_steps (neuromf/training/budget.py) before the run starts
BUDGET_KEYS = (
    "trainer.max_steps",
    "trainer.max_epochs",
    "trainer.val_check_interval",
    "trainer.check_val_every_n_epoch",
)
MAX_ARMS_COMPOSED = 32  # an Optuna study's trials are arms: beyond this the attribution is not attempted


@dataclass
class Attribution:
    """Differing keys by cause; ``label`` is None when the labels could not be composed (unknown)."""

    label: list[str] | None
    budget: list[str] = field(default_factory=list)
    unexplained: list[str] = field(default_factory=list)


def _has_budget(config: dict | None) -> bool:
    budget = (config or {}).get("budget") or {}
    return budget.get("flops") is not None or budget.get("fm_steps") is not None


def _composed(records: list[RunRecord], arms: list[str]) -> list[dict] | None:
    """Each arm's config composed from its first run's overrides (flattened), or None if one does not compose."""
    from hydra.core.global_hydra import GlobalHydra

    from neuromf.config_compose import compose

    first = {arm: r for r, arm in zip(records, arms, strict=True)}
    if len(first) > MAX_ARMS_COMPOSED or GlobalHydra.instance().is_initialized():  # never inside a Hydra app
        return None
    try:
        return [
            flat_config({k: v for k, v in compose(r.overrides).items() if k != "_sweep_params"}) for r in first.values()
        ]
    except Exception:  # noqa: BLE001  (an override of another code version: the attribution is unknown)
        return None
    finally:
        GlobalHydra.instance().clear()


def attribute(keys: list[str], records: list[RunRecord], arms: list[str]) -> Attribution:
    """Split the differing config ``keys`` (dotted) of ``records`` (one arm label each, ``arms``) by cause."""
    budgeted = all(_has_budget(r.config) for r in records)
    composed = _composed(records, arms)
    label = None if composed is None else [k for k in keys if len({repr(c.get(k, "<absent>")) for c in composed}) > 1]
    budget = [k for k in keys if budgeted and k in BUDGET_KEYS and k not in (label or [])]
    rest = [k for k in keys if k not in (label or []) and k not in budget]
    return Attribution(label=label, budget=budget, unexplained=rest)
