"""Local multirun launcher: submitit's local executor with a parallelism limit, one device per job and no time
limit unless one is asked for.

hydra-submitit-launcher's `submitit_local` starts every job at once and gives each job `gpus_per_node` CUDA
devices counted from 0 (none when it is null: CUDA_VISIBLE_DEVICES is set empty). This launcher keeps at most
`max_parallel` jobs running and hands each job its own device slot: its own CUDA device(s) (CUDA_VISIBLE_DEVICES
set per job to ids of the devices this shell sees) when the jobs train on a GPU, else a share of the CPU cores.
Every job also gets NEUROMF_LOCAL_SLOT=<slot index>.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, LocalQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher
from omegaconf import OmegaConf

log = logging.getLogger(__name__)

SLOT_ENV = "NEUROMF_LOCAL_SLOT"
# submitit's local controller needs a finite limit: `timeout_min: null` is passed as ten years
NO_LIMIT_MIN = 10 * 365 * 24 * 60
POLL_S = 0.5


@dataclass
class ParallelLocalLauncherConf(LocalQueueConf):
    """hydra-submitit-launcher's local schema plus the keys of conf/hydra/launcher/local.yaml."""

    _target_: str = "neuromf.sweep.local_launcher.ParallelLocalLauncher"
    timeout_min: Any = None  # minutes per job; null: no limit
    gpus_per_node: Any = 1  # CUDA devices per job (GPU jobs)
    max_parallel: Any = None  # jobs at once; null: one per device slot
    accelerator: str = "auto"  # the jobs' trainer.accelerator: cpu -> CPU slots; else CUDA when there is one
    cpu_threads_per_job: Any = None  # CPU slots = usable cores // this (null: 1 slot, a job uses every core)
    setup: Any = None  # shell lines run before each job


ConfigStore.instance().store(group="hydra/launcher", name="parallel_local_schema", node=ParallelLocalLauncherConf)


@dataclass(frozen=True)
class DeviceSlot:
    """What one running job gets: `cuda` the CUDA_VISIBLE_DEVICES value (None: a CPU slot, no CUDA device)."""

    index: int
    cuda: str | None


def cuda_device_ids() -> list[str]:
    """The CUDA devices this shell sees, as ids for CUDA_VISIBLE_DEVICES (its own entries when it is set)."""
    try:
        import torch

        count = torch.cuda.device_count()
    except Exception:  # no usable torch / driver: no CUDA device
        count = 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip():
        return [d.strip() for d in visible.split(",") if d.strip()][:count]
    return [str(i) for i in range(count)]


def usable_cpus() -> int:
    """Cores this process may run on (its affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def device_slots(
    cuda_ids: list[str],
    n_cpus: int,
    *,
    accelerator: str = "auto",
    gpus_per_job: int | None = 1,
    cpu_threads_per_job: int | None = None,
    max_parallel: int | None = None,
) -> list[DeviceSlot]:
    """One slot per job that may run at once.

    CUDA (accelerator not `cpu` and `cuda_ids` not empty): the devices in groups of `gpus_per_job`, one group a
    slot. CPU: `n_cpus // cpu_threads_per_job` slots (1 when it is null: such a job uses every core).
    `max_parallel` overrides the count; more slots than device groups share the groups round-robin.
    """
    if str(accelerator).lower() != "cpu" and cuda_ids:
        if not isinstance(gpus_per_job, int) or gpus_per_job < 1:
            raise ValueError(f"hydra.launcher.gpus_per_node={gpus_per_job}: expected an integer >= 1 for GPU jobs")
        per = gpus_per_job
        groups = [",".join(cuda_ids[i : i + per]) for i in range(0, len(cuda_ids) - per + 1, per)]
        if not groups:
            raise ValueError(f"hydra.launcher.gpus_per_node={per}: this shell sees only {len(cuda_ids)} CUDA devices")
    else:
        groups = [None] * (max(1, n_cpus // int(cpu_threads_per_job)) if cpu_threads_per_job else 1)
    n = len(groups) if max_parallel is None else int(max_parallel)
    if n < 1:
        raise ValueError(f"hydra.launcher.max_parallel={max_parallel}: expected an integer >= 1 (or null)")
    return [DeviceSlot(k, groups[k % len(groups)]) for k in range(n)]


def slot_setup(slot: DeviceSlot, setup: list[str] | None) -> list[str]:
    """Shell lines that give one job its slot (after the configured setup lines)."""
    cuda = "" if slot.cuda is None else slot.cuda
    return [*(setup or []), f"export CUDA_VISIBLE_DEVICES={shlex.quote(cuda)}", f"export {SLOT_ENV}={slot.index}"]


class ParallelLocalLauncher(LocalLauncher):
    """hydra-submitit-launcher's LocalLauncher, with at most `max_parallel` jobs at once, each on its own slot."""

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.slot_keys = {k: self.params.pop(k) for k in ("max_parallel", "accelerator", "cpu_threads_per_job")}
        self.setup_lines = list(self.params.pop("setup", None) or [])
        if self.params.get("timeout_min") is None:
            self.params["timeout_min"] = NO_LIMIT_MIN

    def slots(self) -> list[DeviceSlot]:
        return device_slots(
            cuda_device_ids(),
            usable_cpus(),
            accelerator=self.slot_keys["accelerator"],
            gpus_per_job=self.params.get("gpus_per_node"),
            cpu_threads_per_job=self.slot_keys["cpu_threads_per_job"],
            max_parallel=self.slot_keys["max_parallel"],
        )

    def launch(self, job_overrides, initial_job_idx: int) -> list[JobReturn]:
        import submitit

        assert self.config is not None and len(job_overrides) > 0
        try:
            slots = self.slots()
        except ValueError as err:  # a launcher key this machine cannot satisfy: one line, nothing started
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
        init = {"local_max_num_timeout": self.params["max_num_timeout"]} if "max_num_timeout" in self.params else {}
        executor = submitit.AutoExecutor(cluster="local", folder=self.params["submitit_folder"], **init)
        generic = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{
                k if k in generic else f"local_{k}": v
                for k, v in self.params.items()
                if k not in ("submitit_folder", "max_num_timeout", "gpus_per_node")  # devices: per job (slot_setup)
            }
        )
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        log.info("Submitit 'local' sweep output dir : %s (%d at once)", sweep_dir, len(slots))

        pending = list(enumerate(job_overrides))
        free = list(slots)
        running: dict[int, tuple[Any, DeviceSlot]] = {}
        results: dict[int, JobReturn] = {}
        while pending or running:
            while pending and free:
                pos, overrides = pending.pop(0)
                slot = free.pop(0)
                idx = initial_job_idx + pos
                where = "CPU" if slot.cuda is None else f"CUDA_VISIBLE_DEVICES={slot.cuda}"
                log.info("\t#%d : %s  (slot %d, %s)", idx, " ".join(filter_overrides(overrides)), slot.index, where)
                executor.update_parameters(local_setup=slot_setup(slot, self.setup_lines))
                job = executor.submit(
                    self, list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", Singleton.get_state()
                )
                running[pos] = (job, slot)
            done = [pos for pos, (job, _) in running.items() if job.done()]
            for pos in done:
                job, slot = running.pop(pos)
                results[pos] = job.results()[0]
                free.append(slot)
            free.sort(key=lambda s: s.index)
            if running and not done:
                time.sleep(POLL_S)
        return [results[pos] for pos in range(len(job_overrides))]


# Hydra instantiates launchers only from its plugin registry (see neuromf/sweep/optuna.py for the sweeper).
Plugins.instance().register(ParallelLocalLauncher)
