"""Sweeps of the real training app (`python -m neuromf.train -m`) on the local SLURM through
conf/hydra/launcher/slurm_a100.yaml: a 2x2 grid, and a run that hits its time limit, is requeued by submitit
and resumes from its last.ckpt in the same run dir.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from conftest import TINY_EPOCH, TINY_TRAIN, job_dirs, run_overrides, slurm_launcher

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _submitit_logs(sweep_dir: Path, suffix: str) -> str:
    logs = sorted((sweep_dir / ".submitit").glob(f"*/*{suffix}"))
    return "".join(p.read_text(errors="replace") for p in logs)


def test_grid_2x2_on_slurm(slurm_cluster, neuromf_multirun, tmp_path):
    sweep = tmp_path / "sweep"
    t0 = time.time()
    neuromf_multirun(
        [
            *slurm_launcher(slurm_cluster),
            f"hydra.sweep.dir={sweep}",
            *TINY_TRAIN,
            *TINY_EPOCH,
            "optim.lr=1e-4,3e-4",
            "seed=0,1",
        ],
        timeout=1800,
    )
    print(f"2x2 grid on SLURM: {time.time() - t0:.0f}s")
    run_dirs = job_dirs(sweep)
    assert [p.name for p in run_dirs] == ["0", "1", "2", "3"]
    arms = set()
    for run_dir in run_dirs:
        ov = run_overrides(run_dir)
        arms.add((float(ov["optim.lr"]), int(ov["seed"])))
        status = json.loads((run_dir / "status.json").read_text())
        assert status["status"] == "completed", status
        assert status["global_step"] == 2  # limit_train_batches=2, one epoch
        assert status["objective_key"] == "val/loss_raw"
        assert status["objective"] is not None and status["objective"] > 0
        metrics = pd.read_csv(run_dir / "metrics.csv")
        assert metrics["val/loss_raw"].dropna().min() == pytest.approx(status["objective"])
        assert metrics["train/loss"].notna().sum() == 2
        # the arm's own overrides reached the run
        config = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
        assert config["optim"]["lr"] == float(ov["optim.lr"]) and config["seed"] == int(ov["seed"])
        assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert arms == {(1e-4, 0), (1e-4, 1), (3e-4, 0), (3e-4, 1)}
    # every arm and seed trains, validates and tests on the same subjects (data.split_seed, not the run seed)
    splits = {(d / "split.json").read_text() for d in run_dirs}
    assert len(splits) == 1 and json.loads(splits.pop())["split_seed"] == 0
    # the runs ran as the 4 tasks of one SLURM job array (submitit's folders are <array id>_<task>/)
    task_dirs = sorted(p.name for p in (sweep / ".submitit").iterdir() if re.fullmatch(r"\d+_\d+", p.name))
    (array_id,) = {d.split("_")[0] for d in task_dirs}
    assert task_dirs == [f"{array_id}_{i}" for i in range(4)]
    submission = sweep / ".submitit" / array_id / f"{array_id}_submission.sh"
    assert "#SBATCH --array=0-3%" in submission.read_text()

    summary = pd.read_csv(sweep / "sweep_summary.csv")
    assert sorted(summary["job"]) == [0, 1, 2, 3]
    assert set(summary["status"]) == {"completed"}
    assert summary["objective"].notna().all()
    rows = json.loads((sweep / "sweep_summary.json").read_text())["runs"]
    assert {r["overrides"] for r in rows} == {" ".join(_overrides_list(d)) for d in run_dirs}


def _overrides_list(run_dir: Path) -> list[str]:
    return yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())


class _CheckpointWatcher(threading.Thread):
    """Polls the run dir while its job runs: the global_step of checkpoints/last.ckpt each time it changes,
    and that step at each (re)start of the job, i.e. the step a requeued start had to resume from."""

    def __init__(self, sweep_dir: Path):
        super().__init__(daemon=True)
        self.sweep_dir, self.stop = sweep_dir, threading.Event()
        self.steps: list[int] = []
        self.step_at_start: list[int | None] = []

    def run(self) -> None:
        ckpt, mtime = self.sweep_dir / "0" / "checkpoints" / "last.ckpt", None
        while not self.stop.is_set():
            try:
                if ckpt.exists() and ckpt.stat().st_mtime != mtime:
                    mtime = ckpt.stat().st_mtime
                    step = int(torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"])
                    if not self.steps or step != self.steps[-1]:
                        self.steps.append(step)
            except (OSError, EOFError, RuntimeError):  # replaced between stat and load: read it next time
                pass
            # submitit logs one "Starting with JobEnvironment" per start (a requeued job appends to its log)
            starts = _submitit_logs(self.sweep_dir, "_log.out").count("Starting with JobEnvironment")
            while len(self.step_at_start) < starts:
                self.step_at_start.append(self.steps[-1] if self.steps else None)
            time.sleep(0.2)


def test_timed_out_run_is_requeued_and_resumes(slurm_cluster, neuromf_multirun, tmp_path):
    """A 1-minute job whose run trains for 50 s (Lightning's max_time; its clock is restored from the
    checkpoint) is signalled before its time limit (SLURM signals 20-55 s after the start here), requeued by
    submitit into the same run dir, and continues from checkpoints/last.ckpt: same run dir, same W&B run id,
    global_step and metrics.csv continuing past the checkpoint's step."""
    sweep = tmp_path / "sweep"
    watcher = _CheckpointWatcher(sweep)
    watcher.start()
    t0 = time.time()
    try:
        neuromf_multirun(
            [
                *slurm_launcher(slurm_cluster, timeout_min=1),
                "hydra.launcher.signal_delay_s=5",
                "hydra.launcher.max_num_timeout=3",
                f"hydra.sweep.dir={sweep}",
                *TINY_TRAIN,
                "logger=wandb",  # offline: checks that the W&B run id survives the requeue
                "trainer.max_epochs=1000",
                "+trainer.max_time=00:00:00:50",  # > the training time a first start gets before its signal
                "callbacks.checkpoint.every_n_train_steps=1",
            ],
            timeout=1800,
        )
    finally:
        watcher.stop.set()
        watcher.join()
    total = time.time() - t0
    (run_dir,) = job_dirs(sweep)  # the requeued starts did not open another job dir
    out_log, err_log = _submitit_logs(sweep, "_log.out"), _submitit_logs(sweep, "_log.err")
    starts = out_log.count("Starting with JobEnvironment")
    assert starts >= 2, f"the job was never requeued:\n{out_log[-3000:]}"
    requeues = re.findall(r"^submitit INFO .* - Requeued job", out_log, flags=re.MULTILINE)
    assert len(requeues) == starts - 1 and "Job not requeued" not in out_log, out_log[-3000:]
    assert len(watcher.step_at_start) == starts, watcher.step_at_start
    # every start that found a checkpoint restored it (one "Restoring" line per such start) ...
    restores = re.findall(r"Restoring states from the checkpoint path at (\S+)", err_log)
    with_ckpt = [s for s in watcher.step_at_start if s is not None]
    assert restores == [str(run_dir / "checkpoints" / "last.ckpt")] * len(with_ckpt), restores
    # ... and training went on from it: the checkpointed step never went back (no start from step 0)
    assert with_ckpt and max(with_ckpt) >= 1, watcher.step_at_start
    assert watcher.steps == sorted(watcher.steps), f"a requeued start trained from scratch: {watcher.steps}"
    resumed_from = with_ckpt[0]
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "completed", status
    assert status["global_step"] > resumed_from and status["global_step"] >= watcher.steps[-1]
    # metrics.csv holds the whole history: the steps before the requeue and those after it
    metrics = pd.read_csv(run_dir / "metrics.csv")
    train_steps = set(metrics.loc[metrics["train/loss"].notna(), "step"].astype(int))
    steps = sorted(train_steps)
    assert [s for s in steps if s < resumed_from], f"metrics.csv lost the steps before the requeue: {steps}"
    assert [s for s in steps if s > resumed_from], f"no steps after the requeue in metrics.csv: {steps}"
    assert max(train_steps) < status["global_step"]
    # one W&B run id for the run dir, reused by every start (the offline run dirs end with the id)
    wandb_id = (run_dir / "wandb_id.txt").read_text().strip()
    assert status["wandb_run_id"] == wandb_id
    offline_runs = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline_runs) == starts and all(p.name.endswith(f"-{wandb_id}") for p in offline_runs)
    print(
        f"requeue: {starts} starts, checkpoint step at each start {watcher.step_at_start}, final step "
        f"{status['global_step']}, multirun {total:.0f}s"
    )
