"""SLURM support: scripts/slurm-local.sh (a real one-node SLURM), and the Hydra launcher configs in
conf/hydra/launcher/ driven through hydra-submitit-launcher with the tiny app tests/slurm_app/app.py.

The integration tests start the local cluster once per session. Where it cannot be started they are skipped,
except under CI=true, where that is an error.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import neuromf.sweep  # noqa: F401  (registers the `local` launcher's schema, as neuromf.train does)

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "slurm-local.sh"
APP = REPO / "tests" / "slurm_app" / "app.py"
APP_CONF = REPO / "tests" / "slurm_app" / "conf"
PARTITION = os.environ.get("SLURM_LOCAL_PARTITION", "local")

# Overrides that point slurm_a100.yaml at the local CPU-only cluster.
LOCAL_SLURM = [
    f"hydra.searchpath=[file://{REPO / 'conf'}]",
    "hydra/launcher=slurm_a100",
    f"hydra.launcher.partition={PARTITION}",
    "hydra.launcher.gpus_per_node=null",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
]


# The session fixture `slurm_cluster` (starts the local cluster) is in tests/conftest.py.


def _run_app(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "WANDB_MODE": "offline"}
    proc = subprocess.run(
        [sys.executable, str(APP), "-m", *args], capture_output=True, text=True, timeout=timeout, env=env
    )
    assert proc.returncode == 0, f"multirun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def _job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))


def _overrides(job_dir: Path) -> dict[str, str]:
    lines = yaml.safe_load((job_dir / ".hydra" / "overrides.yaml").read_text())
    return dict(line.split("=", 1) for line in lines)


# ---------------------------------------------------------------- config composition (fast, no SLURM needed)


def _compose_launcher(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(APP_CONF)):
        cfg = compose(
            "slurm_app",
            overrides=[f"hydra.searchpath=[file://{REPO / 'conf'}]", *overrides],
            return_hydra_config=True,
        )
    return cfg.hydra.launcher


def test_slurm_a100_config_follows_trainer_devices():
    launcher = _compose_launcher(["hydra/launcher=slurm_a100", "trainer.devices=4"])
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    # one task and one GPU per Lightning device
    assert launcher.tasks_per_node == 4
    assert launcher.gpus_per_node == 4
    assert launcher.partition == "gpu"
    assert launcher.max_num_timeout > 0
    assert launcher.additional_parameters["requeue"] is True
    assert "export OMP_NUM_THREADS=8" in launcher.setup
    # command-line overrides reach the launcher
    launcher = _compose_launcher(
        ["hydra/launcher=slurm_a100", "hydra.launcher.partition=a100", "hydra.launcher.cpus_per_task=3"]
    )
    assert launcher.partition == "a100"
    assert launcher.tasks_per_node == 1
    assert "export OMP_NUM_THREADS=3" in launcher.setup


def test_local_launcher_config():
    launcher = _compose_launcher(["hydra/launcher=local"])
    assert launcher._target_ == "neuromf.sweep.local_launcher.ParallelLocalLauncher"
    assert launcher.tasks_per_node == 1
    assert launcher.timeout_min is None  # no time limit unless one is set
    assert launcher.submitit_folder.endswith("/.submitit/%j")


@pytest.mark.skipif(not (REPO / "conf" / "train.yaml").exists(), reason="conf/train.yaml not present")
def test_slurm_a100_with_training_config():
    """The training config's trainer.devices sets the task/GPU count (trainer=ddp: 4 devices)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf")):
        ddp = compose("train", overrides=["hydra/launcher=slurm_a100", "trainer=ddp"], return_hydra_config=True)
        gpu = compose("train", overrides=["hydra/launcher=slurm_a100", "trainer=gpu"], return_hydra_config=True)
    assert ddp.hydra.launcher.tasks_per_node == ddp.trainer.devices == 4
    assert ddp.hydra.launcher.gpus_per_node == 4
    assert gpu.hydra.launcher.tasks_per_node == gpu.hydra.launcher.gpus_per_node == gpu.trainer.devices


# ---------------------------------------------------------------- the local cluster itself


@pytest.mark.integration
def test_slurm_local_runs_a_batch_job(slurm_cluster, tmp_path):
    status = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True, text=True, timeout=600)
    assert status.returncode == 0, status.stdout + status.stderr
    assert slurm_cluster in status.stdout
    # `start` again is a no-op on a running cluster
    again = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "starting" not in again.stderr, again.stderr

    out = tmp_path / "hostname.out"
    job_id = (
        subprocess.run(
            [
                "sbatch",
                "--parsable",
                f"--partition={slurm_cluster}",
                f"--output={out}",
                "--wrap",
                "hostname -s",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
        .stdout.strip()
        .split(";")[0]
    )
    deadline = time.time() + 600  # an event (the job finished) ends the wait; the deadline only catches a hang
    while time.time() < deadline:
        q = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True)
        if q.stdout.strip() in ("", "COMPLETED") and out.exists():
            break
        time.sleep(0.2)
    assert out.read_text().strip() == socket.gethostname().split(".")[0]
    # the sacct stand-in reports the finished job the way submitit parses it
    sacct = subprocess.run(
        ["sacct", "-o", "JobID,State,NodeList", "--parsable2", "-j", job_id],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert sacct.stdout.splitlines()[0] == "JobID|State|NodeList"
    assert sacct.stdout.splitlines()[1].startswith(f"{job_id}|COMPLETED|")


@pytest.mark.integration
def test_submitit_executor_on_local_slurm(slurm_cluster, tmp_path):
    import operator

    import submitit

    # stdlib callables: the job unpickles them by reference (a test module would not be importable there)
    executor = submitit.AutoExecutor(folder=tmp_path / "%j")
    executor.update_parameters(slurm_partition=slurm_cluster, timeout_min=10, cpus_per_task=1, mem_gb=1)
    with executor.batch():
        add = executor.submit(operator.add, 2, 3)
        where = executor.submit(os.getenv, "SLURM_JOB_PARTITION")
    assert add.result() == 5
    assert where.result() == slurm_cluster


# ------------------------------------------------------------- Hydra multiruns through the launcher configs


@pytest.mark.integration
@pytest.mark.slow
def test_multirun_2x2_on_slurm(slurm_cluster, tmp_path):
    sweep = tmp_path / "sweep"
    _run_app(
        [*LOCAL_SLURM, "hydra.launcher.timeout_min=60", f"hydra.sweep.dir={sweep}", "x=1,2", "y=3,4"],
        timeout=1800,
    )
    job_dirs = _job_dirs(sweep)
    assert [p.name for p in job_dirs] == ["0", "1", "2", "3"]
    seen, array_ids, job_ids = set(), set(), set()
    for job_dir in job_dirs:
        result = json.loads((job_dir / "result.json").read_text())
        ov = _overrides(job_dir)
        assert (result["x"], result["y"]) == (int(ov["x"]), int(ov["y"]))
        assert result["output_dir"] == str(job_dir)
        (start,) = result["starts"]
        assert start["SLURM_JOB_PARTITION"] == slurm_cluster
        seen.add((result["x"], result["y"]))
        array_ids.add(start["SLURM_ARRAY_JOB_ID"])
        job_ids.add(start["SLURM_JOB_ID"])
    assert seen == {(1, 3), (1, 4), (2, 3), (2, 4)}
    assert len(array_ids) == 1 and None not in array_ids  # one SLURM job array
    assert len(job_ids) == 4


@pytest.mark.integration
@pytest.mark.slow
def test_timed_out_job_is_requeued_and_resumes(slurm_cluster, tmp_path):
    """A 1-minute job that cannot finish in time is requeued by submitit into the same output dir and
    continues its counter from the checkpoint file it wrote."""
    sweep = tmp_path / "sweep"
    t0 = time.time()
    _run_app(
        [
            *LOCAL_SLURM,
            "hydra.launcher.timeout_min=1",
            "hydra.launcher.signal_delay_s=5",
            "hydra.launcher.max_num_timeout=2",
            f"hydra.sweep.dir={sweep}",
            "work.resume_after_requeue=true",
            "work.ticks_after_restart=3",
        ],
        timeout=1800,
    )
    total = time.time() - t0
    (job_dir,) = _job_dirs(sweep)
    state = json.loads((job_dir / "counter.json").read_text())
    first, second = state["starts"]  # exactly one requeue
    assert first["resumed_from"] == 0
    assert second["resumed_from"] > 0  # ticks of the first run survived the requeue
    assert state["count"] == second["resumed_from"] + 3
    assert first["SLURM_JOB_ID"] == second["SLURM_JOB_ID"]  # same job, requeued
    assert second["SLURM_RESTART_COUNT"] == "1"
    result = json.loads((job_dir / "result.json").read_text())
    assert result["starts"] == state["starts"]
    gap = second["time"] - first["time"] - second["resumed_from"] * 1.0
    ticks = second["resumed_from"]
    print(f"requeue: first run {ticks} ticks, requeue gap ~{gap:.0f}s, multirun {total:.0f}s")


@pytest.mark.slow
def test_multirun_with_local_launcher(tmp_path):
    """hydra/launcher=local: submitit's local executor, no SLURM involved."""
    sweep = tmp_path / "sweep"
    _run_app(
        [
            f"hydra.searchpath=[file://{REPO / 'conf'}]",
            "hydra/launcher=local",
            "hydra.launcher.timeout_min=2",
            f"hydra.sweep.dir={sweep}",
            "x=1,2",
        ],
        timeout=1800,
    )
    results = [json.loads((d / "result.json").read_text()) for d in _job_dirs(sweep)]
    assert sorted(r["x"] for r in results) == [1, 2]
    assert all(r["starts"][0]["SLURM_JOB_ID"] is None for r in results)
    assert (sweep / ".submitit").is_dir()
