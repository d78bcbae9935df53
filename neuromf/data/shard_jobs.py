"""Run the shards of an encoding as a submitit job array (a SLURM array, or local processes), wait, and merge.

Only shards without a finished record (``neuromf.data.shards``) are submitted, so running the same command again
after a shard died redoes that shard alone. Each job runs ``python -m neuromf.encode <the same arguments> --shard
I/N`` in-process (the ``shard_job`` the caller passes: neuromf.encode's ``run_one_shard``); submitit keeps its
logs in ``<store>/.submitit/<job id>/``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from neuromf.data.io import DataError
from neuromf.data.shards import Shard


@dataclass
class ArraySettings:
    """Where and how the shard jobs run (submitit parameters)."""

    launcher: str = "slurm"  # slurm | local
    partition: str | None = None
    timeout_min: int = 240
    cpus_per_task: int = 4
    mem_gb: float = 16.0
    gpus_per_task: int = 0
    array_parallelism: int | None = None
    setup: list[str] = field(default_factory=list)
    account: str | None = None


def make_executor(folder: Path, settings: ArraySettings, name: str):
    import submitit

    if settings.launcher not in ("slurm", "local"):
        raise DataError(f"--launcher {settings.launcher!r}: expected slurm or local")
    cluster = "local" if settings.launcher == "local" else "slurm"
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster=cluster)
    params = {"name": name, "timeout_min": int(settings.timeout_min), "gpus_per_node": int(settings.gpus_per_task)}
    if cluster == "slurm":
        params |= {
            "cpus_per_task": int(settings.cpus_per_task),
            "mem_gb": float(settings.mem_gb),
            "slurm_partition": settings.partition,
            "slurm_array_parallelism": settings.array_parallelism,
            "slurm_setup": list(settings.setup) or None,
            "slurm_account": settings.account,
        }
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return executor


def run_array(
    shard_job: Callable[[list[str], Shard], dict],
    argv: list[str],
    out_dir: Path,
    todo: list[Shard],
    settings: ArraySettings,
) -> list[tuple[Shard, str]]:
    """Submit ``todo`` as one job array of ``shard_job(argv, shard) -> summary`` and wait for every job.
    -> [(shard, one-line reason)] of the failed ones."""
    if not todo:
        return []
    try:
        executor = make_executor(out_dir / ".submitit", settings, name=f"encode-{out_dir.name}")
        jobs = executor.map_array(shard_job, [argv] * len(todo), todo)
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 — no sbatch, a refused submission: one line
        raise DataError(
            f"--launcher {settings.launcher}: cannot submit the shard jobs ({type(e).__name__}: {e})"
        ) from e
    print(
        f"submitted {len(jobs)} shard jobs ({settings.launcher}; first job {jobs[0].job_id}); waiting",
        file=sys.stderr,
        flush=True,
    )
    failed = []
    for shard, job in zip(todo, jobs, strict=True):
        try:
            summary = job.result()
        except Exception as e:  # noqa: BLE001 — a failed job: its reason, in one line
            failed.append((shard, f"job {job.job_id}: {_last_line(e)}"))
            continue
        print(f"shard {shard}: {_describe(summary)}", file=sys.stderr, flush=True)
    return failed


def _describe(summary: dict) -> str:
    return f"encoded {summary['encoded']}, kept {summary['kept']}, {summary['errors']} errors"


def _last_line(err: Exception) -> str:
    """The reason of a failed job in one line: the last line of the job's traceback that submitit's
    FailedJobError quotes between its dashed rules (the exception itself), without our error classes' module path."""
    lines = [ln.strip() for ln in str(err).splitlines()]
    rules = [i for i, ln in enumerate(lines) if ln and set(ln) == {"-"}]
    quoted = lines[rules[0] + 1 : rules[1]] if len(rules) >= 2 else lines
    quoted = [ln for ln in quoted if ln]
    if not quoted:
        return type(err).__name__
    last = quoted[-1]
    for cls in ("DataError", "EncoderError"):
        head, sep, tail = last.partition(f"{cls}: ")
        if sep and (not head or head.endswith(".")):
            return tail
    return last
