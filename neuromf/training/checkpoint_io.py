"""Checkpoints that are safe to resume from.

Writing (`AtomicCheckpointIO`): a checkpoint is written to `<path>.tmp` and renamed into place (os.replace is
atomic: neuromf/io_atomic.py), so a crash mid-write never leaves a truncated last.ckpt. A checkpoint whose weights
(trained, EMA) or optimizer state hold NaN/Inf is not written at all: a diverging run keeps its last finite
last.ckpt. The previous last.ckpt is kept as last.prev.ckpt (a hard link, no copy), the fallback when last.ckpt is
unreadable. A write that fails (permissions, disk full) raises `CheckpointWriteError` naming the file and the OS
error.

Reading (`validate_checkpoint`, `find_resume_checkpoint`): a checkpoint is loaded as data only
(neuromf/tracking/safe_load.py: tensors, no code) and checked (a Lightning checkpoint with finite weights) before a
run resumes from it; an unreadable or unsafe last.ckpt falls back to the newest readable checkpoint in the same
folder. Lightning's own resume load goes through `AtomicCheckpointIO.load_checkpoint`, data only as well.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from neuromf.io_atomic import atomic_path
from neuromf.tracking.safe_load import UnsafeCheckpointError, load_tensors_only

log = logging.getLogger(__name__)

WEIGHT_KEYS = ("state_dict", "current_model_state", "optimizer_states")  # state_dict: EMA weights under EMA


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (permissions, disk full, ...): the message names the file."""

    def __str__(self) -> str:
        return str(self.strerror if self.strerror is not None else self.args[-1])  # without "[Errno N]"


class CheckpointReadError(Exception):
    """A checkpoint cannot be resumed from (truncated, not a Lightning checkpoint, non-finite weights)."""


def nonfinite_tensors(checkpoint: dict, keys=WEIGHT_KEYS, limit: int = 5) -> list[str]:
    """Names (e.g. 'state_dict/net.conv.weight') of up to `limit` floating tensors holding NaN/Inf."""
    bad: list[str] = []

    def walk(obj, name: str) -> None:
        if len(bad) >= limit:
            return
        if isinstance(obj, torch.Tensor):
            if obj.is_floating_point() and not bool(torch.isfinite(obj).all()):
                bad.append(name)
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f"{name}/{k}")
        elif isinstance(obj, list | tuple):
            for i, v in enumerate(obj):
                walk(v, f"{name}/{i}")

    for key in keys:
        if key in checkpoint:
            walk(checkpoint[key], key)
    return bad


class _WriteErrorKeeper:
    """A file object that keeps the OSError of a failed write: torch.save reports it as a RuntimeError of its zip
    writer ('enforce fail at inline_container.cc ... unexpected pos') that no longer says the disk is full."""

    def __init__(self, f) -> None:
        self._f = f
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return self._f.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def __getattr__(self, name: str):
        return getattr(self._f, name)


def _save_local(checkpoint: dict, path: Path) -> None:
    """torch.save to a local file, fsynced. (Lightning's _atomic_save swallows a PermissionError.) A failed write
    raises its OSError (errno, strerror, path)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw:
        f = _WriteErrorKeeper(raw)
        try:
            torch.save(checkpoint, f)
        except RuntimeError as err:
            if f.error is None:
                raise
            raise OSError(f.error.errno, f.error.strerror, str(path)) from err
        raw.flush()
        os.fsync(raw.fileno())


def _tmp_for(path: Path) -> Path:
    """`<name>.tmp` beside `path`: the temp file a checkpoint is written to (named in a failed write's error)."""
    return path.with_name(path.name + ".tmp")


def _write_error(path: Path, err: OSError) -> CheckpointWriteError:
    reason = err.strerror or str(err)
    return CheckpointWriteError(
        err.errno, f"cannot write checkpoint {path}: {reason} (fix the permissions or free space, then re-run)"
    )


class AtomicCheckpointIO(TorchCheckpointIO):
    """TorchCheckpointIO writing `<path>.tmp` then renaming it into place, refusing non-finite checkpoints.

    `written`: path -> global step of the last checkpoint written there; `refused`: (path, step, bad tensors)
    of the checkpoints not written because they were not finite."""

    def __init__(self, keep_previous_last: bool = True) -> None:
        super().__init__()
        self.keep_previous_last = keep_previous_last
        self.written: dict[str, int] = {}
        self.refused: list[tuple[str, int, list[str]]] = []

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        path = Path(path)
        step = int(checkpoint.get("global_step", -1))
        bad = nonfinite_tensors(checkpoint)
        if bad:
            self.refused.append((str(path), step, bad))
            kept = f"keeps step {self.written[str(path)]}" if str(path) in self.written else "is left as it was"
            log.warning(
                "checkpoint at step %d not written: non-finite values in %s; %s %s",
                step,
                ", ".join(bad),
                path.name,
                kept,
            )
            return
        tmp = _tmp_for(path)  # the file a failed write names
        try:
            with atomic_path(path, tmp=tmp):  # temp files removed on any error
                _save_local(checkpoint, tmp)
                if self.keep_previous_last and path.name == "last.ckpt" and path.is_file():
                    prev = path.with_name("last.prev.ckpt")
                    with atomic_path(prev, tmp=_tmp_for(prev)) as prev_tmp:
                        prev_tmp.unlink(missing_ok=True)  # left by a killed process: os.link would fail
                        os.link(path, prev_tmp)
        except OSError as err:
            failed = Path(err.filename) if getattr(err, "filename", None) else path
            raise _write_error(failed, err) from err
        except RuntimeError as err:  # torch.save reports a failed write of its zip file as a RuntimeError
            raise CheckpointWriteError(None, f"cannot write checkpoint {tmp}: {err}") from err
        self.written[str(path)] = step

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        """Lightning's resume load, data only (`load_tensors_only`) whatever `weights_only` Lightning passes."""
        try:
            return load_tensors_only(path, map_location=map_location or "cpu")
        except UnsafeCheckpointError as err:
            raise CheckpointReadError(str(err)) from err


def validate_checkpoint(path: str | os.PathLike) -> dict:
    """Load `path` (memory-mapped, data only) and check it is a Lightning checkpoint with finite weights.
    Returns {'path', 'global_step', 'epoch'}; raises CheckpointReadError saying what is wrong."""
    path = Path(path)
    try:
        ckpt = load_tensors_only(path, mmap=True)
    except UnsafeCheckpointError as err:  # truncated zip, not a torch file, a pickle of anything but tensors
        raise CheckpointReadError(str(err)) from err
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "global_step" not in ckpt:
        raise CheckpointReadError(f"{path}: not a Lightning checkpoint (no state_dict / global_step)")
    bad = nonfinite_tensors(ckpt)
    if bad:
        raise CheckpointReadError(f"{path}: holds non-finite values ({', '.join(bad)})")
    info = {"path": str(path), "global_step": int(ckpt["global_step"]), "epoch": int(ckpt.get("epoch", -1))}
    return {**info, "run_record": ckpt.get("neuromf_run")}  # the config + data store it was trained with


def find_resume_checkpoint(ckpt_dir: str | os.PathLike) -> tuple[dict | None, list[str]]:
    """The checkpoint a run in `ckpt_dir` resumes from: last.ckpt when readable, else the newest readable of
    last.prev.ckpt and best-*.ckpt (by global step). Returns (info or None, problems with the ones skipped);
    (None, []) when there is no checkpoint at all."""
    ckpt_dir = Path(ckpt_dir)
    last = ckpt_dir / "last.ckpt"
    problems: list[str] = []
    if last.exists():
        try:
            return validate_checkpoint(last), problems
        except CheckpointReadError as err:
            problems.append(str(err))
    others = [ckpt_dir / "last.prev.ckpt", *sorted(ckpt_dir.glob("best-*.ckpt"))]
    readable = []
    for path in others:
        if not path.is_file():
            continue
        try:
            readable.append(validate_checkpoint(path))
        except CheckpointReadError as err:
            problems.append(str(err))
    if readable:
        return max(readable, key=lambda c: (c["global_step"], os.path.getmtime(c["path"]))), problems
    return None, problems
