"""Offline 3D brain feature distance from deepbet's pretrained T1 network (no download needed).

deepbet (a registry package) ships a TorchScript 3D UNet (LinkNet-style, ResNet encoder, 2.1 M
parameters) trained for brain extraction on thousands of T1-weighted MRIs; its wheel installs it as
``<site-packages>/data/models/model.pt``. We use only its encoder: ``init`` (conv stride 2 + max-pool,
16 ch) and ``down0..down3`` (16, 32, 64, 128 ch at strides 4, 4, 8, 16, 32). Each stage's output is
global-average-pooled and the five vectors are concatenated into 256 features per volume; the
Frechet distance between feature sets is the "3D feature distance" (``val/feat3d_fd``).

Preprocessing (as deepbet's ``run_model`` does, adapted to whole volumes): each (1, X, Y, Z) volume is
resized (trilinear, aspect ratio kept) so its longest side is ``input_size`` and zero-padded to an
``input_size`` cube (a multiple of 32), then intensities are clipped to the 0.5/99.5 percentiles,
scaled to [0, 1] and standardised to mean 0.449, std 0.226.

What it measures: first/second moments of multi-scale T1 tissue/structure features learned for brain
segmentation — sensitive to blur, noise, broken anatomy and contrast. Limits: trained for
skull-stripping (not for perceptual similarity); features at coarse inputs (64-96^3) are far from its
training resolution (~256^3 crops); volumes must be RAS-oriented T1-weighted; 256-D features need
well over 256 samples for a full-rank covariance (with fewer, distances are biased upwards and only
comparable at equal sample sizes).
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from neuromf.evaluation.fid25d import file_sha256

__all__ = ["deepbet_model_path", "DeepBetFeatures", "ENCODER_STAGES"]

ENCODER_STAGES = ("init", "down0", "down1", "down2", "down3")
_MULTIPLE = 32  # total downsampling of the encoder


def deepbet_model_path() -> Path:
    """Path of deepbet's TorchScript model, found via the installed distribution's file list."""
    try:
        files = importlib.metadata.files("deepbet") or []
    except importlib.metadata.PackageNotFoundError as e:
        raise FileNotFoundError(
            "the 3D feature distance needs the 'deepbet' package (pip install --no-deps deepbet==1.0.2)"
        ) from e
    for f in files:
        if f.as_posix().endswith("data/models/model.pt"):
            p = Path(f.locate()).resolve()
            if p.is_file():
                return p
    raise FileNotFoundError("deepbet is installed but its data/models/model.pt is missing; reinstall deepbet")


class DeepBetFeatures(nn.Module):
    """Encoder features of deepbet's 3D T1 network: (B, 1, X, Y, Z) -> (B, 256).

    Args:
        input_size: edge of the cube the volumes are resized/padded to (multiple of 32).
        model_path: TorchScript file; default: the one installed with deepbet.
        device: where the network runs.
    """

    num_features = 16 + 16 + 32 + 64 + 128

    def __init__(self, input_size: int = 96, model_path: str | Path | None = None, device="cpu") -> None:
        super().__init__()
        if input_size % _MULTIPLE or input_size < _MULTIPLE:
            raise ValueError(f"input_size must be a positive multiple of {_MULTIPLE}, got {input_size}")
        self.input_size = int(input_size)
        self.model_path = Path(model_path) if model_path is not None else deepbet_model_path()
        net = torch.jit.load(str(self.model_path), map_location=torch.device(device))
        names = {n for n, _ in net.named_children()}
        if not set(ENCODER_STAGES) <= names or "conv" not in names:
            raise ValueError(f"{self.model_path}: unexpected deepbet network layout (children {sorted(names)})")
        self.net = net.eval()
        self.act = getattr(net.conv, "2")  # the shared ReLU the traced stages take as their first argument
        self._sha: str | None = None

    def cache_key(self) -> dict:
        if self._sha is None:
            self._sha = file_sha256(self.model_path)
        return {
            "backbone": "deepbet-encoder",
            "model_sha256": self._sha,
            "stages": list(ENCODER_STAGES),
            "pool": "gap-concat",
            "input_size": self.input_size,
            "intensity": "p0.5-p99.5->[0,1]->0.449+0.226z",
        }

    def preprocess(self, volumes: torch.Tensor) -> torch.Tensor:
        """(B, 1, X, Y, Z) any size -> (B, 1, S, S, S) with S = input_size, deepbet-normalised."""
        if volumes.dim() != 5 or volumes.shape[1] != 1:
            raise ValueError(f"volumes must be (B, 1, X, Y, Z), got {tuple(volumes.shape)}")
        s = self.input_size
        x = volumes.float()
        scale = s / max(x.shape[2:])
        size = [max(1, min(s, round(n * scale))) for n in x.shape[2:]]
        if list(x.shape[2:]) != size:
            x = F.interpolate(x, size=size, mode="trilinear", align_corners=False)
        pads = []
        for n in reversed(size):  # F.pad wants the last dim first
            pads += [(s - n) // 2, s - n - (s - n) // 2]
        flat = x.flatten(1)
        step = max(1, flat.shape[1] // 1_000_000)
        q = torch.quantile(flat[:, ::step], torch.tensor([0.005, 0.995], device=x.device), dim=1)
        lo, hi = q[0].view(-1, 1, 1, 1, 1), q[1].view(-1, 1, 1, 1, 1)
        x = ((x - lo) / (hi - lo).clamp_min(1e-8)).clamp(0, 1)
        x = F.pad(x, pads, value=0.0)  # background after scaling = 0, as deepbet's clipped inputs
        mu = x.mean(dim=(1, 2, 3, 4), keepdim=True)
        sd = x.std(dim=(1, 2, 3, 4), keepdim=True).clamp_min(1e-8)
        return 0.226 * (x - mu) / sd + 0.449

    @torch.no_grad()
    def stage_features(self, volumes: torch.Tensor) -> list[torch.Tensor]:
        """Per-stage feature maps [(B, 16, S/4, ..), (B, 16, S/4, ..), (B, 32, S/8, ..), ...]."""
        dev = next(self.net.parameters()).device
        h = self.preprocess(volumes.to(dev))
        outs = []
        h = self.net.init(self.act, h)
        outs.append(h)
        for name in ENCODER_STAGES[1:]:
            h = getattr(self.net, name)(self.act, h)
            outs.append(h)
        return outs

    @torch.no_grad()
    def forward(self, volumes: torch.Tensor) -> torch.Tensor:
        """(B, 1, X, Y, Z) -> (B, 256) float32 CPU: concatenated global-average-pooled stage outputs."""
        return torch.cat([f.mean(dim=(2, 3, 4)) for f in self.stage_features(volumes)], dim=1).float().cpu()
