"""Latent augmentation (off by default), applied to single latents (C, D, H, W) in the training loader.

Config dict (all keys optional)::

    enabled: false            # master switch; false/None/{} -> build_augmentation returns None
    noise_std: 0.0            # Gaussian noise std; relative to each channel's data std when calibrate_to_data
    calibrate_to_data: true   # noise std per channel = noise_std * channel_std (dataset per-channel std)
    noise_prob: 1.0           # probability of adding noise to a sample
    flip_lr_prob: 0.0         # probability of a left-right flip (RAS: first spatial axis, tensor dim 1)

Draws are deterministic: each sample's flip and noise come from a generator seeded with (seed, epoch, sample index),
so they depend only on which sample in which epoch. A resumed run (mid-epoch included) and DataLoader worker
processes see the same draws as one process trained straight through; nothing needs checkpointing.

Deprecated keys raise an error that names the replacement (see DEPRECATED_KEYS).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.utils import unsqueeze_right

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
    """Callable (z (C, D, H, W), index) -> (C, D, H, W): optional left-right flip then per-channel Gaussian noise.

    The draws for sample ``index`` come from a generator seeded with (seed, epoch, index); ``set_epoch`` (called by
    the training loader at each pass's start, in the main process) writes the epoch to a shared-memory tensor, so
    worker processes, persistent ones included, see it."""

    def __init__(
        self,
        noise_std: Sequence[float] | torch.Tensor,
        noise_prob: float = 1.0,
        flip_lr_prob: float = 0.0,
        seed: int = 0,
    ):
        self.noise_std = torch.as_tensor(noise_std, dtype=torch.float32).flatten()  # (C,)
        self.noise_prob = float(noise_prob)
        self.flip_lr_prob = float(flip_lr_prob)
        self.seed = int(seed)
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    def generator(self, index: int) -> torch.Generator:
        """The generator of sample ``index`` in the current epoch (a fresh one each call: same draws each time)."""
        entropy = [self.seed % 2**63, self.epoch, int(index)]
        return torch.Generator().manual_seed(int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]))

    def __call__(self, z: torch.Tensor, index: int) -> torch.Tensor:
        if z.ndim != 4 or z.shape[0] != self.noise_std.numel():
            raise ValueError(f"augmentation expects (C={self.noise_std.numel()}, D, H, W), got {tuple(z.shape)}")
        g = self.generator(index)
        u_flip, u_noise = torch.rand(2, generator=g).tolist()  # both drawn always: each decision has its own
        if self.flip_lr_prob > 0 and u_flip < self.flip_lr_prob:
            z = torch.flip(z, dims=(1,))
        if self.noise_prob > 0 and bool((self.noise_std > 0).any()) and u_noise < self.noise_prob:
            # hand-written: MONAI's RandGaussianNoise has one std for all channels; here one per channel
            noise = torch.randn(z.shape, generator=g, dtype=torch.float32)
            z = z + noise.to(z.dtype) * unsqueeze_right(self.noise_std.to(z.dtype), 4)
        return z

    def __repr__(self) -> str:
        return (
            f"LatentAugmentation(noise_std={self.noise_std.tolist()}, noise_prob={self.noise_prob}, "
            f"flip_lr_prob={self.flip_lr_prob}, seed={self.seed})"
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
    cfg: dict | None, channel_std: Sequence[float] | torch.Tensor, seed: int = 0
) -> LatentAugmentation | None:
    """-> LatentAugmentation, or None when disabled (``enabled`` false, or nothing to do).

    channel_std: (C,) per-channel std of the latents the augmentation will see (calibration target);
    seed: with the epoch and the sample index, seeds each sample's draws."""
    cfg = validate_config(cfg)
    if not cfg["enabled"]:
        return None
    std = torch.as_tensor(channel_std, dtype=torch.float32).flatten()
    noise = float(cfg["noise_std"]) * (std if cfg["calibrate_to_data"] else torch.ones_like(std))
    if float(cfg["noise_std"]) == 0 and float(cfg["flip_lr_prob"]) == 0:
        return None
    return LatentAugmentation(noise, cfg["noise_prob"], cfg["flip_lr_prob"], seed)
