"""Shared inputs for data tests: real T1 files shipped by installed packages, copied into a temp folder."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

import nibabel as nib
import numpy as np

from neuromf.data.io import PreprocessConfig

# small grid so tests stay fast: 4 mm, 32^3 (128 mm field of view)
FAST_PRE = PreprocessConfig(spacing=(4.0, 4.0, 4.0), shape=(32, 32, 32), percentiles=(0.5, 99.5))
TINY_MAISI = dict(
    spatial_dims=3,
    in_channels=1,
    out_channels=1,
    latent_channels=4,
    num_channels=[8, 8, 8],
    num_res_blocks=[1, 1, 1],
    norm_num_groups=4,
    attention_levels=[False, False, False],
    norm_float16=False,
    num_splits=1,
    dim_split=0,
)


def anatomical_path() -> Path:
    """nibabel's small real T1 (33x41x25, 2 mm, LAS)."""
    return Path(str(resources.files("nibabel") / "tests" / "data" / "anatomical.nii"))


def real_t1_folder(dst: Path) -> Path:
    """dst/ with two real T1 volumes: nibabel's anatomical.nii and nilearn's MNI152 template (2 mm)."""
    from nilearn.datasets import load_mni152_template

    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(anatomical_path(), dst / "anatomical.nii")
    mni = load_mni152_template(resolution=2)
    nib.save(nib.Nifti1Image(np.asarray(mni.get_fdata(), np.float32), mni.affine), str(dst / "mni152.nii.gz"))
    return dst
