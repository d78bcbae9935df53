"""`python -m neuromf.encode`: NIfTI folder or CSV -> latent store (manifest, stats, latents/*.safetensors).

Examples::

    python -m neuromf.encode /data/IXI --out latents/ixi --encoder identity --latent-shape 32
    python -m neuromf.encode subjects.csv --out latents/fomo --encoder maisi \\
        --checkpoint autoencoder_epoch273.pt
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from neuromf.data.encoders import MAISI_DEFAULT_NETWORK, Encoder, EncoderError, IdentityEncoder, MaisiEncoder
from neuromf.data.io import (
    DataError,
    PreprocessConfig,
    as_3tuple,
    build_preprocess,
    is_nifti,
    load_preprocessed,
    strip_nifti_suffix,
)
from neuromf.data.store import (
    ERROR_COLUMNS,
    MANIFEST_COLUMNS,
    dataset_stats,
    manifest_row,
    read_latent,
    read_latent_metadata,
    safe_name,
    write_csv,
    write_latent,
    write_stats,
)


@dataclass
class InputItem:
    path: str
    subject: str
    dataset: str = ""
    diagnosis: str = ""


def collect_inputs(source: str | os.PathLike, dataset: str | None = None) -> list[InputItem]:
    """Folder (recursive *.nii / *.nii.gz; subject = file name without suffix, dataset = folder name) or CSV
    with columns path[,subject][,dataset][,diagnosis] (relative paths are relative to the CSV's folder)."""
    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.rglob("*") if p.is_file() and is_nifti(p) and not p.name.startswith("."))
        if not files:
            raise DataError(f"{source}: no .nii/.nii.gz files found")
        ds = dataset if dataset is not None else source.resolve().name
        return [InputItem(str(p), strip_nifti_suffix(p.name), ds, "") for p in files]
    if source.is_file() and source.suffix.lower() in (".csv", ".tsv"):
        with open(source, newline="") as f:
            reader = csv.DictReader(f, delimiter="\t" if source.suffix.lower() == ".tsv" else ",")
            cols = reader.fieldnames or []
            if "path" not in cols:
                raise DataError(
                    f"{source}: CSV needs a 'path' column (optional: subject, dataset, diagnosis); got {cols}"
                )
            items = []
            for i, r in enumerate(reader, start=2):
                p = (r.get("path") or "").strip()
                if not p:
                    raise DataError(f"{source}: line {i} has an empty path")
                pp = Path(p) if Path(p).is_absolute() else source.parent / p
                subject = (r.get("subject") or "").strip() or strip_nifti_suffix(pp.name)
                ds = (r.get("dataset") or "").strip() or (dataset or "")
                items.append(InputItem(str(pp), subject, ds, (r.get("diagnosis") or "").strip()))
        if not items:
            raise DataError(f"{source}: CSV has no rows")
        return items
    raise DataError(f"{source}: not a folder of NIfTI files nor a .csv file")


def config_hash(encoder_cfg: dict, preprocess_cfg: dict) -> str:
    blob = json.dumps({"encoder": encoder_cfg, "preprocess": preprocess_cfg}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def compute_scale_factor(rows: list[dict]) -> float:
    """1 / std of all latent values (pooled over subjects and channels)."""
    mu_c, std_c = np.array(dataset_stats(rows)[0]), np.array(dataset_stats(rows)[1])
    mu = mu_c.mean()
    var = float(np.mean(std_c**2 + mu_c**2) - mu**2)
    return 1.0 / max(np.sqrt(max(var, 0.0)), 1e-12)


@dataclass
class EncodeResult:
    out_dir: Path
    rows: list[dict]
    errors: list[dict]
    encoded: int
    skipped: int
    seconds: float
    stats: dict


def finalize_store(
    out_dir,
    rows,
    encoder_cfg: dict,
    preprocess_cfg: dict,
    scale_factor: float | str | None = None,
    errors: list[dict] | None = None,
) -> dict:
    """Write manifest.csv, stats.json (and errors.csv when ``errors`` is not None) atomically."""
    out_dir = Path(out_dir)
    if not rows:
        if errors:
            write_csv(out_dir / "errors.csv", errors, ERROR_COLUMNS)
            raise DataError(
                f"{out_dir}: no subject could be encoded ({len(errors)} errors in {out_dir / 'errors.csv'})"
            )
        raise DataError(f"{out_dir}: no subject could be encoded")
    if scale_factor == "auto":
        scale = compute_scale_factor(rows)
    else:
        scale = 1.0 if scale_factor is None else float(scale_factor)
    write_csv(out_dir / "manifest.csv", rows, MANIFEST_COLUMNS)
    if errors is not None:
        write_csv(out_dir / "errors.csv", errors, ERROR_COLUMNS)
    return write_stats(out_dir, rows, {**encoder_cfg, "scale_factor": scale}, preprocess_cfg)


def encode_dataset(
    items: list[InputItem],
    out_dir: str | os.PathLike,
    encoder: Encoder,
    preprocess: PreprocessConfig,
    on_error: str = "stop",
    force: bool = False,
    scale_factor: float | str | None = None,
    progress: bool = True,
) -> EncodeResult:
    """Encode every input -> out_dir/latents/<subject>.safetensors + manifest.csv + stats.json.

    Resumable: a latent already written with the same encoder/preprocessing settings is kept (unless
    ``force``).
    on_error: "stop" raises DataError naming the file; "skip" records it in errors.csv and goes on."""
    from tqdm import tqdm

    if on_error not in ("stop", "skip"):
        raise ValueError(f"on_error must be 'stop' or 'skip', got {on_error!r}")
    out_dir = Path(out_dir)
    (out_dir / "latents").mkdir(parents=True, exist_ok=True)
    enc_cfg, pre_cfg = encoder.config(), preprocess.to_dict()
    chash = config_hash(enc_cfg, pre_cfg)
    errors: list[dict] = []

    def fail(item: InputItem, msg: str):
        if on_error == "stop":
            raise DataError(msg)
        print(f"skipping: {msg}", file=sys.stderr)
        errors.append({"file": item.path, "subject": item.subject, "error": msg})

    # duplicate subject ids (after making them file-name safe) are an input error
    first: dict[str, InputItem] = {}
    todo: list[InputItem] = []
    for it in items:
        key = safe_name(it.subject)
        if key in first:
            fail(it, f"{it.path}: duplicate subject id {it.subject!r} (also used by {first[key].path})")
            continue
        first[key] = it
        todo.append(it)

    pipeline = build_preprocess(preprocess)
    rows, n_enc, n_skip = [], 0, 0
    t0 = time.perf_counter()
    for it in tqdm(todo, desc="encode", unit="scan", disable=not progress):
        rel = f"latents/{safe_name(it.subject)}.safetensors"
        path = out_dir / rel
        if path.exists() and not force:
            meta = read_latent_metadata(path)
            if meta.get("config_hash") != chash:
                raise DataError(
                    f"{path}: already encoded with different encoder/preprocessing settings; "
                    "use --force to re-encode or choose another --out"
                )
            latent, _ = read_latent(path)
            rows.append(manifest_row(it.subject, it.dataset, it.diagnosis, it.path, rel, latent))
            n_skip += 1
            continue
        try:
            image, affine = load_preprocessed(it.path, preprocess, pipeline)
        except DataError as e:
            fail(it, str(e))
            continue
        latent = encoder.encode(image[None])[0]
        if not torch.isfinite(latent).all():
            fail(it, f"{it.path}: encoder produced NaN/Inf latents")
            continue
        meta = {"subject": it.subject, "source_path": it.path, "encoder": encoder.name, "config_hash": chash}
        write_latent(path, latent, affine, meta)
        rows.append(manifest_row(it.subject, it.dataset, it.diagnosis, it.path, rel, latent))
        n_enc += 1
    dt = time.perf_counter() - t0
    stats = finalize_store(out_dir, rows, enc_cfg, pre_cfg, scale_factor, errors if on_error == "skip" else None)
    return EncodeResult(out_dir, rows, errors, n_enc, n_skip, dt, stats)


def _parse_scale(v: str):
    if v == "auto":
        return "auto"
    try:
        return float(v)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--scale-factor must be a number or 'auto', got {v!r}") from e


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m neuromf.encode",
        description="Encode 3D T1 NIfTI volumes into a latent store (one safetensors file per subject, "
        "manifest.csv, stats.json). Preprocessing (MONAI, nibabel reader): orientation RAS, resampling to "
        "--spacing, percentile intensity scaling to [0, 1], crop/pad to --shape. Re-running skips subjects "
        "already encoded with the same settings.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "input",
        help="folder of .nii/.nii.gz files (searched recursively) or a CSV with columns "
        "path[,subject][,dataset][,diagnosis]",
    )
    p.add_argument("--out", required=True, help="output latent directory")
    p.add_argument(
        "--encoder",
        choices=["identity", "maisi"],
        default="identity",
        help="identity: the preprocessed image (resampled to --latent-shape) as a 1-channel latent; "
        "maisi: MONAI AutoencoderKlMaisi (4 channels at 1/4 resolution)",
    )
    p.add_argument("--checkpoint", help="maisi: AutoencoderKlMaisi state-dict file (e.g. autoencoder_epoch273.pt)")
    p.add_argument(
        "--maisi-config",
        help="maisi: JSON file or JSON string overriding the AutoencoderKlMaisi "
        f"constructor arguments (default: the published MAISI autoencoder {MAISI_DEFAULT_NETWORK})",
    )
    p.add_argument("--sample", action="store_true", help="maisi: sample the posterior instead of its mean")
    p.add_argument(
        "--latent-shape",
        type=int,
        nargs="+",
        help="identity: latent grid (1 or 3 ints); default: the preprocessed --shape",
    )
    p.add_argument("--spacing", type=float, nargs="+", default=[1.0], help="target voxel spacing in mm (1 or 3)")
    p.add_argument("--shape", type=int, nargs="+", default=[192], help="crop/pad to this grid (1 or 3 ints)")
    p.add_argument(
        "--percentiles",
        type=float,
        nargs=2,
        default=[0.5, 99.5],
        help="intensity percentiles mapped to 0 and 1 (clipped)",
    )
    p.add_argument("--dataset", help="dataset name for all inputs (default: the folder name; CSV column wins)")
    p.add_argument(
        "--scale-factor",
        type=_parse_scale,
        default=None,
        help="latent scale factor recorded in stats.json: a number, or 'auto' = 1/std of the latents (default 1.0)",
    )
    p.add_argument(
        "--on-error",
        choices=["stop", "skip"],
        default="stop",
        help="bad input file: stop with a message naming it, or record it in errors.csv and go on",
    )
    p.add_argument("--force", action="store_true", help="re-encode subjects that are already encoded")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    p.add_argument("--seed", type=int, default=0, help="seed for --sample")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return p


def build_encoder_from_args(args, pre: PreprocessConfig) -> Encoder:
    if args.encoder == "identity":
        shape = as_3tuple(args.latent_shape, int) if args.latent_shape else pre.shape
        return IdentityEncoder(latent_shape=shape, image_shape=pre.shape)
    network = None
    if args.maisi_config:
        txt = args.maisi_config
        try:
            network = json.loads(Path(txt).read_text() if os.path.isfile(txt) else txt)
        except json.JSONDecodeError as e:
            raise EncoderError(f"--maisi-config {txt!r}: not valid JSON ({e})") from e
    return MaisiEncoder(args.checkpoint, network, sample=args.sample, device=args.device, seed=args.seed)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        pre = PreprocessConfig(
            spacing=as_3tuple(args.spacing, float),
            shape=as_3tuple(args.shape, int),
            percentiles=tuple(args.percentiles),
        )
        items = collect_inputs(args.input, args.dataset)
        encoder = build_encoder_from_args(args, pre)
        res = encode_dataset(
            items,
            args.out,
            encoder,
            pre,
            on_error=args.on_error,
            force=args.force,
            scale_factor=args.scale_factor,
            progress=not args.no_progress,
        )
    except (DataError, EncoderError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rate = res.encoded / res.seconds if res.seconds > 0 else float("inf")
    print(
        f"encoded {res.encoded} scans, kept {res.skipped} already encoded, {len(res.errors)} errors "
        f"in {res.seconds:.1f} s ({rate:.2f} scans/s) -> {res.out_dir}"
    )
    if res.errors:
        print(f"errors recorded in {res.out_dir / 'errors.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
