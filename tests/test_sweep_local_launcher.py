"""The `local` launcher (conf/hydra/launcher/local.yaml, neuromf/sweep/local_launcher.py): at most `max_parallel`
jobs at once (default: one per device slot), each on its own device, no time limit unless one is set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from neuromf.sweep import local_launcher as ll

REPO = Path(__file__).resolve().parents[1]
CONF = str(REPO / "conf")
GRID_SWEEPS = sorted(p.stem for p in (REPO / "sweeps").glob("*.yaml"))


def _launcher_cfg(overrides: list[str]) -> dict:
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    node = cfg.hydra.launcher
    return OmegaConf.to_container(node, resolve=True)


def _instantiate(params: dict) -> ll.ParallelLocalLauncher:
    return ll.ParallelLocalLauncher(**{k: v for k, v in params.items() if k != "_target_"})


@pytest.mark.parametrize("sweep", GRID_SWEEPS)
def test_every_sweep_file_runs_locally_with_a_limit_and_no_time_limit(sweep, monkeypatch):
    params = _launcher_cfg([f"sweep={sweep}"])
    assert params["_target_"] == "neuromf.sweep.local_launcher.ParallelLocalLauncher"
    assert params["timeout_min"] is None and params["max_parallel"] is None
    launcher = _instantiate(params)
    assert launcher.params["timeout_min"] == ll.NO_LIMIT_MIN  # no limit: submitit's controller needs a number
    monkeypatch.setattr(ll, "cuda_device_ids", lambda: [])
    monkeypatch.setattr(ll, "usable_cpus", lambda: 2)
    # the demo (torch_threads=1): its 2 arms side by side on 2 cores; the others (every core a job): one at a time
    assert len(launcher.slots()) == (2 if sweep == "demo" else 1)


def test_an_explicit_time_limit_and_parallelism_are_kept():
    params = _launcher_cfg(["sweep=lr", "hydra.launcher.timeout_min=30", "hydra.launcher.max_parallel=3"])
    launcher = _instantiate(params)
    assert launcher.params["timeout_min"] == 30
    assert len(launcher.slots()) == 3


def test_gpu_jobs_read_their_device_count_and_accelerator_from_the_trainer():
    params = _launcher_cfg(["sweep=v_head", "trainer=ddp"])
    assert params["gpus_per_node"] == 4 and params["accelerator"] == "gpu"
    assert _launcher_cfg(["sweep=v_head"])["accelerator"] == "cpu"


def test_basic_launcher_stays_the_sequential_form():
    with initialize_config_dir(config_dir=CONF, version_base=None):
        cfg = compose("train", overrides=["sweep=demo", "hydra/launcher=basic"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_ == "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


def test_cuda_ids_follow_the_shells_visible_devices(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3,5,7")
    assert ll.cuda_device_ids() == ["2", "3", "5", "7"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert ll.cuda_device_ids() == ["0", "1", "2", "3"]


def test_device_slots_one_device_per_job_with_a_faked_device_count():
    ids = ["2", "3", "5", "7"]
    one = ll.device_slots(ids, 16, accelerator="gpu", gpus_per_job=1)
    assert [s.cuda for s in one] == ids and [s.index for s in one] == [0, 1, 2, 3]
    two = ll.device_slots(ids, 16, accelerator="gpu", gpus_per_job=2)
    assert [s.cuda for s in two] == ["2,3", "5,7"]
    three = ll.device_slots(ids, 16, accelerator="gpu", gpus_per_job=3)  # the 4th device is left idle
    assert [s.cuda for s in three] == ["2,3,5"]
    shared = ll.device_slots(ids[:2], 16, accelerator="gpu", gpus_per_job=1, max_parallel=3)
    assert [s.cuda for s in shared] == ["2", "3", "2"]  # asked for more jobs than devices: round-robin
    cpu = ll.device_slots(ids, 16, accelerator="cpu", cpu_threads_per_job=4)
    assert [s.cuda for s in cpu] == [None] * 4  # CPU jobs use no GPU even where there are some
    assert len(ll.device_slots([], 2, accelerator="gpu", cpu_threads_per_job=1)) == 2  # no CUDA: CPU slots
    assert len(ll.device_slots([], 16)) == 1  # threads per job unknown: one job uses every core


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"gpus_per_job": 5}, "gpus_per_node=5"),
        ({"gpus_per_job": "auto"}, "gpus_per_node=auto"),
        ({"max_parallel": 0}, "max_parallel=0"),
    ],
)
def test_impossible_launcher_keys_are_named(kwargs, key):
    with pytest.raises(ValueError, match=f"hydra.launcher.{key}"):
        ll.device_slots(["0", "1"], 2, accelerator="gpu", **kwargs)


def test_slot_setup_exports_the_device_after_the_configured_lines():
    lines = ll.slot_setup(ll.DeviceSlot(1, "3"), ["module load cuda"])
    assert lines == ["module load cuda", "export CUDA_VISIBLE_DEVICES=3", f"export {ll.SLOT_ENV}=1"]
    assert ll.slot_setup(ll.DeviceSlot(0, None), None)[0] == "export CUDA_VISIBLE_DEVICES=''"


class _FakeJob:
    def __init__(self, log, value, polls):
        self.log, self.value, self.polls = log, value, polls

    def done(self):
        self.polls -= 1
        return self.polls <= 0

    def results(self):
        self.log["running"].remove(self)
        return [self.value]


class _FakeExecutor:
    """Stands in for submitit's local executor: records each job's setup lines and how many ran at once."""

    log: dict = {}

    def __init__(self, cluster, folder, **kwargs):
        assert cluster == "local"
        self.params = {}

    def update_parameters(self, **kwargs):
        self.params.update(kwargs)

    def submit(self, fn, overrides, _key, idx, _job_id, _state):
        env = dict(line.removeprefix("export ").split("=", 1) for line in self.params["local_setup"])
        job = _FakeJob(self.log, f"ret{idx}", polls=1 + idx % 3)
        self.log["running"].append(job)
        self.log["started"].append((idx, env["CUDA_VISIBLE_DEVICES"], [j.env for j in self.log["running"][:-1]]))
        job.env = env["CUDA_VISIBLE_DEVICES"]
        self.log["most"] = max(self.log["most"], len(self.log["running"]))
        assert "gpus_per_node" not in self.params and self.params["timeout_min"] == ll.NO_LIMIT_MIN
        return job


def test_launch_runs_at_most_one_job_per_device_each_on_its_own(monkeypatch, tmp_path):
    import submitit

    _FakeExecutor.log = {"running": [], "started": [], "most": 0}
    monkeypatch.setattr(submitit, "AutoExecutor", _FakeExecutor)
    monkeypatch.setattr(ll, "cuda_device_ids", lambda: ["4", "6", "9"])  # a faked 3-GPU shell
    monkeypatch.setattr(ll, "POLL_S", 0.0)
    params = _launcher_cfg(["sweep=v_head", "trainer=gpu", f"hydra.sweep.dir={tmp_path}"])
    launcher = _instantiate(params)
    launcher.config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    returns = launcher.launch([[f"seed={i}"] for i in range(7)], initial_job_idx=10)
    assert returns == [f"ret{i}" for i in range(10, 17)]  # in job order, whatever order they finished in
    log = _FakeExecutor.log
    assert log["most"] == 3 and len(log["started"]) == 7
    for _idx, device, others in log["started"]:
        assert device in {"4", "6", "9"} and device not in others  # no two running jobs share a device


@pytest.mark.slow
def test_a_real_local_multirun_gives_each_job_its_own_slot(tmp_path):
    """Two jobs of the tiny Hydra app through submitit's local executor: both at once, on distinct slots."""
    sweep = tmp_path / "sweep"
    app = REPO / "tests" / "slurm_app" / "app.py"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    args = [f"hydra.searchpath=[file://{CONF}]", "hydra/launcher=local", "hydra.launcher.max_parallel=2",
            f"hydra.sweep.dir={sweep}", "work.rendezvous=2", "work.rendezvous_s=60", "x=1,2"]  # fmt: skip
    cmd = [sys.executable, str(app), "-m", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = [json.loads((sweep / str(i) / "result.json").read_text())["starts"][0] for i in (0, 1)]
    print("what each job saw:", [{k: s[k] for k in ("CUDA_VISIBLE_DEVICES", "NEUROMF_LOCAL_SLOT")} for s in seen])
    assert sorted(s["NEUROMF_LOCAL_SLOT"] for s in seen) == ["0", "1"]
    import torch

    if torch.cuda.device_count() >= 2:  # GPU jobs? the app has no trainer.accelerator: auto -> one GPU each
        assert len({s["CUDA_VISIBLE_DEVICES"] for s in seen}) == 2
    elif torch.cuda.device_count() == 0:
        assert all(s["CUDA_VISIBLE_DEVICES"] == "" for s in seen)
    # side by side, not one after the other: each job saw the other start while it waited (an event, not a time
    # bound: a sequential launcher would leave the first job alone until its 60 s wait ran out)
    assert [s["met"] for s in seen] == [2, 2]
