"""Latent augmentation (off by default), applied to single latents (C, D, H, W) in the training loader.

Config dict (all keys optional)::

    enabled: false            # master switch; false/None/{} -> build_augmentation returns None
    noise_std: 0.0            # Gaussian noise std; relative to each channel's data std when calibrate_to_data
    calibrate_to_data: true   # noise std per channel = noise_std * channel_std (dataset per-channel std)
    noise_prob: 1.0           # probability of adding noise to a sample
    flip_lr_prob: 0.0         # probability of a left-right flip (RAS: first spatial axis, tensor dim 1)

Deprecated keys raise an error that names the replacement (see DEPRECATED_KEYS).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

DEFAULTS = {
    "enabled": False,
    "noise_std": 0.0,
    "calibrate_to_data": True,
    "noise_prob": 1.0,
    "flip_lr_prob": 0.0,
}

DEPRECATED_KEYS = {
    "use_augmentation": "enabled",
    "augment": "enabled",
    "noise_std_abs": "noise_std with calibrate_to_data: false",
    "noise_std_rel": "noise_std with calibrate_to_data: true",
    "gaussian_noise_std": "noise_std",
    "noise_p": "noise_prob",
    "flip_prob": "flip_lr_prob",
    "flip_axes": "flip_lr_prob (only left-right flips are allowed: other flips break brain anatomy)",
}


class LatentAugmentation:
    """Callable (C, D, H, W) -> (C, D, H, W): optional left-right flip then per-channel Gaussian noise."""

    def __init__(
        self,
        noise_std: Sequence[float] | torch.Tensor,
        noise_prob: float = 1.0,
        flip_lr_prob: float = 0.0,
        generator: torch.Generator | None = None,
    ):
        self.noise_std = torch.as_tensor(noise_std, dtype=torch.float32).flatten()  # (C,)
        self.noise_prob = float(noise_prob)
        self.flip_lr_prob = float(flip_lr_prob)
        self.generator = generator

    def _rand(self) -> float:
        return float(torch.rand((), generator=self.generator))

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        if z.ndim != 4 or z.shape[0] != self.noise_std.numel():
            raise ValueError(f"augmentation expects (C={self.noise_std.numel()}, D, H, W), got {tuple(z.shape)}")
        if self.flip_lr_prob > 0 and self._rand() < self.flip_lr_prob:
            z = torch.flip(z, dims=(1,))
        if self.noise_prob > 0 and bool((self.noise_std > 0).any()) and self._rand() < self.noise_prob:
            # hand-written: MONAI's RandGaussianNoise has one std for all channels; here one per channel
            noise = torch.randn(z.shape, generator=self.generator, dtype=torch.float32)
            z = z + noise.to(z.dtype) * self.noise_std.to(z.dtype).view(-1, 1, 1, 1)
        return z

    def __repr__(self) -> str:
        return (
            f"LatentAugmentation(noise_std={self.noise_std.tolist()}, noise_prob={self.noise_prob}, "
            f"flip_lr_prob={self.flip_lr_prob})"
        )


def validate_config(cfg: dict | None) -> dict:
    """Merge with defaults; deprecated keys -> ValueError naming the replacement; unknown -> ValueError."""
    cfg = dict(cfg or {})
    for old, new in DEPRECATED_KEYS.items():
        if old in cfg:
            raise ValueError(f"augmentation key {old!r} was removed; use {new!r} instead")
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown augmentation keys {unknown}; allowed: {sorted(DEFAULTS)}")
    out = {**DEFAULTS, **cfg}
    if float(out["noise_std"]) < 0:
        raise ValueError(f"augmentation noise_std must be >= 0, got {out['noise_std']}")
    for k in ("noise_prob", "flip_lr_prob"):
        if not 0.0 <= float(out[k]) <= 1.0:
            raise ValueError(f"augmentation {k} must be in [0, 1], got {out[k]}")
    return out


def build_augmentation(
    cfg: dict | None, channel_std: Sequence[float] | torch.Tensor, generator: torch.Generator | None = None
) -> LatentAugmentation | None:
    """-> LatentAugmentation, or None when disabled (``enabled`` false, or nothing to do).

    channel_std: (C,) per-channel std of the latents the augmentation will see (calibration target)."""
    cfg = validate_config(cfg)
    if not cfg["enabled"]:
        return None
    std = torch.as_tensor(channel_std, dtype=torch.float32).flatten()
    noise = float(cfg["noise_std"]) * (std if cfg["calibrate_to_data"] else torch.ones_like(std))
    if float(cfg["noise_std"]) == 0 and float(cfg["flip_lr_prob"]) == 0:
        return None
    return LatentAugmentation(noise, cfg["noise_prob"], cfg["flip_lr_prob"], generator)
