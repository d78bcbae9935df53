"""Tiny Hydra app to test the SLURM launcher configs (conf/hydra/launcher/) without the training code.

Every job writes `result.json` into its Hydra output dir. With `work.resume_after_requeue=true` it counts
ticks into `counter.json` (written atomically) and resumes from that file when the job is started again in the
same output dir (a requeue), then stops `work.ticks_after_restart` ticks later; before the first restart it
counts until the job is killed, so only a requeue can finish it.
"""

import json
import os
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import neuromf.sweep  # noqa: F401  (registers the `local` launcher, ParallelLocalLauncher, with Hydra)


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


@hydra.main(config_path="conf", config_name="slurm_app")
def main(cfg: DictConfig) -> float:
    out = Path(HydraConfig.get().runtime.output_dir)
    env = {
        k: os.environ.get(k)
        for k in (
            "SLURM_JOB_ID",
            "SLURM_ARRAY_JOB_ID",
            "SLURM_JOB_PARTITION",
            "SLURM_RESTART_COUNT",
            "SLURM_NTASKS",
            "CUDA_VISIBLE_DEVICES",
            "NEUROMF_LOCAL_SLOT",
        )
    }
    start = {"time": time.time(), **env}
    if cfg.work.resume_after_requeue:
        ckpt = out / "counter.json"
        state = json.loads(ckpt.read_text()) if ckpt.exists() else {"count": 0, "starts": []}
        start["resumed_from"] = state["count"]
        state["starts"].append(start)
        _write_json(ckpt, state)
        while len(state["starts"]) <= cfg.work.min_restarts or (
            state["count"] < start["resumed_from"] + cfg.work.ticks_after_restart
        ):
            time.sleep(cfg.work.tick_s)
            state["count"] += 1
            _write_json(ckpt, state)
        starts = state["starts"]
    else:
        if cfg.work.rendezvous:  # jobs side by side see each other start; one after the other never do
            (out.parent / f"started_{out.name}").write_text(str(start["time"]))
            deadline = time.monotonic() + cfg.work.rendezvous_s
            while len(list(out.parent.glob("started_*"))) < cfg.work.rendezvous and time.monotonic() < deadline:
                time.sleep(0.1)
            start["met"] = len(list(out.parent.glob("started_*")))
        time.sleep(cfg.work.sleep_s)
        starts = [start]
    _write_json(out / "result.json", {"x": cfg.x, "y": cfg.y, "starts": starts, "output_dir": str(out)})
    return float(cfg.x * cfg.y)


if __name__ == "__main__":
    main()
