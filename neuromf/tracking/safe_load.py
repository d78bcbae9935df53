"""Loading the checkpoints of a run dir as data only: a checkpoint from a shared sweep dir never runs code.

Every reader of `.ckpt` files (resume checks and Lightning's own resume load, the report, the sample CLI) loads
through `load_tensors_only`: ``torch.load(weights_only=True)``, whose unpickler rebuilds tensors and plain
containers and refuses every other global, with exactly `CHECKPOINT_GLOBALS` allowed besides. A checkpoint
holding anything else (a pickle calling ``os.system``, a pickled class) is refused before any of it runs.

`CHECKPOINT_GLOBALS` is what the Lightning checkpoints written by ``python -m neuromf.train`` hold besides
tensors, ints, floats, strings, lists, dicts and None, found by listing the globals of real checkpoints (CPU
float32 and bf16-mixed runs with evaluation, best-k checkpoints, early stopping, EMA): ``collections.OrderedDict``
(state dicts); the tensor and storage rebuilds are torch's own. tests/test_security_checkpoints.py checks the
checkpoints of a fresh run against it.
"""

from __future__ import annotations

import collections
import os
import re
import warnings
from pathlib import Path
from typing import Any

CHECKPOINT_GLOBALS: tuple = (collections.OrderedDict,)


class UnsafeCheckpointError(ValueError):
    """A checkpoint that cannot be loaded as data only (unsafe globals, truncated, not a torch file): the message
    is one line naming the file."""


def _reason(err: Exception) -> str:
    text = str(err)
    if "Weights only load failed" in text or "weights_only" in text:
        refused = re.search(r"GLOBAL ([\w.]+)", text)
        if refused:
            return f"unsafe checkpoint: holds {refused.group(1)}, which a weights-only load refuses (not loaded)"
        detail = re.search(r"(Unsupported operand \d+|Unsupported class [\w.]+)", text)
        detail = detail.group(1) if detail else "unpickler error"
        return f"unsafe checkpoint: not only tensors, refused by a weights-only load ({detail}; not loaded)"
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return f"unreadable checkpoint ({type(err).__name__}: {first[:200]})"


def load_tensors_only(path: str | os.PathLike, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` with `CHECKPOINT_GLOBALS` allowed; the checkpoint (a dict).
    Raises UnsafeCheckpointError naming the file when it holds anything else or cannot be read."""
    import torch

    path = Path(path)
    try:
        with torch.serialization.safe_globals(list(CHECKPOINT_GLOBALS)), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Detected pickle protocol")  # a refused file follows
            return torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as err:  # pickle.UnpicklingError (refused global), truncated zip, not a torch file, ...
        raise UnsafeCheckpointError(f"{path}: {_reason(err)}") from err
