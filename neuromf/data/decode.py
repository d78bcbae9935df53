"""Latents -> NIfTI (+ tri-planar PNG) with the encoder's inverse and the subject's affine.

python -m neuromf.data.decode <latent_dir> [--subjects S1 S2 ...] --out <dir>
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from neuromf.data.encoders import Encoder, EncoderError, build_encoder
from neuromf.data.io import DataError, save_nifti, save_triplanar_png
from neuromf.data.store import LatentStore


def save_decoded(
    latent: torch.Tensor, encoder: Encoder, affine: np.ndarray, out_stem: str | Path, title: str | None = None
) -> tuple[Path, Path]:
    """latent (C,D,H,W) in encoder space -> <out_stem>.nii.gz (decoded, given affine) + <out_stem>.png."""
    out_stem = Path(out_stem)
    if latent.ndim != 4:
        raise ValueError(f"save_decoded: expected (C,D,H,W), got {tuple(latent.shape)}")
    image = encoder.decode(latent[None].float())[0]  # (1, X, Y, Z)
    nii = save_nifti(image, affine, out_stem.with_name(out_stem.name + ".nii.gz"))
    png = save_triplanar_png(image, out_stem.with_name(out_stem.name + ".png"), title=title)
    return nii, png


def decode_store(
    latent_dir: str | Path, out_dir: str | Path, subjects: list[str] | None = None, device: str = "cpu"
) -> list[tuple[Path, Path]]:
    store = LatentStore(Path(latent_dir))
    encoder = build_encoder(store.stats["encoder"], device=device)
    subjects = subjects or store.subjects
    unknown = [s for s in subjects if s not in store.by_subject]
    if unknown:
        raise DataError(f"{latent_dir}/manifest.csv: unknown subjects {unknown}")
    out = []
    for s in subjects:
        z, affine = store.load(s)
        out.append(save_decoded(z, encoder, affine, Path(out_dir) / store.path(s).stem, title=s))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m neuromf.data.decode",
        description="Decode latents of a latent store to NIfTI + tri-planar PNG previews.",
    )
    p.add_argument("latent_dir", help="latent store (manifest.csv, stats.json, latents/)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--subjects", nargs="*", help="subjects to decode (default: all)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    try:
        paths = decode_store(args.latent_dir, args.out, args.subjects, args.device)
    except (DataError, EncoderError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"decoded {len(paths)} latents -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
