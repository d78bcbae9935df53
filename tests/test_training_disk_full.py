"""A full disk, for real: a small tmpfs mounted for the test (needs root and `mount`; skipped without them, CI
runs as root). Both a new run dir on a full disk and a checkpoint write that runs out of space are one error line
naming the path and "No space left on device", exit 2, with the earlier checkpoint intact."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from test_training_faults import SMALL, cli, one_error_line
from training_helpers import tiny_cfg

from neuromf.tracking.run import read_status
from neuromf.train import train
from neuromf.training.checkpoint_io import validate_checkpoint


@pytest.fixture
def tmpfs(tmp_path):
    """mount(size_kib) -> a tmpfs of that size (unmounted after the test)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) to mount a small tmpfs")
    mounted: list[Path] = []

    def mount(size_kib: int) -> Path:
        point = tmp_path / f"tmpfs{len(mounted)}"
        point.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(point)],
                              capture_output=True, text=True)  # fmt: skip
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", str(point)], check=False)


def _fill(directory: Path) -> None:
    """Write zeros into directory/fill until the filesystem is full."""
    fd = os.open(directory / "fill", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:  # ENOSPC: full
        pass
    finally:
        os.close(fd)


def test_a_new_run_dir_on_a_full_disk_is_one_line_naming_the_path(tmpfs):
    disk = tmpfs(64)
    _fill(disk)
    run = disk / "run"
    proc = cli(run, "trainer.max_epochs=1")
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = one_error_line(proc.stderr)
    assert line.startswith(f"error: cannot write {run}/") and "No space left on device" in line, line


@pytest.mark.slow
def test_a_checkpoint_write_on_a_full_disk_is_one_line_and_keeps_the_earlier_checkpoint(tmp_path, tmpfs):
    """The tmpfs holds one checkpoint and the run's small files, not a second checkpoint beside it."""
    sized = tmp_path / "sized"
    train(tiny_cfg(*SMALL, "trainer.max_epochs=1"), sized)
    size = (sized / "checkpoints" / "last.ckpt").stat().st_size
    disk = tmpfs(int(size * 1.5) // 1024)
    run = disk / "run"
    proc = cli(run, "trainer.max_epochs=2", "callbacks.checkpoint.every_n_train_steps=1")
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = one_error_line(proc.stderr)
    assert line == (
        f"error: cannot write checkpoint {run}/checkpoints/last.ckpt.tmp: No space left on device (fix the "
        "permissions or free space, then re-run)"
    )
    assert validate_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] == 1
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]
    assert read_status(run)["status"] == "failed"
