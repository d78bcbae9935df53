"""One writer per run dir: an advisory lock on <run_dir>/.lock (fcntl.flock).

The holder writes its host, pid and SLURM job id into the file. A second process is refused (`RunLockedError`
naming the holder). The kernel releases a flock when its holder dies (kill -9, node reboot, SLURM preemption),
so a requeued job takes the lock over; the holder's line is still in the file then, and the new holder says
that it took over a stale lock. On a clean exit the file is emptied. (On NFS, Linux emulates flock with POSIX
byte-range locks, which NFSv4 shares between nodes.)
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
from pathlib import Path

log = logging.getLogger(__name__)


class RunLockedError(Exception):
    """Another live process holds the run dir's lock."""


def holder_line() -> str:
    job = os.environ.get("SLURM_JOB_ID")
    return f"host={socket.gethostname()} pid={os.getpid()} slurm_job={job or '-'}"


class RunLock:
    """`with RunLock(run_dir):` holds <run_dir>/.lock for the block; `stale_holder` is the line of a holder that
    died without releasing it (None when the lock was free)."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / ".lock"
        self.stale_holder: str | None = None
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown holder"
            os.close(fd)
            raise RunLockedError(
                f"{self.path.parent}: run dir is in use by another process ({holder}); wait for it to finish, stop "
                f"it, or choose another run dir (hydra.run.dir=...)"
            ) from None
        previous = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        if previous:
            self.stale_holder = previous
            log.warning(
                "took over the lock of %s, left by a process that is no longer running (%s)", self.path, previous
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, (holder_line() + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def is_rank_zero_process() -> bool:
    """True unless the environment says this is a non-zero rank of a multi-process job (those share rank 0's
    run dir and must not take its lock)."""
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK"):
        value = os.environ.get(var)
        if value not in (None, "", "0"):
            return False
    return True
