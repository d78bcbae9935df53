"""Atomic file writes: a file is written to a temp file beside it and renamed into place (os.replace), so a
crash or a full disk never leaves a half-written file and a failed write keeps the previous one.

The one atomic-write helper of the project; it imports nothing from neuromf, so every layer may use it.
Hand-written: the standard library has os.replace but no write-then-rename helper.

- ``with atomic_path(path) as tmp: torch.save(x, tmp)``: any writer that takes a path.
- ``write_text_atomic(path, text)``, ``write_json_atomic(path, payload)``: text and JSON.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any


def temp_path_for(path: Path) -> Path:
    """The temp file beside `path`: `.tmp-<pid>-<name>`, the real suffix last (nibabel and matplotlib pick the
    format from it)."""
    return path.with_name(f".tmp-{os.getpid()}-{path.name}")


@contextmanager
def atomic_path(path: str | os.PathLike, tmp: str | os.PathLike | None = None) -> Iterator[Path]:
    """Yield a temp path beside `path` (its folder created) to write; on leaving the block without an error it
    replaces `path`. The temp file is removed in every case (a failure to remove it does not hide the error).

    `tmp`: the temp file to use instead of `temp_path_for(path)`, for a writer whose errors name it (the
    checkpoints' `<name>.tmp`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tmp) if tmp is not None else temp_path_for(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str, newline: str | None = None) -> Path:
    """Write `text` to `path` atomically; returns the path."""
    with atomic_path(path) as tmp, open(tmp, "w", newline=newline) as f:
        f.write(text)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, payload: Any, indent: int = 2) -> Path:
    """Write `payload` as JSON (values JSON cannot hold written as str) to `path` atomically; returns the path."""
    return write_text_atomic(path, json.dumps(payload, indent=indent, default=str))
