"""Checkpoints written atomically: a crash mid-write never leaves a truncated last.ckpt that a resume would take."""

from __future__ import annotations

import os
from pathlib import Path

from pytorch_lightning.plugins.io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO that writes to `<path>.tmp` and renames it into place (os.replace is atomic)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        super().save_checkpoint(checkpoint, tmp, storage_options)
        os.replace(tmp, path)
