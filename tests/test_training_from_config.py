"""Callbacks and loggers built from their config nodes (conf/callbacks/, conf/logger/,
neuromf/training/from_config.py): order, enabled / removed nodes, a new node without editing neuromf.train,
the run context a factory gets, and one line naming a node that cannot be built."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from training_helpers import tiny_cfg

from neuromf.run_dir import RunDir
from neuromf.tracking.csv_logger import RunCSVLogger
from neuromf.train import build_callbacks
from neuromf.training.from_config import RunContext, build_nodes


def _names(callbacks):
    return [type(c).__name__ for c in callbacks]


def test_default_callbacks_in_config_order_then_the_runs_bookkeeping(tmp_path):
    cbs = build_callbacks(tiny_cfg("callbacks.samples.enabled=true"), tmp_path)
    assert _names(cbs) == [
        "DivergenceMonitor", "DiagnosticsLogger", "LearningRateMonitor", "ModelCheckpoint", "ModelCheckpoint",
        "CheckpointOnSigterm", "SampleCollector", "EMA", "ObjectiveTracker", "ProgressFile",
    ]  # fmt: skip
    last_steps = cbs[3]
    assert isinstance(last_steps, ModelCheckpoint) and last_steps._every_n_train_steps == 50
    assert last_steps.dirpath == str(RunDir(tmp_path).checkpoints)
    assert cbs[1].every_n_steps == 5 and cbs[0].window == 25


def test_with_eval_the_best_checkpoint_and_early_stopping_watch_the_objective(tmp_path):
    cfg = tiny_cfg("eval=default", "callbacks.early_stopping.enabled=true", "callbacks.checkpoint.save_top_k=3")
    cbs = build_callbacks(cfg, tmp_path)
    best = [c for c in cbs if isinstance(c, ModelCheckpoint) and c.monitor]
    stop = [c for c in cbs if isinstance(c, EarlyStopping)]
    assert len(best) == 1 and best[0].monitor == cfg.objective and best[0].save_top_k == 3
    assert len(stop) == 1 and stop[0].monitor == cfg.objective and stop[0].patience == 5
    assert "EvaluationCallback" in _names(cbs)


def test_a_node_is_removed_or_added_by_config_alone(tmp_path):
    names = _names(build_callbacks(tiny_cfg("~callbacks.diagnostics", "~callbacks.lr_monitor"), tmp_path))
    assert "DiagnosticsLogger" not in names and "LearningRateMonitor" not in names and "DivergenceMonitor" in names
    cfg = tiny_cfg("+callbacks.extra_lr._target_=pytorch_lightning.callbacks.LearningRateMonitor",
                   "+callbacks.extra_lr.logging_interval=epoch")  # fmt: skip
    extra = [c for c in build_callbacks(cfg, tmp_path) if isinstance(c, LearningRateMonitor)]
    assert [c.logging_interval for c in extra] == ["step", "epoch"]


def test_a_factory_with_a_run_parameter_gets_the_run_context(tmp_path):
    cfg = tiny_cfg()
    run = RunContext(RunDir(tmp_path), cfg, resume_step=7)
    (logger,) = build_nodes(cfg.logger, run, group="logger")
    assert isinstance(logger, RunCSVLogger) and logger.resume_step == 7 and Path(logger.log_dir) == tmp_path
    nodes = OmegaConf.create({"off": {"_target_": "neuromf.training.from_config.csv_logger", "enabled": False},
                              "setting": 3})  # fmt: skip
    assert build_nodes(nodes, run, group="logger") == []


def test_the_wandb_logger_group_keeps_the_csv_logger_first():
    assert list(tiny_cfg("logger=wandb").logger) == ["csv", "wandb"]
    assert list(tiny_cfg().logger) == ["csv"]


def test_a_node_that_cannot_be_built_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"^callbacks\.bad: Error locating target 'neuromf\.nope\.Missing'"):
        build_callbacks(tiny_cfg("+callbacks.bad._target_=neuromf.nope.Missing"), tmp_path)
