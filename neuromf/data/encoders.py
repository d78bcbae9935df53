"""Image <-> latent encoders.

An encoder maps preprocessed images (B, 1, X, Y, Z) to latents (B, C, D, H, W) and back. Two exist:
  * ``identity``: the image itself, resampled to ``latent_shape`` (C = 1); decode resamples back
    to ``image_shape``.
  * ``maisi``: MONAI's AutoencoderKlMaisi (C = 4 at 1/4 resolution) loaded from a user checkpoint.
``build_encoder(stats["encoder"])`` rebuilds the encoder that wrote a latent store, so the rest of the
system never
needs to know which one was used.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import torch

# The published MAISI autoencoder (MONAI model zoo "maisi_ct_generative", config_maisi.json: autoencoder_def).
MAISI_DEFAULT_NETWORK: dict = {
    "spatial_dims": 3,
    "in_channels": 1,
    "out_channels": 1,
    "latent_channels": 4,
    "num_channels": [64, 128, 256],
    "num_res_blocks": [2, 2, 2],
    "norm_num_groups": 32,
    "norm_eps": 1e-06,
    "attention_levels": [False, False, False],
    "with_encoder_nonlocal_attn": False,
    "with_decoder_nonlocal_attn": False,
    "use_checkpointing": False,
    "use_convtranspose": False,
    "norm_float16": True,
    "num_splits": 8,
    "dim_split": 1,
}


class EncoderError(RuntimeError):
    """Encoder cannot be built (missing/mismatched checkpoint, bad config)."""


class Encoder:
    """Base class. ``encode`` (B,1,X,Y,Z) -> (B,C,D,H,W); ``decode`` (B,C,D,H,W) -> (B,1,X,Y,Z)."""

    name: str = "base"
    latent_channels: int = 1

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def config(self) -> dict:
        """JSON-serialisable config; ``build_encoder(config)`` rebuilds the encoder."""
        raise NotImplementedError


def _resample(x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    if tuple(x.shape[2:]) == tuple(shape):
        return x
    from monai.transforms import Resize

    # MONAI Resize works per item (C, ...); area mode anti-aliases when shrinking, trilinear when enlarging
    shrink = all(s <= t for s, t in zip(shape, x.shape[2:], strict=True))
    rs = Resize(spatial_size=tuple(shape), mode="area" if shrink else "trilinear")
    return torch.stack([torch.as_tensor(rs(xi)) for xi in x]).float()


class IdentityEncoder(Encoder):
    """The preprocessed image as a 1-channel latent, resampled to ``latent_shape`` (None: unchanged)."""

    name = "identity"
    latent_channels = 1

    def __init__(self, latent_shape: Sequence[int] | None = None, image_shape: Sequence[int] | None = None):
        self.latent_shape = tuple(int(s) for s in latent_shape) if latent_shape is not None else None
        self.image_shape = tuple(int(s) for s in image_shape) if image_shape is not None else None

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        _check_5d(images, "images")
        if self.image_shape is None:
            self.image_shape = tuple(images.shape[2:])
        return images.float() if self.latent_shape is None else _resample(images.float(), self.latent_shape)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        _check_5d(latents, "latents")
        if latents.shape[1] != 1:
            raise EncoderError(f"identity decoder expects 1-channel latents, got shape {tuple(latents.shape)}")
        target = self.image_shape or tuple(latents.shape[2:])
        return _resample(latents.float(), target)

    def config(self) -> dict:
        return {
            "name": self.name,
            "latent_shape": list(self.latent_shape) if self.latent_shape else None,
            "image_shape": list(self.image_shape) if self.image_shape else None,
        }


def _check_5d(x: torch.Tensor, what: str) -> None:
    if x.ndim != 5:
        raise ValueError(f"{what}: expected (B, C, D, H, W), got shape {tuple(x.shape)}")


def load_maisi_autoencoder(checkpoint: str | os.PathLike, network: dict | None = None, device: str = "cpu"):
    """Build AutoencoderKlMaisi(**network) and load ``checkpoint`` (raw state dict or one wrapped in
    'state_dict' / 'model' / 'autoencoder' / 'unet_state_dict'; 'module.' prefixes are stripped).
    Raises EncoderError naming the file when it is missing, unreadable or does not match the config."""
    from monai.apps.generation.maisi.networks.autoencoderkl_maisi import AutoencoderKlMaisi

    net_cfg = {**MAISI_DEFAULT_NETWORK, **(network or {})}
    if checkpoint is None or str(checkpoint) == "":
        raise EncoderError("the maisi encoder needs --checkpoint (an AutoencoderKlMaisi state dict file)")
    checkpoint = str(checkpoint)
    if not os.path.isfile(checkpoint):
        raise EncoderError(f"MAISI checkpoint not found: {checkpoint}")
    try:
        obj = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as e:
        raise EncoderError(f"MAISI checkpoint {checkpoint} cannot be read ({type(e).__name__}: {e})") from e
    for key in ("state_dict", "model", "autoencoder", "model_state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise EncoderError(f"MAISI checkpoint {checkpoint} does not hold a state dict of tensors")
    state = {k.removeprefix("module."): v for k, v in obj.items()}
    try:
        net = AutoencoderKlMaisi(**net_cfg)
    except Exception as e:
        raise EncoderError(f"invalid AutoencoderKlMaisi config {net_cfg}: {e}") from e
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs network {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(own[k].shape) != tuple(state[k].shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})")
        if wrong:
            parts.append(f"{len(wrong)} shape mismatches (e.g. {wrong[:3]})")
        raise EncoderError(
            f"MAISI checkpoint {checkpoint} does not match the AutoencoderKlMaisi config "
            f"(num_channels={net_cfg['num_channels']}, latent_channels={net_cfg['latent_channels']}): "
            + "; ".join(parts)
            + ". Pass the matching network config with --maisi-config."
        )
    net.load_state_dict(state, strict=True)
    return net.to(device).eval(), net_cfg


class MaisiEncoder(Encoder):
    """MONAI AutoencoderKlMaisi. Latents: posterior mean (``sample=False``) or a posterior sample."""

    name = "maisi"

    def __init__(
        self,
        checkpoint: str,
        network: dict | None = None,
        sample: bool = False,
        device: str = "cpu",
        seed: int = 0,
    ):
        self.checkpoint = str(checkpoint)
        self.device = device
        self.sample = bool(sample)
        self.net, self.network = load_maisi_autoencoder(checkpoint, network, device)
        self.latent_channels = int(self.network["latent_channels"])
        self._gen = torch.Generator(device="cpu").manual_seed(seed)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        _check_5d(images, "images")
        z_mu, z_sigma = self.net.encode(images.float().to(self.device))
        if self.sample:
            eps = torch.randn(z_mu.shape, generator=self._gen).to(z_mu)
            z_mu = z_mu + z_sigma * eps
        return z_mu.float().cpu()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        _check_5d(latents, "latents")
        if latents.shape[1] != self.latent_channels:
            raise EncoderError(f"MAISI decoder expects {self.latent_channels} channels, got {tuple(latents.shape)}")
        return self.net.decode(latents.float().to(self.device)).float().cpu()

    def config(self) -> dict:
        return {
            "name": self.name,
            "checkpoint": self.checkpoint,
            "network": self.network,
            "sample": self.sample,
        }


def build_encoder(config: dict, device: str = "cpu") -> Encoder:
    """Rebuild an encoder from its ``config()`` (e.g. ``stats.json["encoder"]``)."""
    name = config.get("name")
    if name == "identity":
        return IdentityEncoder(config.get("latent_shape"), config.get("image_shape"))
    if name == "maisi":
        return MaisiEncoder(config.get("checkpoint"), config.get("network"), bool(config.get("sample", False)), device)
    raise EncoderError(f"unknown encoder {name!r} (expected 'identity' or 'maisi'); config: {json.dumps(config)}")
