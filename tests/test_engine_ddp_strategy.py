"""trainer.strategy=ddp_auto: the unused-parameter search only for configurations that leave parameters unused."""

import logging
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import TINY_TRAIN
from engine_helpers import tiny_model
from pytorch_lightning.strategies import DDPStrategy
from training_helpers import tiny_cfg

from neuromf.meanflow import MeanFlowObjective
from neuromf.tracking.run import read_status
from neuromf.train import build_module, build_trainer
from neuromf.training.ddp_strategy import choose_ddp_strategy, unused_parameters

REPO = Path(__file__).resolve().parents[1]


def _module(objective, **kw):
    return SimpleNamespace(net=tiny_model(**kw), objective=objective)


@pytest.mark.parametrize(
    "objective,kw",
    [
        (MeanFlowObjective(jvp="exact_fused"), dict(use_v_head=True, v_head_num_res_blocks=1)),  # iMF, shared
        (MeanFlowObjective(jvp="exact", imf_v_loss="separate"), dict(use_v_head=True)),
        (MeanFlowObjective(jvp="fd"), dict(use_v_head=False, conditioning="h")),  # MeanFlow
    ],
)
def test_every_parameter_used_gives_plain_ddp(objective, kw, caplog):
    module = _module(objective, **kw)
    state = torch.random.get_rng_state()
    with caplog.at_level(logging.INFO, logger="neuromf.train"):
        assert choose_ddp_strategy(module) == "ddp"
    assert "ddp_auto -> ddp:" in caplog.text
    assert torch.equal(torch.random.get_rng_state(), state)  # the probe leaves the global RNG alone
    assert all(p.grad is None for p in module.net.parameters()) and objective.last_point is None


def test_unused_v_head_or_frozen_parameters_are_detected(caplog):
    """iMF, shared form, v_loss_weight 0: the v-head runs only without a graph (the tangent) -> unused."""
    module = _module(MeanFlowObjective(v_loss_weight=0.0), use_v_head=True)
    assert unused_parameters(module) and all(n.startswith("v_head") for n in unused_parameters(module))
    with caplog.at_level(logging.INFO, logger="neuromf.train"):
        assert choose_ddp_strategy(module) == "ddp_find_unused_parameters_true"
    assert "v_head" in caplog.text
    module.net.v_head.requires_grad_(False)  # frozen parameters are not DDP's concern
    assert choose_ddp_strategy(module) == "ddp"


# trainer=ddp on CPU processes (gloo): what build_trainer hands Lightning, before anything is launched
DDP_CPU = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.precision=32-true"]


@pytest.mark.parametrize(
    ("overrides", "find_unused"),
    [
        ([], False),  # iMF, shared v-head loss: every parameter gets a gradient
        (["loss.v_loss_weight=0"], True),  # the v-head runs only without a graph (the tangent)
    ],
)
def test_build_trainer_resolves_ddp_auto_to_a_ddp_strategy(tmp_path, overrides, find_unused):
    cfg = tiny_cfg(*DDP_CPU, *overrides)
    assert cfg.trainer.strategy == "ddp_auto"
    module = build_module(cfg)
    trainer = build_trainer(cfg, tmp_path, callbacks=[], loggers=False, module=module)
    strategy = trainer.strategy
    assert type(strategy) is DDPStrategy and trainer.num_devices == 2
    assert strategy._ddp_kwargs.get("find_unused_parameters", False) is find_unused
    assert strategy._get_process_group_backend() == "gloo"
    assert all(p.grad is None for p in module.net.parameters())  # the probe leaves no gradients behind


@pytest.mark.slow
def test_a_ddp_run_that_leaves_the_v_head_unused_trains(tmp_path, demo_latents):
    """`trainer=ddp` (one CPU process, gloo) with loss.v_loss_weight=0 trains past its second step: plain `ddp`
    would stop there (Lightning: 'parameters that were not used in producing the loss'; checked by hand), so the
    strategy Lightning got is the searching one."""
    run = tmp_path / "run"
    args = [*TINY_TRAIN, "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=1", "trainer.precision=32-true"]
    args += ["trainer.max_epochs=1", "++trainer.limit_train_batches=3", "++trainer.limit_val_batches=1"]
    args += ["loss.v_loss_weight=0", f"hydra.run.dir={run}"]
    env = {**os.environ, "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "neuromf.train", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "ddp_auto -> ddp_find_unused_parameters_true" in proc.stdout + proc.stderr
    status = read_status(run)
    assert status["status"] == "completed" and status["global_step"] == 3
