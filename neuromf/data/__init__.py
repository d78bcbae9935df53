"""Brain MRI data: NIfTI IO, preprocessing, encoders, latent store, split, augmentation, masking, demo data.

Heavy submodules are imported lazily so ``import neuromf.data`` stays cheap.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "LatentDataModule": "neuromf.data.datamodule",
    "LatentDataset": "neuromf.data.datamodule",
    "LatentStore": "neuromf.data.store",
    "DataError": "neuromf.data.io",
    "PreprocessConfig": "neuromf.data.io",
    "Encoder": "neuromf.data.encoders",
    "EncoderError": "neuromf.data.encoders",
    "IdentityEncoder": "neuromf.data.encoders",
    "MaisiEncoder": "neuromf.data.encoders",
    "build_encoder": "neuromf.data.encoders",
    "stratified_split": "neuromf.data.split",
    "build_augmentation": "neuromf.data.augmentation",
    "random_spatial_mask": "neuromf.data.masking",
    "demo_dir": "neuromf.data.demo",
    "ensure_demo": "neuromf.data.demo",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'neuromf.data' has no attribute {name!r}")
