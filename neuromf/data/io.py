"""NIfTI input/output: validated loading, MONAI preprocessing, atomic NIfTI writing, tri-planar PNG previews.

Images inside NeuroMF are channel-first tensors (1, X, Y, Z) in RAS orientation; their world position is the
(4, 4) affine of the preprocessed grid (so a decoded volume overlays the original scan in any viewer).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from neuromf.io_atomic import atomic_path

NIFTI_SUFFIXES = (".nii", ".nii.gz")


class DataError(ValueError):
    """Bad input data; the message always names the offending file or key."""


def is_nifti(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def strip_nifti_suffix(name: str) -> str:
    for suf in (".nii.gz", ".nii"):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return name


@dataclass
class PreprocessConfig:
    """Preprocessing of a raw T1 volume (defaults suit MAISI: 1 mm, 192^3 -> 4x48^3 latents)."""

    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    shape: tuple[int, int, int] = (192, 192, 192)
    percentiles: tuple[float, float] = (0.5, 99.5)
    intensity_range: tuple[float, float] = (0.0, 1.0)
    orientation: str = "RAS"
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("extra")
        d.update(self.extra)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessConfig:
        known = {"spacing", "shape", "percentiles", "intensity_range", "orientation"}
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in known}
        return cls(**kw, extra={k: v for k, v in d.items() if k not in known})


def check_nifti(path: str | os.PathLike) -> None:
    """Validate a NIfTI file before preprocessing.

    Raises DataError (naming the file) for: missing/unreadable/truncated file, 4D image (several volumes),
    NaN/Inf voxels, empty image (no voxels, or all voxels equal).
    """
    path = str(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found")
    try:
        img = nib.load(path)
    except Exception as e:  # nibabel raises many types for bad headers
        raise DataError(f"{path}: not a readable NIfTI file ({type(e).__name__}: {e})") from e
    shape = tuple(int(s) for s in img.shape)
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise DataError(f"{path}: expected a 3D image, got shape {shape} (4D/time series images are not supported)")
    if min(shape) == 0:
        raise DataError(f"{path}: empty image (shape {shape})")
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as e:  # truncated gzip / short data block
        raise DataError(f"{path}: cannot read voxel data, file truncated or corrupt ({type(e).__name__}: {e})") from e
    if not np.all(np.isfinite(data)):
        n_bad = int(np.size(data) - np.count_nonzero(np.isfinite(data)))
        raise DataError(f"{path}: {n_bad} NaN/Inf voxels")
    if float(np.max(data)) == float(np.min(data)):
        raise DataError(f"{path}: empty image (all voxels equal {float(np.min(data))})")


def build_preprocess(cfg: PreprocessConfig):
    """MONAI pipeline: path -> MetaTensor (1, *cfg.shape) in RAS, cfg.spacing, percentile-scaled."""
    from monai.data import NibabelReader
    from monai.transforms import (
        Compose,
        EnsureChannelFirst,
        EnsureType,
        LoadImage,
        Orientation,
        ResizeWithPadOrCrop,
        ScaleIntensityRangePercentiles,
        Spacing,
    )

    lo, hi = cfg.percentiles
    b_min, b_max = cfg.intensity_range
    return Compose(
        [
            LoadImage(reader=NibabelReader(), image_only=True),
            EnsureChannelFirst(channel_dim="no_channel"),
            EnsureType(dtype=torch.float32),
            Orientation(axcodes=cfg.orientation, labels=(("L", "R"), ("P", "A"), ("I", "S"))),
            Spacing(pixdim=tuple(cfg.spacing), mode="bilinear"),
            ScaleIntensityRangePercentiles(lower=lo, upper=hi, b_min=b_min, b_max=b_max, clip=True),
            ResizeWithPadOrCrop(spatial_size=tuple(cfg.shape)),
        ]
    )


def load_preprocessed(path: str | os.PathLike, cfg: PreprocessConfig, pipeline=None) -> tuple[torch.Tensor, np.ndarray]:
    """Validate and preprocess one file -> (image (1, *cfg.shape) float32, affine (4, 4) float64)."""
    check_nifti(path)
    pipeline = pipeline or build_preprocess(cfg)
    squeeze4d = len(nib.load(str(path)).shape) == 4
    try:
        if squeeze4d:  # (X, Y, Z, 1): drop the singleton time axis before MONAI sees it
            img = nib.load(str(path))
            x = _preprocess_array(np.asanyarray(img.dataobj)[..., 0], img.affine, cfg)
        else:
            x = pipeline(str(path))
    except Exception as e:
        raise DataError(f"{path}: preprocessing failed ({type(e).__name__}: {e})") from e
    affine = np.asarray(x.affine, dtype=np.float64)
    return torch.as_tensor(x.as_tensor() if hasattr(x, "as_tensor") else x, dtype=torch.float32), affine


def _preprocess_array(data: np.ndarray, affine: np.ndarray, cfg: PreprocessConfig):
    from monai.data import MetaTensor

    pipe = build_preprocess(cfg).transforms[3:]  # skip loading / channel / dtype
    x = MetaTensor(torch.as_tensor(np.asarray(data, np.float32))[None], affine=torch.as_tensor(affine))
    for t in pipe:
        x = t(x)
    return x


def save_nifti(image: torch.Tensor | np.ndarray, affine: np.ndarray, path: str | os.PathLike) -> Path:
    """Write (X, Y, Z) or (1, X, Y, Z) image with the given affine atomically (temp + os.replace)."""
    path = Path(path)
    arr = image.detach().cpu().float().numpy() if isinstance(image, torch.Tensor) else np.asarray(image, np.float32)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3:
        raise ValueError(f"save_nifti({path}): expected (X,Y,Z) or (1,X,Y,Z), got {arr.shape}")
    img = nib.Nifti1Image(arr.astype(np.float32), np.asarray(affine, np.float64))
    img.set_qform(np.asarray(affine, np.float64), code=1)
    img.set_sform(np.asarray(affine, np.float64), code=1)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp))
    return path


def save_triplanar_png(image: torch.Tensor | np.ndarray, path: str | os.PathLike, title: str | None = None) -> Path:
    """Three central slices (sagittal, coronal, axial) of a (X,Y,Z) or (1,X,Y,Z) RAS image -> PNG (atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    slices, (vmin, vmax) = central_slices(image)
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
    for ax, sl, name in zip(axes, slices, PLANES, strict=True):
        ax.imshow(sl, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


PLANES = ("sagittal", "coronal", "axial")


def central_slices(image: torch.Tensor | np.ndarray) -> tuple[list[np.ndarray], tuple[float, float]]:
    """The central sagittal, coronal and axial slices of a (X,Y,Z) or (1,X,Y,Z) RAS image, rotated so that
    superior / anterior point up, and its (0.5, 99.5) percentile display range."""
    arr = image.detach().cpu().float().numpy() if isinstance(image, torch.Tensor) else np.asarray(image, np.float32)
    while arr.ndim > 3:
        arr = arr[0]
    cx, cy, cz = (s // 2 for s in arr.shape)
    slices = [np.rot90(arr[cx, :, :]), np.rot90(arr[:, cy, :]), np.rot90(arr[:, :, cz])]
    vmin, vmax = float(np.percentile(arr, 0.5)), float(np.percentile(arr, 99.5))
    return slices, (vmin, vmax if vmax > vmin else vmin + 1)


def save_figure(fig, path: str | os.PathLike, dpi: int = 80) -> Path:
    """Write a matplotlib figure to a PNG atomically (temp + os.replace) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    return path


def as_3tuple(v: Sequence | float | int, cast=float) -> tuple:
    if isinstance(v, (int, float)):
        return (cast(v),) * 3
    v = tuple(cast(x) for x in v)
    if len(v) == 1:
        return v * 3
    if len(v) != 3:
        raise ValueError(f"expected 1 or 3 values, got {v}")
    return v
