"""EMA of the weights: Lightning's EMAWeightAveraging, keeping the EMA copy beside the trained weights."""

from __future__ import annotations

from pytorch_lightning.callbacks import EMAWeightAveraging
from torch import nn


class EMA(EMAWeightAveraging):
    """EMAWeightAveraging without its validation-time weight swap: the EMA network is used explicitly
    (`ema_net`) by validation, sampling and evaluation, so callbacks need no ordering. Checkpoints keep
    Lightning's layout: `state_dict` = EMA weights, `current_model_state` = trained weights."""

    def on_validation_epoch_start(self, trainer, pl_module) -> None:  # no swap
        pass

    def on_validation_epoch_end(self, trainer, pl_module) -> None:  # no swap
        pass

    @property
    def ema_net(self) -> nn.Module | None:
        """The EMA copy of `pl_module.net` (None before fit starts)."""
        return None if self._average_model is None else self._average_model.module.net
