"""MeanFlow network: MONAI's MAISI diffusion UNet with (r, t) conditioning and the iMF dual head.

Symbols (see neuromf/meanflow): z_t = (1 - t) x + t eps, h = t - r, u(z_t, r, t) the average velocity
(u-head), v_hat(z_t, t) the instantaneous velocity (v-head, training only: at r = t for iMF's tangent, and as an
auxiliary output of the u pass for its loss, `u_and_v`).
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
import torch.autograd.forward_ad as fwAD
from monai.apps.generation.maisi.networks.diffusion_model_unet_maisi import DiffusionModelUNetMaisi
from monai.networks.nets.diffusion_model_unet import (
    DiffusionUNetResnetBlock,
    get_timestep_embedding,
    zero_module,
)
from monai.utils import unsqueeze_right
from torch import Tensor, nn

Conditioning = Literal["dual", "h", "t_h"]
PredictionType = Literal["u", "x"]
CONDITIONING_MODES = ("dual", "h", "t_h")
PREDICTION_TYPES = ("u", "x")


class VHead(nn.Module):
    """Instantaneous-velocity head on the shared backbone features: optional res blocks + a zero-init output block."""

    def __init__(self, u_out: nn.Sequential, channels: int, temb_channels: int, num_res_blocks: int, groups: int):
        super().__init__()
        self.blocks = nn.ModuleList(
            DiffusionUNetResnetBlock(3, channels, temb_channels, channels, norm_num_groups=groups)
            for _ in range(num_res_blocks)
        )
        self.out = copy.deepcopy(u_out)  # same structure as the u-head's output block (GroupNorm, SiLU, conv)
        zero_module(self.out[-1])

    def forward(self, feats: Tensor, emb: Tensor) -> Tensor:
        for block in self.blocks:
            feats = block(feats, emb)
        return self.out(feats)


class MeanFlowUNet(nn.Module):
    """MAISI UNet predicting u(z_t, r, t) (u-head) and, optionally, v_hat(z_t, t) (v-head).

    Time conditioning (`conditioning`):
      dual: UNet time embedding of t + extra embedding of r;  h: UNet time embedding of h = t - r only;
      t_h: UNet time embedding of t + extra embedding of h.
    Extra embeddings are *added* to the UNet's own (and start at zero), so a plain DiffusionModelUNetMaisi
    state dict of the same config loads into `self.unet` unchanged (`load_maisi_state_dict`).

    `prediction_type`: "u" -> the heads output velocities; "x" -> they output x_hat and
    u = (z_t - x_hat) / max(t, t_min).
    Shapes: z (B, C, D, H, W); r, t (B,) in [0, 1]; outputs (B, C, D, H, W).
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_channels: tuple[int, ...] = (32, 64, 64),
        attention_levels: tuple[bool, ...] = (False, False, True),
        num_res_blocks: int | tuple[int, ...] = 1,
        num_head_channels: int | tuple[int, ...] = 16,
        norm_num_groups: int = 16,
        conditioning: Conditioning = "t_h",
        prediction_type: PredictionType = "u",
        use_v_head: bool = True,
        v_head_num_res_blocks: int = 0,
        t_min: float = 0.05,
        time_scale: float = 1000.0,
        use_flash_attention: bool = False,
        include_fc: bool = False,
        use_combined_linear: bool = False,
        resblock_updown: bool = False,
    ):
        super().__init__()
        if conditioning not in CONDITIONING_MODES:
            raise ValueError(f"model.conditioning={conditioning!r}: expected one of {CONDITIONING_MODES}")
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"model.prediction_type={prediction_type!r}: expected one of {PREDICTION_TYPES}")
        if v_head_num_res_blocks not in (0, 1):
            raise ValueError(f"model.v_head_num_res_blocks={v_head_num_res_blocks}: expected 0 or 1")
        self.conditioning, self.prediction_type = conditioning, prediction_type
        self.use_v_head, self.t_min, self.time_scale = use_v_head, t_min, time_scale
        self.unet = DiffusionModelUNetMaisi(
            spatial_dims=3,
            in_channels=in_channels,
            out_channels=in_channels,
            num_res_blocks=num_res_blocks,
            num_channels=tuple(num_channels),
            attention_levels=tuple(attention_levels),
            norm_num_groups=norm_num_groups,
            num_head_channels=num_head_channels,
            use_flash_attention=use_flash_attention,
            include_fc=include_fc,
            use_combined_linear=use_combined_linear,
            resblock_updown=resblock_updown,
        )
        c0, temb = num_channels[0], num_channels[0] * 4
        self.extra_embed = None
        if conditioning in ("dual", "t_h"):
            self.extra_embed = self.unet._create_embedding_module(c0, temb)
            zero_module(self.extra_embed[-1])  # starts as the plain UNet
        self.v_head = VHead(self.unet.out, c0, temb, v_head_num_res_blocks, norm_num_groups) if use_v_head else None

    # ---- backbone -------------------------------------------------------------------------------------------
    def _embed(self, z: Tensor, r: Tensor, t: Tensor) -> Tensor:
        """Time embedding (B, 4*C0) for the conditioning mode."""
        unet, c0 = self.unet, self.unet.block_out_channels[0]
        h = t - r
        main = h if self.conditioning == "h" else t
        emb = unet._get_time_and_class_embedding(z, main * self.time_scale, None)
        if self.extra_embed is not None:
            extra = r if self.conditioning == "dual" else h
            emb = emb + self.extra_embed(get_timestep_embedding(extra * self.time_scale, c0).to(z.dtype))
        return emb

    def _features(self, z: Tensor, emb: Tensor) -> Tensor:
        """MAISI UNet body up to its output block: (B, C0, D, H, W). Mirrors DiffusionModelUNetMaisi.forward."""
        unet = self.unet
        feats = unet.conv_in(z)
        feats, skips = unet._apply_down_blocks(feats, emb, None, None)
        feats = unet.middle_block(feats, emb, None)
        return unet._apply_up_blocks(feats, emb, None, skips)

    def _to_velocity(self, out: Tensor, z: Tensor, t: Tensor) -> Tensor:
        if self.prediction_type == "u":
            return out
        t_safe = unsqueeze_right(t.clamp_min(self.t_min), z.ndim)  # (B,) -> (B, 1, 1, 1, 1)
        return (z - out) / t_safe  # x-prediction: u = (z_t - x_hat) / max(t, t_min)

    @staticmethod
    def _times(t: Tensor, z: Tensor) -> Tensor:
        t = torch.as_tensor(t, dtype=z.dtype, device=z.device)
        return t.expand(z.shape[0]) if t.ndim == 0 else t

    # ---- heads --------------------------------------------------------------------------------------------
    def forward(self, z: Tensor, r: Tensor, t: Tensor) -> Tensor:
        """u-head: average velocity u(z_t, r, t), (B, C, D, H, W)."""
        r, t = self._times(r, z), self._times(t, z)
        out = self.unet.out(self._features(z, self._embed(z, r, t)))
        return self._to_velocity(out, z, t)

    def u_and_v(self, z: Tensor, r: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """u(z_t, r, t) and the v-head's v_hat from ONE backbone pass at (r, t): iMF's auxiliary v-head output.

        The v-head sees the same embedding as u (t and h = t - r for `t_h`; t and r for `dual`; h for `h`), as in
        the official iMF code, whose v-head loss uses the v output of the u pass at (t, h). Its regression target
        v = eps - x does not depend on r, so its optimum E[v | z_t] is the same for every h, and at r = t it is
        exactly `v(z, t)`. Inside a forward-mode pass the v-head gets the features' primal (autograd graph kept,
        tangent dropped): v_hat is an auxiliary output, no tangent of it is computed. Without a v-head: (u, u).
        Shapes: z (B, C, D, H, W); r, t (B,); both outputs (B, C, D, H, W).
        """
        r, t = self._times(r, z), self._times(t, z)
        emb = self._embed(z, r, t)
        feats = self._features(z, emb)
        u = self._to_velocity(self.unet.out(feats), z, t)
        if self.v_head is None:
            return u, u
        v_hat = self.v_head(fwAD.unpack_dual(feats).primal, fwAD.unpack_dual(emb).primal)
        return u, self._to_velocity(v_hat, fwAD.unpack_dual(z).primal, fwAD.unpack_dual(t).primal)

    def v(self, z: Tensor, t: Tensor) -> Tensor:
        """Instantaneous velocity v_hat(z_t, t) = v-head at r = t (or the u-head at r = t without a v-head)."""
        t = self._times(t, z)
        if self.v_head is None:
            return self.forward(z, t, t)
        emb = self._embed(z, t, t)
        return self._to_velocity(self.v_head(self._features(z, emb), emb), z, t)

    # ---- weights ------------------------------------------------------------------------------------------
    def load_maisi_state_dict(self, state_dict: dict[str, Tensor], flip_velocity: bool = True) -> None:
        """Load a plain DiffusionModelUNetMaisi state dict into the backbone and u-head (strict); the v-head's output
        block gets the u-head's, so v_hat(z, t) = u(z, t, t) = the loaded network's velocity at the first step.

        MAISI's rectified-flow target is x - eps while MeanFlow's velocity is v = eps - x: with
        `flip_velocity` (u-prediction only) the output conv is negated so the u-head predicts eps - x.
        """
        self.unet.load_state_dict(state_dict, strict=True)
        if flip_velocity and self.prediction_type == "u":
            with torch.no_grad():
                for p in self.unet.out[-1].parameters():
                    p.neg_()
        if self.v_head is not None:  # v_hat starts as the loaded velocity: iMF's first tangent is MAISI's v, not 0
            self.v_head.out.load_state_dict(self.unet.out.state_dict())  # (its res blocks start as the identity)
