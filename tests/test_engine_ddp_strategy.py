"""trainer.strategy=ddp_auto: the unused-parameter search only for configurations that leave parameters unused."""

import logging
from types import SimpleNamespace

import pytest
import torch
from engine_helpers import tiny_model

from neuromf.meanflow import MeanFlowObjective
from neuromf.training.ddp_strategy import choose_ddp_strategy, unused_parameters


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
