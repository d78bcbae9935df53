"""MeanFlowModule: the Lightning module that trains a MeanFlowUNet with one objective of neuromf.meanflow."""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from neuromf.data.masking import random_spatial_mask
from neuromf.instantiate import build
from neuromf.meanflow import Objective, sample
from neuromf.training.ema import EMA
from neuromf.training.optim import build_optimizer, build_scheduler

log = logging.getLogger(__name__)


def _plain(cfg: Any) -> Any:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


class MeanFlowModule(pl.LightningModule):
    """Holds the network (`self.net`), the objective and the optimiser settings.

    model / loss: Hydra configs (`_target_` + kwargs) of a MeanFlowUNet and an objective (neuromf.meanflow.contract),
    stored in the checkpoint's hyper-parameters so `python -m neuromf.sample` can rebuild the network and sample it
    with the objective's sampler. The objective gets the global step (its schedules follow it); its declared loss
    terms are what validation logs.
    optim: {lr, beta1, beta2, weight_decay, schedule: constant|linear|cosine, warmup_steps, min_lr_ratio}.
    data: the data config, kept in the checkpoint so `python -m neuromf.sample` can decode samples.
    Batches are latents x (B, C, D, H, W). The noise / time / mask draws use a generator of the module whose
    state is checkpointed, so a resumed run continues the same random stream.
    """

    def __init__(
        self,
        model: dict,
        loss: dict,
        optim: dict,
        mask_ratio: float = 0.0,
        ema_inference: bool = True,
        seed: int = 0,
        data: dict | None = None,
    ):
        super().__init__()
        model, loss, optim, data = _plain(model), _plain(loss), _plain(optim), _plain(data)
        self.save_hyperparameters(
            {
                "model": model,
                "loss": loss,
                "optim": optim,
                "mask_ratio": mask_ratio,
                "ema_inference": ema_inference,
                "seed": seed,
                "data": data,
            },
            logger=False,  # neuromf.train logs the whole resolved config once (nested)
        )
        self.net = build(model, _convert_="all")
        self.objective: Objective = build(loss, _convert_="all")
        if not isinstance(self.objective, Objective):
            raise ValueError(f"loss._target_={loss.get('_target_')!r}: not an objective (neuromf.meanflow.contract)")
        self.objective.check_model(self.net)
        # the objective's declared loss terms (train/<term>, val/<term>) and sampler, from the config alone
        self.loss_terms = type(self.objective).terms({"model": model, "loss": loss})
        self.sampler = type(self.objective).sampler
        self.generator: torch.Generator | None = None
        self._pending_generator_state: Tensor | None = None
        self.last_diagnostics: dict[str, Tensor] = {}

    # ---- randomness -----------------------------------------------------------------------------------------
    def _gen(self) -> torch.Generator:
        """The module's generator on its current device (re-created after a device move, restored on resume)."""
        if self.generator is None or self.generator.device.type != self.device.type:
            self.generator = torch.Generator(device=self.device).manual_seed(self.hparams.seed + self.global_rank)
            if self._pending_generator_state is not None:
                self.generator.set_state(self._pending_generator_state)
                self._pending_generator_state = None
        return self.generator

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["neuromf_generator"] = self._gen().get_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._pending_generator_state = checkpoint.get("neuromf_generator")
        self.generator = None

    def on_fit_start(self) -> None:
        """A schedule given in fractions of the run (loss.schedule_unit=run) is fitted to this run's training
        steps (trainer.max_steps, the budget's steps or max_epochs x batches), so it completes within the run."""
        fitted = self.objective.for_run_length(self.trainer.estimated_stepping_batches)
        if fitted is not self.objective:
            log.info("loss schedule over %d training steps: %s", self.trainer.estimated_stepping_batches,
                     ", ".join(f"{k}={v}" for k, v in fitted.schedule_points().items()))  # fmt: skip
            self.objective = fitted

    # ---- steps ----------------------------------------------------------------------------------------------
    def forward(self, z: Tensor, r: Tensor, t: Tensor) -> Tensor:
        """u(z_t, r, t): (B, C, D, H, W)."""
        return self.net(z, r, t)

    def _objective(self, x: Tensor, generator: torch.Generator) -> tuple[Tensor, dict[str, Tensor]]:
        # drawn on the batch's device with the module's generator (a CUDA generator cannot fill a CPU tensor)
        mask = random_spatial_mask(x.shape, self.hparams.mask_ratio, generator=generator, device=x.device)
        return self.objective(self.net, x, mask=mask, generator=generator, step=self.global_step)

    def training_step(self, x: Tensor, batch_idx: int) -> Tensor:
        loss, diag = self._objective(x, self._gen())
        self.last_diagnostics = diag
        self.log("train/loss", diag["loss"], prog_bar=True, batch_size=x.shape[0])
        self.log("train/loss_raw", diag["loss_raw"], prog_bar=True, batch_size=x.shape[0])
        return loss

    def validation_step(self, x: Tensor, batch_idx: int) -> None:
        """Raw loss on validation latents with a fixed draw per batch (comparable across epochs)."""
        g = torch.Generator(device=self.device).manual_seed(10_000 + batch_idx)
        with torch.no_grad():
            _, diag = self.objective(self.inference_net(), x, generator=g, step=self.global_step)
        self.log("val/loss_raw", diag["loss_raw"], sync_dist=True, batch_size=x.shape[0])
        for term in self.loss_terms:  # per declared term: the report compares a term only where it means the same
            if term in diag:
                self.log(f"val/{term}", diag[term], sync_dist=True, batch_size=x.shape[0])

    # ---- inference ------------------------------------------------------------------------------------------
    def _ema_callback(self) -> EMA | None:
        trainer = self._trainer
        if trainer is None:
            return None
        return next((cb for cb in trainer.callbacks if isinstance(cb, EMA)), None)

    def inference_net(self, use_ema: bool | None = None) -> torch.nn.Module:
        """The EMA network when `use_ema` (default: hparams.ema_inference) and an EMA callback runs, else self.net."""
        use_ema = self.hparams.ema_inference if use_ema is None else use_ema
        ema = self._ema_callback() if use_ema else None
        return ema.ema_net if ema is not None and ema.ema_net is not None else self.net

    @torch.no_grad()
    def generate(self, noise: Tensor, nfe: int = 1, use_ema: bool | None = None) -> Tensor:
        """Samples (B, C, D, H, W) in normalised latent space from noise eps of the same shape (u-head only), with
        the objective's sampler (average-velocity jumps, or Euler on u(z, t, t) for flow matching)."""
        return sample(self.inference_net(use_ema), noise.to(self.device), nfe, sampler=self.sampler)

    # ---- optimisation ---------------------------------------------------------------------------------------
    def configure_optimizers(self):
        optim = dict(self.hparams.optim)
        optimizer = build_optimizer(self.net.parameters(), optim)
        total = self.trainer.estimated_stepping_batches if self._trainer is not None else optim.get("total_steps", 1)
        scheduler = build_scheduler(optimizer, optim, total_steps=int(optim.get("total_steps") or total))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
