"""On-disk cache of real-data feature statistics (mean/cov) or tensors, keyed by dataset + preprocessing + backbone.

A key is any JSON-serialisable dict, e.g. ``{"dataset": ..., "preprocessing": ..., "backbone": ...}``;
its SHA-256 names the file ``<cache_dir>/<backbone name>-<hash16>.safetensors`` (tensors ``<name>/mu``,
``<name>/sigma``, ``<name>/n``, or any named tensors with ``get_or_compute_tensors``; the full key JSON in
the metadata and checked on load). Changing any part of the key gives another file, so stale statistics are never
reused. Writes are atomic (temp + rename).
Default directory: ``$NEUROMF_CACHE_HOME/eval_stats`` or ``~/.cache/neuromf/eval_stats``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from neuromf.evaluation.frechet import FeatureStats
from neuromf.io_atomic import atomic_path

__all__ = ["StatsCache", "default_cache_dir", "tensor_fingerprint"]

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    base = os.environ.get("NEUROMF_CACHE_HOME")
    return (Path(base) if base else Path.home() / ".cache" / "neuromf") / "eval_stats"


def tensor_fingerprint(t: torch.Tensor) -> str:
    """SHA-256 (16 hex) of a tensor's shape, dtype and bytes — identifies a reference data set."""
    t = t.detach().cpu().contiguous()
    h = hashlib.sha256(f"{tuple(t.shape)}|{t.dtype}".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def _canonical(key: dict) -> str:
    return json.dumps(key, sort_keys=True, default=str, separators=(",", ":"))


class StatsCache:
    """Cache of ``{name: FeatureStats}`` per key. ``hits`` / ``misses`` count lookups (memory or disk)."""

    def __init__(self, cache_dir: str | Path | None = None) -> None:
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.hits = 0
        self.misses = 0
        self._memory: dict[str, dict[str, FeatureStats]] = {}

    def path(self, key: dict) -> Path:
        digest = hashlib.sha256(_canonical(key).encode()).hexdigest()[:16]
        name = key.get("backbone", {})
        name = name.get("backbone", "stats") if isinstance(name, dict) else str(name)
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "stats"
        return self.cache_dir / f"{safe}-{digest}.safetensors"

    def _read(self, key: dict) -> dict[str, torch.Tensor] | None:
        """The tensors stored for exactly ``key`` (file checked against the key), or None."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            log.warning("ignoring unreadable statistics cache %s (%s)", path, e)
            return None
        if meta.get("key") != _canonical(key):
            log.warning("statistics cache %s holds another key; recomputing", path)
            return None
        return tensors

    def load(self, key: dict) -> dict[str, FeatureStats] | None:
        """Statistics stored for exactly ``key``, or None."""
        canon = _canonical(key)
        if canon in self._memory:
            return self._memory[canon]
        tensors = self._read(key)
        if tensors is None:
            return None
        names = sorted({k.rsplit("/", 1)[0] for k in tensors})
        stats = {n: FeatureStats.from_tensors({p: tensors[f"{n}/{p}"] for p in ("mu", "sigma", "n")}) for n in names}
        self._memory[canon] = stats
        return stats

    def save(self, key: dict, stats: dict[str, FeatureStats]) -> Path:
        """Write atomically (temp file + os.replace); returns the path."""
        tensors = {f"{n}/{p}": t for n, s in stats.items() for p, t in s.to_tensors().items()}
        path = self._write(key, tensors)
        self._memory[_canonical(key)] = stats
        return path

    def _write(self, key: dict, tensors: dict[str, torch.Tensor]) -> Path:
        path = self.path(key)
        with atomic_path(path) as tmp:
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                str(tmp),
                metadata={"key": _canonical(key)},
            )
        return path

    def get_or_compute(self, key: dict, compute: Callable[[], dict[str, FeatureStats]]) -> dict[str, FeatureStats]:
        """Cached statistics for ``key``; on a miss call ``compute()``, store and return its result."""
        stats = self.load(key)
        if stats is not None:
            self.hits += 1
            return stats
        self.misses += 1
        stats = compute()
        try:
            self.save(key, stats)
        except OSError as e:  # a read-only cache must not stop training
            log.warning("could not write statistics cache under %s (%s)", self.cache_dir, e)
            self._memory[_canonical(key)] = stats
        return stats

    def get_or_compute_tensors(
        self, key: dict, compute: Callable[[], dict[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        """Like :meth:`get_or_compute` for a plain ``{name: tensor}`` dict (features, reference levels)."""
        canon = _canonical(key)
        tensors = self._memory.get(canon)
        if tensors is None:
            tensors = self._read(key)
        if tensors is not None:
            self.hits += 1
            self._memory[canon] = tensors
            return tensors
        self.misses += 1
        tensors = compute()
        try:
            self._write(key, tensors)
        except OSError as e:  # a read-only cache must not stop training
            log.warning("could not write statistics cache under %s (%s)", self.cache_dir, e)
        self._memory[canon] = tensors
        return tensors
