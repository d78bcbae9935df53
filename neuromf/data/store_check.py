"""`python -m neuromf.encode check STORE`: decode a few latents of a store back to images and show them tri-planar
next to their source scans preprocessed the way the store records, so a user sees that the latents hold the
brains (orientation, field of view, intensities, the autoencoder's reconstruction) before training on them.

Writes one PNG grid (a row per subject: decoded sagittal/coronal/axial, then the preprocessed source) and prints a
line per subject: the decoded grid, its correlation and mean absolute difference with the preprocessed source, and
whether the stored affine is the source's preprocessed grid.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from neuromf.data.encoders import EncoderError, build_encoder
from neuromf.data.io import PLANES, DataError, PreprocessConfig, central_slices, load_preprocessed, save_figure
from neuromf.data.store import LatentStore

LOW_CORRELATION = 0.9  # below this a decoded volume is flagged: it does not look like its preprocessed source


@dataclass
class CheckedSubject:
    subject: str
    decoded: np.ndarray  # (X, Y, Z)
    source: np.ndarray | None  # (X, Y, Z), the source scan preprocessed as the store records; None: not readable
    why_no_source: str = ""
    correlation: float = float("nan")
    mean_abs_diff: float = float("nan")
    same_grid: bool | None = None  # stored affine == the preprocessed source's affine

    def line(self) -> str:
        grid = "x".join(map(str, self.decoded.shape))
        head = f"{self.subject}: decoded {grid}, range [{self.decoded.min():.3g}, {self.decoded.max():.3g}]"
        if self.source is None:
            return f"{head}; source not compared ({self.why_no_source})"
        flag = "  ⚠ low: look at the image" if not self.correlation >= LOW_CORRELATION else ""
        affine = "same grid" if self.same_grid else "⚠ stored affine differs from the source's preprocessed grid"
        return (
            f"{head}; vs preprocessed source: correlation {self.correlation:.3f}, mean |diff| "
            f"{self.mean_abs_diff:.3g}, {affine}{flag}"
        )


def pick_subjects(subjects: list[str], n: int) -> list[str]:
    """``n`` subjects spread evenly over the manifest order (first and last included)."""
    if n >= len(subjects):
        return list(subjects)
    idx = np.unique(np.linspace(0, len(subjects) - 1, max(n, 1)).round().astype(int))
    return [subjects[i] for i in idx]


def check_store(store_dir: str | Path, subjects: list[str] | None = None, n: int = 4, device: str = "cpu"):
    """Decode ``subjects`` (default: ``n`` spread over the manifest) -> [CheckedSubject]."""
    store = LatentStore(Path(store_dir))
    unknown = [s for s in subjects or [] if s not in store.by_subject]
    if unknown:
        raise DataError(f"{store.root / 'manifest.csv'}: unknown subjects {unknown}")
    encoder = build_encoder(store.stats["encoder"], device=device)
    preprocess = PreprocessConfig.from_dict(store.stats.get("preprocess") or {})
    out = []
    for subject in subjects or pick_subjects(store.subjects, n):
        latent, affine = store.load(subject)
        with torch.no_grad():
            decoded = encoder.decode(latent[None].float())[0, 0].numpy()
        out.append(_compare(subject, decoded, affine, store.by_subject[subject]["source_path"], preprocess))
    return out


def _compare(subject, decoded, affine, source_path, preprocess) -> CheckedSubject:
    if not Path(source_path).is_file():
        return CheckedSubject(subject, decoded, None, why_no_source=f"{source_path} is not a file here")
    try:
        image, source_affine = load_preprocessed(source_path, preprocess)
    except DataError as e:
        return CheckedSubject(subject, decoded, None, why_no_source=str(e))
    source = image[0].numpy()
    if source.shape != decoded.shape:
        why = f"preprocessed source is {source.shape}, decoded {decoded.shape}"
        return CheckedSubject(subject, decoded, None, why_no_source=why)
    a, b = decoded.ravel().astype(np.float64), source.ravel().astype(np.float64)
    corr = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")
    return CheckedSubject(
        subject,
        decoded,
        source,
        correlation=corr,
        mean_abs_diff=float(np.abs(a - b).mean()),
        same_grid=bool(np.allclose(affine, source_affine, atol=1e-4)),
    )


def save_grid(checked: list[CheckedSubject], path: str | Path, title: str) -> Path:
    """One row per subject: decoded sagittal / coronal / axial, then the same planes of the preprocessed source."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 6 if any(c.source is not None for c in checked) else 3
    fig, axes = plt.subplots(len(checked), cols, figsize=(2.2 * cols, 2.3 * len(checked) + 0.4), squeeze=False)
    for row, c in zip(axes, checked, strict=True):
        panels = [("decoded", c.decoded)] + ([("source", c.source)] if cols == 6 else [])
        for k, (kind, volume) in enumerate(panels):
            if volume is None:
                for ax in row[3 * k : 3 * k + 3]:
                    ax.axis("off")
                row[3 * k].text(0, 0.5, "source not compared", fontsize=7, transform=row[3 * k].transAxes)
                continue
            slices, (vmin, vmax) = central_slices(volume)
            for ax, sl, plane in zip(row[3 * k : 3 * k + 3], slices, PLANES, strict=True):
                ax.imshow(sl, cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
                ax.set_title(f"{c.subject} {kind} {plane}" if plane == "sagittal" else f"{kind} {plane}", fontsize=7)
                ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m neuromf.encode check",
        description="Decode a few latents of a store with the encoder that wrote it and write a tri-planar PNG "
        "grid (decoded | source preprocessed as the store records), with a line per subject.",
    )
    p.add_argument("store", help="latent store (manifest.csv, stats.json, latents/)")
    p.add_argument("--n", type=int, default=4, help="how many subjects, spread over the manifest (default 4)")
    p.add_argument("--subjects", nargs="+", help="these subjects instead")
    p.add_argument("--out", help="PNG to write (default <store>/check.png)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    args = p.parse_args(argv)
    if args.n < 1:
        print(f"error: --n {args.n}: expected at least 1", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(args.store) / "check.png"
    try:
        checked = check_store(args.store, args.subjects, args.n, args.device)
        store = LatentStore(Path(args.store))
        enc = store.stats["encoder"]
        title = f"{args.store}: {len(store.subjects)} subjects, {enc['name']} latents {store.stats['shape']}"
        save_grid(checked, out, title)
    except (DataError, EncoderError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {out}: cannot write the check image ({e.strerror or e})", file=sys.stderr)
        return 2
    print(title)
    for c in checked:
        print(c.line())
    print(f"wrote {out}")
    return 0
