"""Subject-level train/val/test split stratified by dataset x diagnosis (default 85/10/5), seeded.

Hand-written: per-stratum largest-remainder allocation keeps every split within one subject of its target
fraction in every stratum (sklearn's train_test_split does 2-way splits and needs >=2 members per class).
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from neuromf.data.io import DataError
from neuromf.io_atomic import write_text_atomic

SPLIT_NAMES = ("train", "val", "test")


def resolve_ratios(split: Sequence[float] | None = (0.85, 0.10, 0.05), split_ratio: float | None = None):
    """3-way ratios; the legacy 2-way ``split_ratio`` (train fraction) wins: 0.9 -> (0.9, 0.1, 0.0)."""
    if split_ratio is not None:
        r = float(split_ratio)
        if not 0.0 < r <= 1.0:
            raise ValueError(f"split_ratio must be in (0, 1], got {split_ratio}")
        return (r, 1.0 - r, 0.0)
    split = tuple(float(x) for x in (split if split is not None else (0.85, 0.10, 0.05)))
    if len(split) == 2:
        split = (*split, 0.0)
    if len(split) != 3 or any(x < 0 for x in split) or sum(split) <= 0:
        raise ValueError(f"split must be 3 non-negative fractions (train, val, test), got {split}")
    s = sum(split)
    return tuple(x / s for x in split)


def allocate(n: int, ratios: Sequence[float]) -> list[int]:
    """Largest-remainder counts: each |count_k - n*ratio_k| < 1 and sum == n (ties -> earlier split)."""
    exact = [n * r for r in ratios]
    counts = [int(np.floor(e)) for e in exact]
    rest = n - sum(counts)
    order = sorted(range(len(ratios)), key=lambda k: (-(exact[k] - counts[k]), k))
    for k in order[:rest]:
        counts[k] += 1
    return counts


def stratified_split(rows: list[dict], ratios=(0.85, 0.10, 0.05), seed: int = 0) -> dict[str, list[str]]:
    """rows: dicts with 'subject', 'dataset', 'diagnosis' -> {"train": [...], "val": [...], "test": [...]}."""
    ratios = resolve_ratios(ratios)
    strata: dict[tuple[str, str], list[str]] = defaultdict(list)
    seen = set()
    for r in rows:
        s = r["subject"]
        if s in seen:
            raise DataError(f"duplicate subject {s!r} in manifest")
        seen.add(s)
        strata[(r.get("dataset") or "", r.get("diagnosis") or "")].append(s)
    rng = np.random.default_rng(seed)
    out = {k: [] for k in SPLIT_NAMES}
    for key in sorted(strata):
        subjects = sorted(strata[key])
        perm = [subjects[i] for i in rng.permutation(len(subjects))]
        counts = allocate(len(perm), ratios)
        start = 0
        for name, c in zip(SPLIT_NAMES, counts, strict=True):
            out[name].extend(perm[start : start + c])
            start += c
    return {k: sorted(v) for k, v in out.items()}


def save_split(path: str | os.PathLike, split: dict, ratios, seed: int) -> Path:

    payload = {"split_seed": seed, "ratios": list(ratios), **{k: list(split[k]) for k in SPLIT_NAMES}}
    return write_text_atomic(path, json.dumps(payload, indent=2))


def load_split(path: str | os.PathLike, known_subjects: Sequence[str]) -> dict[str, list[str]]:
    """Read split.json; error (naming the file) if it lists subjects absent from the manifest or leaks."""
    path = Path(path)
    data = json.loads(path.read_text())
    missing_keys = [k for k in SPLIT_NAMES if k not in data]
    if missing_keys:
        raise DataError(f"{path}: missing keys {missing_keys}")
    known = set(known_subjects)
    absent = sorted({s for k in SPLIT_NAMES for s in data[k]} - known)
    if absent:
        raise DataError(
            f"{path}: {len(absent)} subjects are not in the manifest (e.g. {absent[:5]}); "
            "this split belongs to another latent store"
        )
    seen: dict[str, str] = {}
    for k in SPLIT_NAMES:
        for s in data[k]:
            if s in seen:
                raise DataError(f"{path}: subject {s!r} is in both {seen[s]!r} and {k!r}")
            seen[s] = k
    return {k: list(data[k]) for k in SPLIT_NAMES}
