"""The allowed values of the training config, checked before anything is built or trained.

One declarative table (`SCHEMA`): each entry names a dotted key, its kind and its allowed range. `check_config`
reports every violation, one line each, naming the key, the value and what is allowed; `train` turns that into
`error: ...` on stderr and exit 2 (a failed arm with that reason in status.json inside a sweep). Keys absent from
the config are not checked (a config group may leave them out); keys not in the table are Hydra's business.

Trainer semantics follow Lightning: `trainer.max_epochs` is an int >= 1, or -1 for no epoch limit (null: Lightning's
default of 1000 epochs when max_steps is -1); `trainer.max_steps` is an int >= 1, or -1 for no step limit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

_MISSING = object()


class ConfigError(ValueError):
    """One or more config values are outside their allowed range (the message has one line per value)."""


@dataclass(frozen=True)
class Rule:
    """key: dotted config key; kind: "int" | "float" | "str" | "bool" | "fractions"; ok: the range check;
    allowed: the range in words (the error message); nullable: null is allowed."""

    key: str
    kind: str
    allowed: str
    ok: Callable[[Any], bool] = lambda v: True
    nullable: bool = False


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return (isinstance(v, int | float)) and not isinstance(v, bool)


def _limit_batches(v) -> bool:  # Lightning: a fraction of the batches (float in [0, 1]) or a number of batches
    return (_is_int(v) and v >= 0) or (isinstance(v, float) and 0.0 <= v <= 1.0)


def _fractions(v) -> bool:
    if not isinstance(v, Sequence) or isinstance(v, str) or len(v) not in (2, 3):
        return False
    if not all(_is_number(x) and 0.0 <= x <= 1.0 for x in v):
        return False
    return abs(sum(v) - 1.0) <= 1e-6


SCHEMA: tuple[Rule, ...] = (
    Rule("seed", "int", "an integer"),
    Rule("objective_mode", "str", "'min' or 'max'", lambda v: v in ("min", "max")),
    Rule("torch_threads", "int", "an integer >= 1 (or null)", lambda v: v >= 1, nullable=True),
    # equal-compute budget (neuromf/training/budget.py)
    Rule("budget.flops", "float", "a number > 0 (or null)", lambda v: v > 0, nullable=True),
    Rule("budget.fm_steps", "float", "a number > 0 (or null)", lambda v: v > 0, nullable=True),
    Rule("budget.validations", "int", "an integer >= 1", lambda v: v >= 1),
    # optimiser
    Rule("optim.lr", "float", "a number > 0", lambda v: v > 0),
    Rule("optim.beta1", "float", "a number in [0, 1)", lambda v: 0 <= v < 1),
    Rule("optim.beta2", "float", "a number in [0, 1)", lambda v: 0 <= v < 1),
    Rule("optim.weight_decay", "float", "a number >= 0", lambda v: v >= 0),
    Rule("optim.warmup_steps", "int", "an integer >= 0", lambda v: v >= 0),
    Rule("optim.min_lr_ratio", "float", "a number in [0, 1]", lambda v: 0 <= v <= 1),
    Rule("optim.total_steps", "int", "an integer >= 1 (or null)", lambda v: v >= 1, nullable=True),
    Rule("optim.schedule", "str", "'constant', 'linear' or 'cosine'", lambda v: v in ("constant", "linear", "cosine")),
    # objective
    Rule("loss.norm_p", "float", "a number >= 0", lambda v: v >= 0),
    Rule("loss.norm_eps", "float", "a number > 0", lambda v: v > 0),
    Rule("loss.p", "float", "a number > 0", lambda v: v > 0),
    Rule("loss.fd_step", "float", "a number > 0", lambda v: v > 0),
    Rule("loss.v_loss_weight", "float", "a number >= 0", lambda v: v >= 0),
    Rule("loss.time_sampler.sigma", "float", "a number > 0", lambda v: v > 0),
    Rule("loss.time_sampler.data_proportion", "float", "a number in [0, 1]", lambda v: 0 <= v <= 1),
    # data
    Rule("data.batch_size", "int", "an integer >= 1", lambda v: v >= 1),
    Rule("data.split", "fractions", "2 or 3 fractions in [0, 1] summing to 1 (within 1e-6)", _fractions),
    Rule("data.split_ratio", "float", "a number in (0, 1] (or null)", lambda v: 0 < v <= 1, nullable=True),
    Rule("data.split_seed", "int", "an integer >= 0", lambda v: v >= 0),
    Rule("data.num_workers", "int", "an integer >= 0", lambda v: v >= 0),
    Rule("data.mask_ratio", "float", "a number in [0, 1)", lambda v: 0 <= v < 1),
    Rule("data.cache_max_fraction", "float", "a number in (0, 1]", lambda v: 0 < v <= 1),
    # trainer (Lightning semantics)
    Rule("trainer.max_epochs", "int", "an integer >= 1, or -1 for no epoch limit", lambda v: v >= 1 or v == -1, True),
    Rule("trainer.max_steps", "int", "an integer >= 1, or -1 for no step limit", lambda v: v >= 1 or v == -1),
    Rule("trainer.log_every_n_steps", "int", "an integer >= 1", lambda v: v >= 1),
    Rule("trainer.check_val_every_n_epoch", "int", "an integer >= 1 (or null)", lambda v: v >= 1, nullable=True),
    Rule("trainer.gradient_clip_val", "float", "a number >= 0 (or null)", lambda v: v >= 0, nullable=True),
    Rule("trainer.accumulate_grad_batches", "int", "an integer >= 1", lambda v: v >= 1),
    Rule("trainer.limit_train_batches", "any", "an integer >= 0 or a fraction in [0, 1]", _limit_batches, True),
    Rule("trainer.limit_val_batches", "any", "an integer >= 0 or a fraction in [0, 1]", _limit_batches, True),
    # evaluation
    Rule("eval.bootstrap_resamples", "int", "an integer >= 0 (0: no intervals)", lambda v: v >= 0),
    Rule("eval.knn_num_real", "int", "an integer >= 2 (or null: the validation set)", lambda v: v >= 2, True),
    # callbacks
    Rule("callbacks.ema.decay", "float", "a number in [0, 1)", lambda v: 0 <= v < 1),
    Rule("callbacks.ema.update_every_n_steps", "int", "an integer >= 1", lambda v: v >= 1),
    Rule("callbacks.ema.warmup", "bool", "true or false"),
    Rule("callbacks.checkpoint.every_n_train_steps", "int", "an integer >= 1", lambda v: v >= 1),
    Rule("callbacks.checkpoint.save_top_k", "int", "an integer >= -1", lambda v: v >= -1),
    Rule("callbacks.divergence.threshold", "float", "a number > 1", lambda v: v > 1),
    Rule("callbacks.divergence.grace_steps", "int", "an integer >= 0", lambda v: v >= 0),
    Rule("callbacks.divergence.window", "int", "an integer >= 1", lambda v: v >= 1),
    Rule("callbacks.diagnostics.every_n_steps", "int", "an integer >= 1", lambda v: v >= 1),
)


def _get(cfg: Any, key: str):
    node = cfg
    for part in key.split("."):
        try:
            node = node[part]
        except (KeyError, TypeError, IndexError, AttributeError):
            return _MISSING
        except Exception:  # omegaconf: a missing mandatory value (???) or an interpolation that does not resolve
            return _MISSING
    return node


def _kind_ok(rule: Rule, value) -> bool:
    if rule.kind == "int":
        return _is_int(value)
    if rule.kind == "float":
        return _is_number(value) and math.isfinite(float(value))
    if rule.kind == "str":
        return isinstance(value, str)
    if rule.kind == "bool":
        return isinstance(value, bool)
    return True


def config_errors(cfg: Any, schema: Sequence[Rule] = SCHEMA) -> list[str]:
    """One line per value outside its allowed range: '<key>=<value>: must be <allowed>'."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(cfg, DictConfig | ListConfig):
        try:
            cfg = OmegaConf.to_container(cfg, resolve=True)
        except Exception:  # an interpolation that does not resolve: check the literal values
            cfg = OmegaConf.to_container(cfg, resolve=False)
    errors = []
    for rule in schema:
        value = _get(cfg, rule.key)
        if value is _MISSING or (value is None and rule.nullable):
            continue
        if isinstance(value, str) and "${" in value:  # an unresolved interpolation: checked where it points
            continue
        if value is None or not _kind_ok(rule, value) or not rule.ok(value):
            errors.append(f"{rule.key}={value!r}: must be {rule.allowed}")
    return errors


def check_config(cfg: Any, schema: Sequence[Rule] = SCHEMA) -> None:
    """Raise ConfigError when a value is outside its allowed range (one line per value: key, value, range)."""
    errors = config_errors(cfg, schema)
    errors += direction_errors(cfg)
    if errors:
        raise ConfigError("\n".join(f"invalid config: {e}" for e in errors))


def direction_errors(cfg: Any) -> list[str]:
    """`objective_mode` against the direction of the `objective` metric (a lower-is-better distance maximised, or
    a correlation minimised, would select and prune the wrong runs): one line when they contradict."""
    from neuromf.evaluation.registry import metric_direction

    objective, mode = _get(cfg, "objective"), _get(cfg, "objective_mode")
    if not isinstance(objective, str) or mode not in ("min", "max"):
        return []
    known = metric_direction(objective)
    if known is None or known == mode:
        return []
    better = "higher" if known == "max" else "lower"
    return [f"objective_mode={mode!r}: objective={objective} is {better}-is-better; set objective_mode={known}"]
