"""2.5D FID: Frechet distance of ResNet-50 slice features per anatomical plane, and their mean.

Volumes are (B, 1, X, Y, Z) in RAS orientation (nibabel canonical): sagittal slices are taken along X
(dim 2), coronal along Y (dim 3), axial along Z (dim 4). Each volume is min-max scaled to [0, 1]
(robust: 0.5/99.5 percentiles), slices are replicated to 3 channels and normalised by
``normalization``:

* ``"imagenet"`` (default): RGB, ``(x - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]``;
* ``"caffe"``: RGB->BGR and subtract ``[0.406, 0.456, 0.485]`` without scaling — the preprocessing of the
  Keras RadImageNet models as used in MONAI's generative-model FID tutorials.

The backbone is MONAI's ``resnet50(spatial_dims=2)`` (global-average-pooled 2048 features) with
weights from a user file (``eval.fid.weights=...``): a torchvision-layout state dict, or a RadImageNet
PyTorch port in the Keras layout (biases in all convolutions, stride in the first 1x1 convolution of
each bottleneck, BatchNorm eps 1.001e-5) — detected from the keys and rebuilt to match exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.nets import resnet50
from monai.networks.nets.resnet import ResNetBottleneck

from neuromf.evaluation.frechet import FeatureStats, feature_stats, frechet_distance

__all__ = [
    "PLANES",
    "extract_slices",
    "load_resnet50",
    "file_sha256",
    "FID25D",
]

PLANES = {"sagittal": 2, "coronal": 3, "axial": 4}  # spatial dim of (B, 1, X, Y, Z) sliced through
_PREFIXES = ("module.", "backbone.", "model.", "encoder.", "net.", "resnet.", "radnet.", "features.")
_MEANS = {"imagenet": (0.485, 0.456, 0.406), "caffe": (0.406, 0.456, 0.485)}
_STDS = {"imagenet": (0.229, 0.224, 0.225), "caffe": (1.0, 1.0, 1.0)}


def extract_slices(volumes: torch.Tensor, plane: str, central_fraction: float = 1.0) -> torch.Tensor:
    """Slices of (B, 1, X, Y, Z) volumes through ``plane`` -> (B * S, 1, h, w).

    sagittal -> (B*S, 1, Y, Z) with S slices of X; coronal -> (B*S, 1, X, Z); axial -> (B*S, 1, X, Y).
    ``central_fraction`` in (0, 1] keeps the central ``round(fraction * n)`` slices (at least 1).
    """
    if plane not in PLANES:
        raise ValueError(f"unknown plane {plane!r}; choose from {sorted(PLANES)}")
    if volumes.dim() != 5 or volumes.shape[1] != 1:
        raise ValueError(f"volumes must be (B, 1, X, Y, Z), got {tuple(volumes.shape)}")
    if not 0 < central_fraction <= 1:
        raise ValueError(f"central_fraction must be in (0, 1], got {central_fraction}")
    dim = PLANES[plane]
    n = volumes.shape[dim]
    keep = max(1, round(central_fraction * n))
    start = (n - keep) // 2
    v = volumes.narrow(dim, start, keep).movedim(dim, 1)  # (B, S, 1, h, w)
    return v.reshape(-1, 1, *v.shape[3:])


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file (identifies the backbone weights in cache keys)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 — re-raised with the file name
        raise ValueError(
            f"eval.fid.weights: cannot read {path} as a PyTorch state dict ({type(e).__name__}: {e}); "
            "save the RadImageNet ResNet-50 weights with torch.save(model.state_dict(), path)"
        ) from e
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"eval.fid.weights: {path} does not hold a state dict of tensors")
    return obj


def _strip_prefixes(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    changed = True
    while changed:
        changed = False
        for pre in _PREFIXES:
            if sd and all(k.startswith(pre) for k in sd):
                sd = {k[len(pre) :]: v for k, v in sd.items()}
                changed = True
    return sd


def _to_keras_layout(model: nn.Module) -> None:
    """Rebuild MONAI's ResNet-50 in place to the Keras/RadImageNet layout (conv biases, stride in conv1)."""
    for mod in model.modules():
        if isinstance(mod, nn.Conv2d) and mod.bias is None:
            mod.bias = nn.Parameter(torch.zeros(mod.out_channels))
        if isinstance(mod, nn.BatchNorm2d):
            mod.eps = 1.001e-5
        if isinstance(mod, ResNetBottleneck) and mod.conv2.stride != (1, 1):
            mod.conv1.stride, mod.conv2.stride = mod.conv2.stride, (1, 1)


def load_resnet50(weights: str | Path) -> nn.Module:
    """MONAI ResNet-50 (2D, 3 input channels, pooled 2048 features, eval mode) with weights from a file.

    Raises FileNotFoundError when the file is missing and ValueError (naming the file and the offending
    keys) when its state dict does not match a ResNet-50.
    """
    path = Path(weights).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"eval.fid.weights: ResNet-50 weights file not found: {path} (give a RadImageNet ResNet-50 state "
            "dict; 2.5D FID needs it, or leave eval.fid.weights unset to skip FID)"
        )
    sd = _strip_prefixes(_read_state_dict(path))
    sd = {k: v for k, v in sd.items() if not k.startswith("fc.")}  # classification head unused
    model = resnet50(spatial_dims=2, n_input_channels=3, conv1_t_stride=2, feed_forward=False, bias_downsample=False)
    if "conv1.bias" in sd or "layer1.0.conv1.bias" in sd:
        _to_keras_layout(model)
    own = model.state_dict()
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    wrong = [
        f"{k}: {tuple(sd[k].shape)} != {tuple(own[k].shape)}" for k in own if k in sd and sd[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        raise ValueError(
            f"eval.fid.weights: {path} is not a ResNet-50 state dict: {len(missing)} missing keys "
            f"{missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}, shape mismatches {wrong[:5]}"
        )
    model.load_state_dict(sd, strict=False)  # only num_batches_tracked may be absent (checked above)
    return model.eval().requires_grad_(False)


def _robust_unit_range(volumes: torch.Tensor) -> torch.Tensor:
    """Per-volume scaling of (B, 1, X, Y, Z) to [0, 1] between the 0.5 and 99.5 percentiles."""
    flat = volumes.flatten(1).float()
    step = max(1, flat.shape[1] // 1_000_000)  # torch.quantile size limit; a strided subsample suffices
    q = torch.quantile(flat[:, ::step], torch.tensor([0.005, 0.995], device=flat.device), dim=1)  # (2, B)
    lo, hi = q[0].view(-1, 1, 1, 1, 1), q[1].view(-1, 1, 1, 1, 1)
    return ((volumes.float() - lo) / (hi - lo).clamp_min(1e-8)).clamp(0, 1)


class FID25D:
    """2.5D FID with a ResNet-50 slice backbone.

    Args:
        weights: path of the ResNet-50 state dict (RadImageNet).
        planes: planes to evaluate (subset of sagittal, coronal, axial).
        central_fraction: fraction of central slices kept per plane.
        normalization: "imagenet" or "caffe" (see module docstring).
        slice_size: resize slices to (slice_size, slice_size) bilinearly; None keeps the native size.
        batch_size: slices per backbone forward pass.
        device: where the backbone runs.
    """

    def __init__(
        self,
        weights: str | Path,
        planes: Iterable[str] = ("axial", "coronal", "sagittal"),
        central_fraction: float = 1.0,
        normalization: str = "imagenet",
        slice_size: int | None = None,
        batch_size: int = 64,
        device: str | torch.device = "cpu",
    ) -> None:
        self.planes = tuple(planes)
        for p in self.planes:
            if p not in PLANES:
                raise ValueError(f"unknown plane {p!r}; choose from {sorted(PLANES)}")
        if normalization not in _MEANS:
            raise ValueError(f"normalization must be one of {sorted(_MEANS)}, got {normalization!r}")
        self.weights = Path(weights)
        self.model = load_resnet50(weights)
        self.central_fraction = float(central_fraction)
        self.normalization = normalization
        self.slice_size = slice_size
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.model.to(self.device)
        self._sha: str | None = None

    def to(self, device: str | torch.device) -> FID25D:
        """Move the backbone to ``device`` (returns self)."""
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    def cache_key(self) -> dict:
        """What determines the features (for the real-statistics cache)."""
        if self._sha is None:
            self._sha = file_sha256(self.weights)
        return {
            "backbone": "monai-resnet50-2d",
            "weights_sha256": self._sha,
            "planes": list(self.planes),
            "central_fraction": self.central_fraction,
            "normalization": self.normalization,
            "slice_size": self.slice_size,
            "intensity": "p0.5-p99.5->[0,1]",
        }

    def _prep(self, slices: torch.Tensor) -> torch.Tensor:
        x = slices.repeat(1, 3, 1, 1)
        if self.normalization == "caffe":
            x = x[:, [2, 1, 0]]
        mean = torch.tensor(_MEANS[self.normalization], device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(_STDS[self.normalization], device=x.device).view(1, 3, 1, 1)
        if self.slice_size is not None:
            x = F.interpolate(x, size=(self.slice_size, self.slice_size), mode="bilinear", align_corners=False)
        return (x - mean) / std

    @torch.no_grad()
    def features(self, volumes: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 1, X, Y, Z) -> {plane: (B * S_plane, 2048) float32 CPU features}."""
        v = _robust_unit_range(volumes.to(self.device))
        out = {}
        for plane in self.planes:
            s = extract_slices(v, plane, self.central_fraction)
            feats = [
                self.model(self._prep(s[i : i + self.batch_size])).float().cpu()
                for i in range(0, len(s), self.batch_size)
            ]
            out[plane] = torch.cat(feats)
        return out

    def stats(self, feature_batches: Iterable[dict[str, torch.Tensor]]) -> dict[str, FeatureStats]:
        """Concatenate per-batch feature dicts and summarise per plane."""
        acc: dict[str, list[torch.Tensor]] = {p: [] for p in self.planes}
        for fb in feature_batches:
            for p in self.planes:
                acc[p].append(fb[p])
        return {p: feature_stats(torch.cat(acc[p])) for p in self.planes}

    @staticmethod
    def distance(fake: dict[str, FeatureStats], real: dict[str, FeatureStats]) -> dict[str, float]:
        """{"fid_<plane>": ..., "fid_mean": ...} from per-plane statistics."""
        res = {f"fid_{p}": frechet_distance(fake[p], real[p]) for p in fake}
        res["fid_mean"] = sum(res.values()) / len(res)
        return res
