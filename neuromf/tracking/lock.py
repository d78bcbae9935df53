"""One writer per run dir: an advisory lock on <run_dir>/.lock (fcntl.flock).

The holder writes its host, pid and SLURM job id into the file. A second process is refused (`RunLockedError`
naming the holder). The kernel releases a flock when its holder dies (kill -9, node reboot, SLURM preemption),
so a requeued job takes the lock over; the holder's line is still in the file then, and the new holder says
that it took over a stale lock. DataLoader workers forked by the holder share its lock until they exit, which they
do seconds after it dies: when the line names a dead process on this host, the lock is retried for up to
ORPHAN_WAIT_S before the run is refused. On a clean exit the file is emptied. (On NFS, Linux emulates flock with POSIX
byte-range locks, which NFSv4 shares between nodes.)

Lustre mounted without the `flock` option (or with `noflock`) fails every flock with ENOSYS: the lock raises
`RunLockUnsupportedError` saying what to do. `NEUROMF_RUN_LOCK=off` runs without the lock (the holder line is
still written, for the sweeper's stale-trial check); then nothing stops two processes sharing a run dir.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import socket
import time

from neuromf.run_dir import RunDir

log = logging.getLogger(__name__)
ENV = "NEUROMF_RUN_LOCK"  # "off": no flock (a filesystem without flock support)
# flock on a filesystem that does not implement it: Lustre without -o flock (ENOSYS), some FUSE/NFS mounts
UNSUPPORTED_ERRNOS = {errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOLCK}
ORPHAN_WAIT_S = 30.0  # how long a dead holder's orphaned children (DataLoader workers) may keep the lock


class RunLockedError(Exception):
    """Another live process holds the run dir's lock."""


class RunLockUnsupportedError(OSError):
    """The run dir's filesystem does not support flock; the message says what to do."""

    def __str__(self) -> str:
        return str(self.strerror)


def lock_disabled() -> bool:
    return os.environ.get(ENV, "").strip().lower() in ("off", "0", "false", "no")


def unsupported_message(err: OSError) -> str:
    return (
        f"this filesystem does not support flock, which the one-writer lock of a run dir needs ({err}); on Lustre "
        f"ask the admins to mount it with `-o flock` (`localflock` only locks within one node), or set {ENV}=off "
        "to run without the lock (then make sure no two jobs share a run dir; see docs/slurm.md)"
    )


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists on this host."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder_fields(line: str) -> dict[str, str]:
    """A holder line `host=... pid=... slurm_job=...` -> {"host": ..., "pid": ..., "slurm_job": ...}."""
    return dict(part.split("=", 1) for part in line.split() if "=" in part)


def _holder_pid_alive_here(line: str) -> bool:
    """False only when the holder line names this host and a pid that no longer exists."""
    fields = holder_fields(line)
    if fields.get("host") != socket.gethostname() or not fields.get("pid", "").isdigit():
        return True
    return pid_alive(int(fields["pid"]))


def holder_line() -> str:
    job = os.environ.get("SLURM_JOB_ID")
    return f"host={socket.gethostname()} pid={os.getpid()} slurm_job={job or '-'}"


class RunLock:
    """`with RunLock(run_dir):` holds <run_dir>/.lock for the block; `stale_holder` is the line of a holder that
    died without releasing it (None when the lock was free)."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = RunDir(run_dir).lock
        self.stale_holder: str | None = None
        self._fd: int | None = None
        self._locked = False

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        self._locked = not lock_disabled()
        try:
            if self._locked:
                self._flock(fd)
            else:
                log.warning("%s=off: %s is not locked; no two processes may use this run dir", ENV, self.path)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown holder"
            os.close(fd)
            raise RunLockedError(
                f"{self.path.parent}: run dir is in use by another process ({holder}); wait for it to finish, stop "
                f"it, or choose another run dir (hydra.run.dir=...)"
            ) from None
        except OSError as err:
            os.close(fd)
            if err.errno in UNSUPPORTED_ERRNOS:
                raise RunLockUnsupportedError(err.errno, unsupported_message(err), str(self.path)) from None
            raise
        previous = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        if previous and self._locked:
            self.stale_holder = previous
            log.warning(
                "took over the lock of %s, left by a process that is no longer running (%s)", self.path, previous
            )
        os.ftruncate(fd, 0)
        os.pwrite(fd, (holder_line() + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    @staticmethod
    def _flock(fd: int, orphan_wait_s: float = ORPHAN_WAIT_S) -> None:
        """flock(fd) without blocking; when the lock is held but its holder line names a dead process on this host,
        its orphaned children (DataLoader workers forked with the lock's fd) still hold it until they notice their
        parent is gone (seconds): retry for up to ``orphan_wait_s`` before giving up."""
        deadline = time.monotonic() + orphan_wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                holder = os.pread(fd, 4096, 0).decode(errors="replace")
                if _holder_pid_alive_here(holder) or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass
        if self._locked:
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
