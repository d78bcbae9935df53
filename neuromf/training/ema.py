"""EMA of the weights: Lightning's EMAWeightAveraging, keeping the EMA copy beside the trained weights."""

from __future__ import annotations

import torch
from pytorch_lightning.callbacks import EMAWeightAveraging
from torch import Tensor, nn
from torch.optim.swa_utils import get_ema_multi_avg_fn


def warmup_decay(decay: float, n: int | float) -> float:
    """Effective decay min(decay, (1 + n) / (10 + n)) after n EMA updates (n counts the initial copy)."""
    return min(decay, (1.0 + n) / (10.0 + n))


def get_ema_warmup_multi_avg_fn(decay: float):
    """`multi_avg_fn` for torch's AveragedModel: an EMA step with decay `warmup_decay(decay, n_averaged)`.

    n_averaged is AveragedModel's update counter (a buffer, saved in Lightning's `averaging_state`), so a resumed
    run continues the schedule. With decay 0.99, after 30 updates the initial weights weigh 4.7e-8 instead of
    0.99^29 = 0.75.
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"callbacks.ema.decay={decay}: must lie in [0, 1]")

    @torch.no_grad()
    def update(ema_params: list[Tensor], model_params: list[Tensor], n_averaged: Tensor) -> None:
        get_ema_multi_avg_fn(warmup_decay(decay, int(n_averaged)))(ema_params, model_params, n_averaged)

    return update


class EMA(EMAWeightAveraging):
    """EMAWeightAveraging without its validation-time weight swap: the EMA network is used explicitly
    (`ema_net`) by validation, sampling and evaluation, so callbacks need no ordering. Checkpoints keep
    Lightning's layout: `state_dict` = EMA weights, `current_model_state` = trained weights.

    warmup: the decay of the n-th update is min(decay, (1 + n) / (10 + n)) (n = updates so far), so early EMA
    weights do not stay pinned to the initialisation; False gives Lightning's constant decay.
    """

    def __init__(self, decay: float = 0.999, update_every_n_steps: int = 1, warmup: bool = True, **kwargs):
        super().__init__(decay=decay, update_every_n_steps=update_every_n_steps, **kwargs)
        if warmup:  # the AveragedModel kwargs: the warm-up multi_avg_fn replaces Lightning's constant-decay avg_fn
            self._kwargs.pop("avg_fn")
            self._kwargs["multi_avg_fn"] = get_ema_warmup_multi_avg_fn(decay)
        self.decay, self.warmup = decay, warmup

    def on_validation_epoch_start(self, trainer, pl_module) -> None:  # no swap
        pass

    def on_validation_epoch_end(self, trainer, pl_module) -> None:  # no swap
        pass

    @property
    def ema_net(self) -> nn.Module | None:
        """The EMA copy of `pl_module.net` (None before fit starts)."""
        return None if self._average_model is None else self._average_model.module.net
