"""Faults a cluster user meets, each reproduced: bad config values, NaN data, a diverging run, unwritable or corrupt
checkpoints, two processes on one run dir, and a kill -9 mid-epoch (exact resume). Process faults run the real CLI
in a subprocess with real signals."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from training_helpers import TINY, tiny_cfg

from neuromf.config_schema import config_errors
from neuromf.data.store import read_latent, write_latent
from neuromf.sweep.pruning import lock_holder, stale_reason
from neuromf.tracking.lock import RunLock, holder_line
from neuromf.tracking.run import read_status
from neuromf.train import InputError, train
from neuromf.training.checkpoint_io import (
    AtomicCheckpointIO,
    CheckpointWriteError,
    find_resume_checkpoint,
    validate_checkpoint,
)

REPO = Path(__file__).resolve().parent.parent
# 2 steps per epoch (4 for the exact-resume test), one validation batch, CSV logging only, one thread
SMALL = [
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.log_every_n_steps=1",
    "data.batch_size=2",
    "objective=val/loss_raw",
    "torch_threads=1",
]


def cli(run_dir: Path, *overrides: str, timeout: float = 300, prefix: tuple[str, ...] = ()):
    cmd = [*prefix, sys.executable, "-m", "neuromf.train", *TINY, *SMALL, *overrides, f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


def step_rows(run_dir: Path) -> pd.Series:
    """train/loss_raw by step (asserting one row per step)."""
    df = pd.read_csv(run_dir / "metrics.csv").dropna(subset=["train/loss_raw"])
    assert not df["step"].duplicated().any(), f"steps logged twice: {sorted(df['step'][df['step'].duplicated()])}"
    return df.set_index("step")["train/loss_raw"].sort_index()


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


# ---------------------------------------------------------------- A. config values


def test_config_schema_accepts_the_shipped_configs_and_names_each_bad_key():
    for extra in ([], ["experiment=brain_maisi"], ["trainer=ddp"], ["loss=meanflow"], ["trainer.max_epochs=-1"]):
        assert config_errors(tiny_cfg(*extra)) == [], extra
    errors = config_errors(
        tiny_cfg(
            "optim.lr=-1",
            "loss.norm_p=abc",
            "data.batch_size=0",
            "trainer.max_epochs=-5",
            "trainer.max_steps=0",
            "data.split=[0.5,0.6,0.1]",
            "callbacks.ema.decay=1.0",
            "data.batch_size=2.5",
        )
    )
    assert errors == [
        "optim.lr=-1: must be a number > 0",
        "loss.norm_p='abc': must be a number >= 0",
        "data.batch_size=2.5: must be an integer >= 1",
        "data.split=[0.5, 0.6, 0.1]: must be 2 or 3 fractions in [0, 1] summing to 1 (within 1e-6)",
        "trainer.max_epochs=-5: must be an integer >= 1, or -1 for no epoch limit",
        "trainer.max_steps=0: must be an integer >= 1, or -1 for no step limit",
        "callbacks.ema.decay=1.0: must be a number in [0, 1)",
    ]
    assert config_errors(tiny_cfg("data.split=[0.8,0.1999999,0.0000001]")) == []


@pytest.mark.parametrize(
    "override,message",
    [
        ("optim.lr=-1", "optim.lr=-1: must be a number > 0"),
        ("loss.norm_p=abc", "loss.norm_p='abc': must be a number >= 0"),
        ("data.batch_size=0", "data.batch_size=0: must be an integer >= 1"),
        ("trainer.max_epochs=-5", "trainer.max_epochs=-5: must be an integer >= 1, or -1"),
        ("data.split=[0.5,0.6,0.1]", "data.split=[0.5, 0.6, 0.1]: must be 2 or 3 fractions in [0, 1] summing to 1"),
    ],
)
def test_train_cli_rejects_a_bad_config_value_in_one_line(tmp_path, override, message):
    proc = cli(tmp_path / "run", override)
    assert proc.returncode == 2
    line = one_error_line(proc.stderr)
    assert message in line and line.startswith("error: invalid config: ")
    status = read_status(tmp_path / "run")
    assert status["status"] == "failed" and message in status["reason"]
    assert not (tmp_path / "run" / "metrics.csv").exists() and not (tmp_path / "run" / "checkpoints").exists()


def test_a_sweep_records_a_bad_config_value_as_a_failed_arm(tmp_path):
    cmd = [sys.executable, "-m", "neuromf.train", "-m", *TINY, *SMALL, "optim.lr=-1", f"hydra.sweep.dir={tmp_path}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    status = read_status(tmp_path / "0")
    assert status["status"] == "failed" and "optim.lr=-1: must be a number > 0" in status["reason"]


# ---------------------------------------------------------------- B. non-finite data


def test_latents_with_nan_voxels_are_named_before_training(tmp_path):
    from neuromf.data.demo import ensure_demo

    store = tmp_path / "store"
    shutil.copytree(ensure_demo("small"), store)
    files = sorted((store / "latents").glob("*.safetensors"))
    for path, value in ((files[3], float("nan")), (files[7], float("inf"))):
        z, affine = read_latent(path)
        z[0, 1, 2, 3] = value
        write_latent(path, z, affine)
    run = tmp_path / "run"
    with pytest.raises(InputError) as err:
        train(tiny_cfg(*SMALL, f"data.latent_dir={store}"), run)
    msg = str(err.value)
    assert "2 latent file(s) hold NaN/Inf values" in msg and "\n" not in msg
    assert str(files[3]) in msg and "1 NaN" in msg and str(files[7]) in msg and "1 Inf" in msg
    assert not (run / "checkpoints").exists() and not (run / "metrics.csv").exists()


# ---------------------------------------------------------------- C. non-finite checkpoints


def _ckpt(value: float, step: int) -> dict:
    return {
        "global_step": step,
        "epoch": 0,
        "state_dict": {"net.w": torch.full((3,), value)},
        "current_model_state": {"net.w": torch.ones(3)},
        "optimizer_states": [{"state": {0: {"exp_avg": torch.zeros(3)}}}],
    }


def test_a_non_finite_checkpoint_never_replaces_a_finite_one(tmp_path):
    io = AtomicCheckpointIO()
    last = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint(_ckpt(1.0, 5), last)
    io.save_checkpoint(_ckpt(float("nan"), 6), last)  # EMA weights NaN
    bad = _ckpt(1.0, 7)
    bad["optimizer_states"][0]["state"][0]["exp_avg"][1] = float("inf")
    io.save_checkpoint(bad, last)
    assert validate_checkpoint(last)["global_step"] == 5
    assert [(step, names) for _, step, names in io.refused] == [
        (6, ["state_dict/net.w"]),
        (7, ["optimizer_states/0/state/0/exp_avg"]),
    ]
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt"]


@pytest.mark.slow
def test_a_diverging_run_keeps_its_last_finite_checkpoint(tmp_path):
    """lr=1e30: the weights blow up within a few steps. last.ckpt (written every step) keeps the last finite
    weights, status.json says which step it holds, and a re-run resumes from finite weights."""
    run = tmp_path / "run"
    cfg = [*SMALL, "trainer.max_epochs=3", "optim.lr=1e30", "callbacks.divergence.grace_steps=0"]
    result = train(tiny_cfg(*cfg, "callbacks.checkpoint.every_n_train_steps=1"), run)
    status = read_status(run)
    assert result != result and status["status"] == "diverged"
    assert status["refused_checkpoint_steps"], status  # the non-finite ones were not written
    info = validate_checkpoint(run / "checkpoints" / "last.ckpt")  # raises if not finite
    assert info["global_step"] == status["checkpoint_step"] < min(status["refused_checkpoint_steps"])


# ---------------------------------------------------------------- D. write errors


def test_a_failed_checkpoint_write_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    import neuromf.training.checkpoint_io as cio

    io = AtomicCheckpointIO()
    last = tmp_path / "last.ckpt"
    io.save_checkpoint(_ckpt(1.0, 1), last)

    def disk_full(checkpoint, path):
        Path(path).write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(cio, "_save_local", disk_full)
    with pytest.raises(CheckpointWriteError, match=r"cannot write checkpoint .*last\.ckpt\.tmp: No space left on dev"):
        io.save_checkpoint(_ckpt(2.0, 2), last)
    assert validate_checkpoint(last)["global_step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux) to drop CAP_DAC_OVERRIDE")
def test_a_read_only_checkpoint_dir_is_one_error_line(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints").chmod(0o555)
    prefix = ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all")
    if os.geteuid() != 0:
        prefix = ()
    proc = cli(run, "trainer.max_epochs=1", prefix=prefix)
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = one_error_line(proc.stderr)
    assert f"cannot write checkpoint {run}/checkpoints/last.ckpt.tmp: Permission denied" in line
    assert read_status(run)["status"] == "failed"


# ---------------------------------------------------------------- E. corrupt checkpoints


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.slow
def test_a_truncated_last_ckpt_without_fallback_is_one_error_line_and_nothing_is_rewritten(tmp_path):
    run = tmp_path / "run"
    train(tiny_cfg(*SMALL, "trainer.max_epochs=1"), run)
    last = run / "checkpoints" / "last.ckpt"
    assert not (run / "checkpoints" / "last.prev.ckpt").exists()
    _truncate(last)
    kept = (".lock", "train.log")  # the lock's holder line and Hydra's log
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name not in kept}
    status_before = read_status(run)
    proc = cli(run, "trainer.max_epochs=2")
    assert proc.returncode == 2
    line = one_error_line(proc.stderr)
    assert f"{last}: unreadable checkpoint" in line and "delete the bad file(s) to start the run over" in line
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name not in kept}
    status_after = json.loads(after.pop("status.json"))
    assert after == {k: v for k, v in before.items() if k != "status.json"}  # hparams, metrics, split untouched
    # status.json: only the failure is recorded (no "running", no new overrides or provenance before validation)
    assert status_after.pop("status") == "failed" and f"{last}: unreadable checkpoint" in status_after.pop("reason")
    assert status_after == {k: v for k, v in status_before.items() if k not in ("status", "reason")}


@pytest.mark.slow
def test_a_truncated_last_ckpt_falls_back_to_the_previous_one(tmp_path):
    run = tmp_path / "run"
    train(tiny_cfg(*SMALL, "trainer.max_epochs=2"), run)  # last.ckpt at step 4, last.prev.ckpt at step 2
    ckpts = run / "checkpoints"
    assert validate_checkpoint(ckpts / "last.prev.ckpt")["global_step"] == 2
    _truncate(ckpts / "last.ckpt")
    found, problems = find_resume_checkpoint(ckpts)
    assert found["path"] == str(ckpts / "last.prev.ckpt") and "last.ckpt: unreadable checkpoint" in problems[0]
    proc = cli(run, "trainer.max_epochs=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resuming from {ckpts / 'last.prev.ckpt'} (step 2) instead" in proc.stderr
    status = read_status(run)
    assert status["status"] == "completed" and status["resumed_step"] == 2 and status["checkpoint_step"] == 6
    assert list(step_rows(run).index) == [0, 1, 2, 3, 4, 5]


# ---------------------------------------------------------------- F. one writer per run dir


def test_a_second_process_on_a_run_dir_in_use_is_refused(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "status.json").write_text(json.dumps({"status": "running"}))
    with RunLock(run):  # this test process is the live holder
        proc = cli(run, "trainer.max_epochs=1")
    assert proc.returncode == 2
    line = one_error_line(proc.stderr)
    assert "run dir is in use by another process" in line and f"pid={os.getpid()}" in line
    assert read_status(run) == {"status": "running"}  # the holder's status is left alone
    assert not (run / "metrics.csv").exists()


@pytest.mark.slow
def test_a_stale_lock_of_a_killed_run_is_taken_over(tmp_path):
    """A real kill -9 of a training process: its lock dies with it, and the re-run takes over and resumes."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "neuromf.train", *TINY, *SMALL, "trainer.max_epochs=50", f"hydra.run.dir={run}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 240
        while not (run / "checkpoints" / "last.ckpt").exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        assert f"pid={proc.pid}" in (run / ".lock").read_text()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = cli(run, "trainer.max_epochs=2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "took over the stale lock of host=" in done.stderr and f"pid={proc.pid}" in done.stderr
    assert read_status(run)["status"] == "completed" and (run / ".lock").read_text() == ""


def test_a_filesystem_without_flock_is_one_error_line_saying_what_to_do(tmp_path, monkeypatch):
    """Lustre mounted without `-o flock` fails every flock with ENOSYS: the run stops naming the mount option and
    NEUROMF_RUN_LOCK=off; with that it runs unlocked, and the sweeper's stale check reads the holder line."""

    def no_flock(fd, op):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    run = tmp_path / "run"
    with pytest.raises(InputError) as err:
        train(tiny_cfg(*SMALL, "trainer.max_epochs=1"), run)
    message = str(err.value)
    assert message.startswith(f"{run}/.lock: this filesystem does not support flock") and "\n" not in message
    assert "Function not implemented" in message and "-o flock" in message and "NEUROMF_RUN_LOCK=off" in message
    assert not (run / "metrics.csv").exists()

    monkeypatch.setenv("NEUROMF_RUN_LOCK", "off")
    trial = type("Trial", (), {"user_attrs": {"run_dir": str(run)}})
    with RunLock(run):
        assert (run / ".lock").read_text().strip() == holder_line() == lock_holder(run)  # this live process
        monkeypatch.delenv("NEUROMF_RUN_LOCK")
        assert lock_holder(run) == holder_line() and stale_reason(trial) is None  # flock fails: the line is read
        monkeypatch.setenv("NEUROMF_RUN_LOCK", "off")
    assert (run / ".lock").read_text() == "" and lock_holder(run) is None
    gone = subprocess.Popen(["true"])
    gone.wait()  # a holder that died without emptying the line
    (run / ".lock").write_text(holder_line().replace(f"pid={os.getpid()}", f"pid={gone.pid}"))
    assert lock_holder(run) is None and "no longer runs" in stale_reason(trial)


# ---------------------------------------------------------------- H. exact resume after kill -9 mid-epoch

EXACT = ["trainer.limit_train_batches=4", "callbacks.checkpoint.every_n_train_steps=1", "trainer.max_epochs=2"]
# augmentation on, in two persistent worker processes: each sample's draws depend on (seed, epoch, index) only
AUGMENTED = ["data.augmentation={enabled:true,noise_std:0.1,flip_lr_prob:0.5}", "data.num_workers=2"]


def _trained_steps(metrics: Path) -> set[int]:
    try:
        df = pd.read_csv(metrics)
    except (FileNotFoundError, pd.errors.EmptyDataError, pd.errors.ParserError):
        return set()
    if "train/loss_raw" not in df:
        return set()
    return set(df.dropna(subset=["train/loss_raw"])["step"].astype(int))


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], AUGMENTED], ids=["plain", "augmented"])
def test_kill_9_mid_epoch_resumes_the_uninterrupted_loss_curve(tmp_path, extra):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    train(tiny_cfg(*SMALL, *EXACT, *extra), straight)
    reference = step_rows(straight)
    assert list(reference.index) == list(range(8))

    cmd = [sys.executable, "-m", "neuromf.train", *TINY, *SMALL, *EXACT, *extra, f"hydra.run.dir={killed}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:  # step 4's loss row is flushed after the checkpoint of step 5 (epoch 2's first batch) is written
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, "the run finished before it could be killed mid-epoch"
            assert time.monotonic() < deadline
            if 4 in _trained_steps(killed / "metrics.csv"):
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    held = validate_checkpoint(killed / "checkpoints" / "last.ckpt")["global_step"]
    assert 5 <= held <= 7, f"killed at step {held}: not mid-epoch"

    resumed = cli(killed, *EXACT, *extra)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "not resumable" not in resumed.stderr
    assert read_status(killed)["resumed_step"] == held
    curve = step_rows(killed)  # one row per step
    assert list(curve.index) == list(range(8))
    torch.testing.assert_close(torch.tensor(curve.values), torch.tensor(reference.values), rtol=1e-5, atol=1e-6)


def test_a_killed_holders_forked_children_delay_the_takeover_but_do_not_block_it(tmp_path):
    """DataLoader workers are forked with the lock's fd and outlive a kill -9 of their parent for a moment: the
    next run waits for them (the holder line names a dead pid on this host) instead of refusing. The child ends
    when told to (a file appears), so nothing depends on how fast the machine is."""
    import threading

    release, run = tmp_path / "release", tmp_path / "run"
    script = (
        "import os, signal, sys, time\n"
        "from neuromf.tracking.lock import RunLock\n"
        f"RunLock({str(run)!r}).acquire()\n"
        "if os.fork() == 0:  # keeps the inherited lock (not the pipes) until the test creates the release file\n"
        "    os.close(1); os.close(2)\n"
        f"    while not os.path.exists({str(release)!r}): time.sleep(0.05)\n"
        "    os._exit(0)\n"
        "print(os.getpid(), flush=True); os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=1800)
    assert proc.returncode == -signal.SIGKILL and proc.stdout.strip().isdigit()
    taken: list = []
    waiter = threading.Thread(target=lambda: taken.append(RunLock(run).acquire()), daemon=True)
    waiter.start()
    waiter.join(timeout=2.0)
    assert not taken, "took the lock while the killed holder's child still held it"
    release.touch()
    waiter.join(timeout=1800)
    assert taken, "the lock was not taken over after the child ended"
    try:
        assert f"pid={proc.stdout.strip()}" in (taken[0].stale_holder or "")  # the dead parent's holder line
    finally:
        taken[0].release()
