"""Demo latent store built from real T1 volumes shipped by installed packages (no download).

Sources (each one is a ``dataset`` value, so dataset x diagnosis stratification is real):
  * ``mni152``   nilearn's MNI152 2009c template, ``nilearn.datasets.load_mni152_template(resolution=1)``
  * ``pydeface`` pydeface's mean head, ``pydeface/data/mean_reg2mean.nii.gz``
Each source is preprocessed once (RAS, 3 mm, 64^3, percentile scaling) and expanded into many distinct
"subjects" by seeded MONAI random transforms at that low resolution (Rand3DElastic with affine,
RandBiasField, RandAdjustContrast).
``diagnosis`` is SYNTHETIC: "atrophy" subjects get an extra global shrink of the head (2-10 %),
"control" subjects do not.
Variants: small = 48 subjects, 1x32^3 identity latents (CPU demo); large = 256 subjects, 1x64^3 (GPU demo).

    python -m neuromf.data.demo [--variant small|large] [--out DIR] [--force]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from neuromf.data.encoders import IdentityEncoder
from neuromf.data.io import PreprocessConfig, _preprocess_array, save_triplanar_png
from neuromf.data.store import config_hash, finalize_store, manifest_row, write_latent

VARIANTS: dict[str, dict] = {
    "small": {"n_subjects": 48, "latent_shape": (32, 32, 32)},
    "large": {"n_subjects": 256, "latent_shape": (64, 64, 64)},
}
DIAGNOSES = ("control", "atrophy")
# random transforms run on this grid (192 mm field of view); the identity encoder then resamples it
DEMO_PREPROCESS = PreprocessConfig(spacing=(3.0, 3.0, 3.0), shape=(64, 64, 64), percentiles=(0.5, 99.5))


def data_home() -> Path:
    return Path(os.environ.get("NEUROMF_DATA_HOME") or Path.home() / ".cache" / "neuromf")


def demo_dir(variant: str = "small") -> Path:
    """Default latent dir: $NEUROMF_DATA_HOME (or ~/.cache/neuromf)/demo/<variant>/latents."""
    _check_variant(variant)
    return data_home() / "demo" / variant / "latents"


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown demo variant {variant!r}; choose one of {sorted(VARIANTS)}")


def load_sources() -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """-> [(dataset, source, data (X,Y,Z) float32, affine (4,4))] of the packaged real T1 volumes."""
    import nibabel as nib
    from nilearn.datasets import load_mni152_template

    mni = load_mni152_template(resolution=1)
    out = [
        (
            "mni152",
            "nilearn.datasets.load_mni152_template(resolution=1)",
            np.asarray(mni.get_fdata(), np.float32),
            np.asarray(mni.affine),
        )
    ]
    head = resources.files("pydeface") / "data" / "mean_reg2mean.nii.gz"
    if not head.is_file():
        raise FileNotFoundError(f"pydeface's mean head not found at {head}; install pydeface (pip install pydeface)")
    img = nib.load(str(head))
    out.append(("pydeface", str(head), np.asarray(img.get_fdata(), np.float32), np.asarray(img.affine)))
    return out


def subject_transforms(atrophy: bool):
    """Seeded MONAI random transforms for one synthetic subject on a (1, 64, 64, 64) image in [0, 1]."""
    from monai.transforms import (
        Compose,
        Rand3DElastic,
        RandAdjustContrast,
        RandBiasField,
        ScaleIntensity,
    )

    # one resampling: random rotation/translation/scale + elastic field; "atrophy" (synthetic diagnosis)
    # shifts the scale range up: a larger sampling grid makes the head appear 2-10 % smaller
    scale = ((0.02, 0.10),) * 3 if atrophy else ((-0.05, 0.05),) * 3
    ts = [
        Rand3DElastic(
            sigma_range=(6, 8),
            magnitude_range=(20, 60),
            prob=1.0,
            rotate_range=(0.08, 0.08, 0.08),
            scale_range=scale,
            translate_range=(2, 2, 2),
            padding_mode="zeros",
        ),
        RandBiasField(prob=1.0, degree=3, coeff_range=(0.05, 0.2)),
        RandAdjustContrast(prob=1.0, gamma=(0.8, 1.25)),
        ScaleIntensity(minv=0.0, maxv=1.0),
    ]
    return Compose(ts)


def build_demo(
    out_dir: str | os.PathLike,
    variant: str = "small",
    n_subjects: int | None = None,
    seed: int = 0,
    progress: bool = False,
    previews: int = 4,
) -> Path:
    """Build a demo latent store into ``out_dir`` (written in a temp dir beside it, then renamed: atomic).

    Returns out_dir. Raises FileExistsError if out_dir already holds a store."""
    from tqdm import tqdm

    _check_variant(variant)
    spec = VARIANTS[variant]
    n = int(n_subjects or spec["n_subjects"])
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out_dir.name}-", dir=out_dir.parent))
    try:
        encoder = IdentityEncoder(latent_shape=spec["latent_shape"], image_shape=DEMO_PREPROCESS.shape)
        sources = [(ds, desc, _preprocess_array(data, aff, DEMO_PREPROCESS)) for ds, desc, data, aff in load_sources()]
        pre_cfg = PreprocessConfig.from_dict(
            {
                **DEMO_PREPROCESS.to_dict(),
                "demo": {
                    "variant": variant,
                    "seed": seed,
                    "n_subjects": n,
                    "diagnosis": "synthetic (atrophy = extra global shrink)",
                },
            }
        ).to_dict()
        enc_cfg = encoder.config()
        chash = config_hash(enc_cfg, pre_cfg)
        transforms = {d: subject_transforms(d == "atrophy") for d in DIAGNOSES}
        rows = []
        for i in tqdm(range(n), desc=f"demo[{variant}]", unit="subject", disable=not progress):
            ds, desc, base = sources[i % len(sources)]
            diagnosis = DIAGNOSES[(i // len(sources)) % len(DIAGNOSES)]
            t = transforms[diagnosis]
            t.set_random_state(seed=(seed * 1_000_003 + i) % (2**32))
            image = torch.as_tensor(t(base.as_tensor().clone()), dtype=torch.float32)  # plain tensor: grid unchanged
            latent = encoder.encode(image[None])[0]
            subject = f"{ds}-{i:04d}"
            rel = f"latents/{subject}.safetensors"
            write_latent(
                tmp / rel,
                latent,
                np.asarray(base.affine, np.float64),
                {"subject": subject, "source_path": desc, "encoder": "identity", "config_hash": chash},
            )
            rows.append(manifest_row(subject, ds, diagnosis, desc, rel, latent))
            if i < previews:
                save_triplanar_png(image, tmp / "previews" / f"{subject}.png", title=f"{subject} ({diagnosis})")
        finalize_store(tmp, rows, enc_cfg, pre_cfg, scale_factor=1.0)
        if out_dir.exists() and any(out_dir.iterdir()):
            raise FileExistsError(f"{out_dir} already exists")
        if out_dir.exists():
            out_dir.rmdir()
        os.rename(tmp, out_dir)  # atomic publish; fails if another process published first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def ensure_demo(
    variant: str = "small",
    out_dir: str | os.PathLike | None = None,
    force: bool = False,
    progress: bool = False,
) -> Path:
    """Return the demo latent dir, building it first if missing (safe with concurrent processes)."""
    out = Path(out_dir) if out_dir is not None else demo_dir(variant)
    if force and out.exists():
        trash = out.with_name(f".trash-{out.name}-{os.getpid()}")
        os.rename(out, trash)
        shutil.rmtree(trash, ignore_errors=True)
    if (out / "stats.json").is_file() and (out / "manifest.csv").is_file():
        return out
    try:
        return build_demo(out, variant, progress=progress)
    except (FileExistsError, OSError):
        if (out / "stats.json").is_file():  # another process won the race
            return out
        raise


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m neuromf.data.demo",
        description="Build the demo latent store from real T1 volumes shipped by nilearn "
        "and pydeface (no download), expanded by seeded MONAI random transforms.",
    )
    p.add_argument(
        "--variant",
        choices=sorted(VARIANTS),
        default="small",
        help="small: 48 subjects, 1x32^3 (CPU); large: 256 subjects, 1x64^3 (GPU)",
    )
    p.add_argument("--out", help=f"latent dir (default: {demo_dir('small').parent.parent}/<variant>/latents)")
    p.add_argument("--force", action="store_true", help="rebuild even if it exists")
    args = p.parse_args(argv)
    out = Path(args.out) if args.out else demo_dir(args.variant)
    if (out / "stats.json").is_file() and not args.force:
        print(f"demo data ({args.variant}) already at {out} (use --force to rebuild)")
        return 0
    t0 = time.perf_counter()
    ensure_demo(args.variant, out, force=args.force, progress=True)
    print(f"wrote demo data ({args.variant}) to {out} in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
