"""Latent store: one safetensors file per subject + manifest.csv + stats.json (+ errors.csv).

Layout (``<latent_dir>``)::

    manifest.csv   subject,dataset,diagnosis,source_path,latent_file,shape,mean,std
    stats.json     {num_subjects, channels, shape [C,D,H,W], channel_mean, channel_std, encoder, preprocess}
    latents/<subject>.safetensors   "latent" (C,D,H,W) float32, "affine" (4,4) float64
    errors.csv     file,subject,error  (only when encoding with --on-error skip)

Every file is written atomically (temp file + os.replace): a crash never leaves a half-written file.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from neuromf.data.io import DataError
from neuromf.io_atomic import atomic_path, write_text_atomic

MANIFEST_COLUMNS = ["subject", "dataset", "diagnosis", "source_path", "latent_file", "shape", "mean", "std"]
ERROR_COLUMNS = ["file", "subject", "error"]


def safe_name(subject: str) -> str:
    """File-system-safe file stem for a subject id."""
    s = re.sub(r"[^A-Za-z0-9._-]", "_", str(subject)).lstrip(".")
    if not s:
        raise DataError(f"subject id {subject!r} is empty after sanitising")
    return s


def current_umask() -> int:
    """The process umask (read from /proc where possible: setting it to read it back is not thread-safe)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_latent(path: str | os.PathLike, latent: torch.Tensor, affine: np.ndarray, metadata: dict | None = None):
    """Atomically write latent (C,D,H,W) float32 + affine (4,4) float64 (+ str metadata) to safetensors."""
    path = Path(path)
    if latent.ndim != 4:
        raise ValueError(f"write_latent({path}): expected (C,D,H,W), got {tuple(latent.shape)}")
    tensors = {
        "latent": latent.detach().to("cpu", torch.float32).contiguous(),
        "affine": torch.as_tensor(np.asarray(affine, np.float64)).contiguous(),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={k: str(v) for k, v in (metadata or {}).items()})
        os.chmod(tmp, 0o666 & ~current_umask())  # safetensors creates its files 0600; use the umask, as open() does
    return path


def read_latent(path: str | os.PathLike) -> tuple[torch.Tensor, np.ndarray]:
    """-> (latent (C,D,H,W) float32, affine (4,4) float64)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.get_tensor("latent").float(), f.get_tensor("affine").double().numpy()
    except Exception as e:
        raise DataError(f"{path}: cannot read latent file ({type(e).__name__}: {e})") from e


def read_latent_metadata(path: str | os.PathLike) -> dict:
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception:
        return {}


def fmt_floats(values) -> str:
    return ";".join(f"{float(v):.8g}" for v in values)


def parse_floats(s: str) -> list[float]:
    return [float(v) for v in str(s).split(";") if v != ""]


def fmt_shape(shape) -> str:
    return "x".join(str(int(s)) for s in shape)


def parse_shape(s: str) -> tuple[int, ...]:
    return tuple(int(v) for v in str(s).split("x"))


def manifest_row(subject, dataset, diagnosis, source_path, latent_file, latent: torch.Tensor) -> dict:
    flat = latent.double().reshape(latent.shape[0], -1)
    return {
        "subject": subject,
        "dataset": dataset or "",
        "diagnosis": diagnosis or "",
        "source_path": str(source_path),
        "latent_file": latent_file,
        "shape": fmt_shape(latent.shape),
        "mean": fmt_floats(flat.mean(1).tolist()),
        "std": fmt_floats(flat.std(1, unbiased=False).tolist()),
    }


def write_csv(path: str | os.PathLike, rows: list[dict], columns: list[str]) -> Path:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return write_text_atomic(path, buf.getvalue())


def read_manifest(latent_dir: str | os.PathLike) -> list[dict]:
    path = Path(latent_dir) / "manifest.csv"
    if not path.is_file():
        raise DataError(f"{path}: manifest not found (encode data with `python -m neuromf.encode` first)")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in MANIFEST_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: missing columns {missing}")
        rows = list(reader)
    seen = set()
    for r in rows:
        if r["subject"] in seen:
            raise DataError(f"{path}: duplicate subject {r['subject']!r}")
        seen.add(r["subject"])
    return rows


def dataset_stats(rows: list[dict]) -> tuple[list[float], list[float]]:
    """Pooled per-channel mean/std over all voxels of all subjects (from per-subject mean/std)."""
    means = np.array([parse_floats(r["mean"]) for r in rows], np.float64)  # (N, C)
    stds = np.array([parse_floats(r["std"]) for r in rows], np.float64)
    mu = means.mean(0)
    var = (stds**2 + means**2).mean(0) - mu**2
    return mu.tolist(), np.sqrt(np.maximum(var, 0.0)).tolist()


def write_stats(latent_dir, rows: list[dict], encoder_cfg: dict, preprocess_cfg: dict, extra: dict | None = None):
    shapes = {r["shape"] for r in rows}
    if len(shapes) > 1:
        raise DataError(f"{latent_dir}: latents have different shapes {sorted(shapes)}")
    shape = list(parse_shape(next(iter(shapes)))) if shapes else []
    mean, std = dataset_stats(rows) if rows else ([], [])
    stats = {
        "num_subjects": len(rows),
        "channels": shape[0] if shape else 0,
        "shape": shape,
        "channel_mean": mean,
        "channel_std": std,
        "encoder": encoder_cfg,
        "preprocess": preprocess_cfg,
        **(extra or {}),
    }
    write_text_atomic(Path(latent_dir) / "stats.json", json.dumps(stats, indent=2))
    return stats


def read_stats(latent_dir: str | os.PathLike) -> dict:
    path = Path(latent_dir) / "stats.json"
    if not path.is_file():
        raise DataError(f"{path}: stats.json not found (incomplete latent store?)")
    stats = json.loads(path.read_text())
    for k in ("shape", "channel_mean", "channel_std", "encoder"):
        if k not in stats:
            raise DataError(f"{path}: missing key {k!r}")
    return stats


@dataclass
class LatentStore:
    """Read access to a latent directory."""

    root: Path

    def __post_init__(self):
        self.root = Path(self.root)
        self.rows = read_manifest(self.root)
        self.stats = read_stats(self.root)
        self.by_subject = {r["subject"]: r for r in self.rows}

    @property
    def subjects(self) -> list[str]:
        return [r["subject"] for r in self.rows]

    def path(self, subject: str) -> Path:
        return self.root / self.by_subject[subject]["latent_file"]

    def load(self, subject: str) -> tuple[torch.Tensor, np.ndarray]:
        return read_latent(self.path(subject))


def config_hash(encoder_cfg: dict, preprocess_cfg: dict) -> str:
    """The 16-hex-digit identity of an encoder + preprocessing config (in every latent's metadata)."""
    blob = json.dumps({"encoder": encoder_cfg, "preprocess": preprocess_cfg}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def compute_scale_factor(rows: list[dict]) -> float:
    """1 / std of all latent values (pooled over subjects and channels)."""
    mu_c, std_c = np.array(dataset_stats(rows)[0]), np.array(dataset_stats(rows)[1])
    mu = mu_c.mean()
    var = float(np.mean(std_c**2 + mu_c**2) - mu**2)
    return 1.0 / max(np.sqrt(max(var, 0.0)), 1e-12)


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
