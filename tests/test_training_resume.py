"""Checkpoints: atomic last.ckpt, resume continuity, the sample CLI round trip, the train CLI dry run."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from training_helpers import tiny_cfg

from neuromf.sample import main as sample_main
from neuromf.tracking.checkpoint_network import CheckpointError, load_network
from neuromf.tracking.run import read_status
from neuromf.train import train

REPO = Path(__file__).resolve().parent.parent
RESUME = [
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.log_every_n_steps=1",
    "data.batch_size=2",
    "objective=val/loss_raw",
    "callbacks.diagnostics.every_n_steps=1",
]


def _losses(run_dir: Path) -> pd.Series:
    df = pd.read_csv(run_dir / "metrics.csv")
    return df.dropna(subset=["train/loss_raw"]).drop_duplicates("step", keep="last").set_index("step")["train/loss_raw"]


@pytest.mark.slow
def test_resume_continues_the_same_loss_curve(tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(tiny_cfg(*RESUME, "trainer.max_epochs=2"), straight)
    train(tiny_cfg(*RESUME, "trainer.max_epochs=1"), resumed)
    first_half = _losses(resumed)
    assert (resumed / "checkpoints" / "last.ckpt").exists()
    train(tiny_cfg(*RESUME, "trainer.max_epochs=2"), resumed)  # same run dir -> resumes from last.ckpt
    a, b = _losses(straight), _losses(resumed)
    assert list(a.index) == list(b.index) == [0, 1, 2, 3]
    assert len(first_half) == 2
    torch.testing.assert_close(torch.tensor(b.values), torch.tensor(a.values), rtol=1e-5, atol=1e-6)
    assert read_status(resumed)["global_step"] == 4 and read_status(resumed)["status"] == "completed"


@pytest.mark.slow
def test_checkpoint_round_trip_and_sample_cli(tmp_path, capsys):
    run = tmp_path / "run"
    train(tiny_cfg(*RESUME, "trainer.max_epochs=1"), run)
    ckpt = run / "checkpoints" / "last.ckpt"
    assert not list((run / "checkpoints").glob("*.tmp"))  # written atomically, no leftovers
    ema_net, hparams = load_network(ckpt, use_ema=True)
    raw_net, _ = load_network(ckpt, use_ema=False)
    assert hparams["model"]["num_channels"] == [8, 8, 16]
    assert any(not torch.equal(a, b) for a, b in zip(ema_net.parameters(), raw_net.parameters()))
    out = tmp_path / "samples"
    assert sample_main([str(ckpt), "--n", "2", "--nfe", "2", "--seed", "3", "--out", str(out)]) == 0
    first = torch.load(out / "samples.pt", weights_only=True)
    assert first.shape == (2, 1, 32, 32, 32)
    assert sorted(p.name for p in out.glob("sample_00*")) == ["sample_00.nii.gz", "sample_00.png"]
    assert sample_main([str(ckpt), "--n", "2", "--nfe", "2", "--seed", "3", "--out", str(tmp_path / "again")]) == 0
    torch.testing.assert_close(torch.load(tmp_path / "again" / "samples.pt", weights_only=True), first)
    assert str(out) in capsys.readouterr().out


def test_sample_cli_refuses_bad_checkpoints(tmp_path, capsys):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_network(tmp_path / "missing.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    with pytest.raises(CheckpointError, match="not a NeuroMF checkpoint"):
        load_network(tmp_path / "foreign.ckpt")
    model = {"_target_": "neuromf.models.MeanFlowUNet", "num_channels": [8, 8, 16], "norm_num_groups": 4}
    torch.save(
        {
            "state_dict": {"net.unet.conv_in.conv.weight": torch.zeros(3)},
            "hyper_parameters": {"model": model},
        },
        tmp_path / "mismatch.ckpt",
    )
    with pytest.raises(CheckpointError, match="do not match the model config"):
        load_network(tmp_path / "mismatch.ckpt")
    assert sample_main([str(tmp_path / "missing.ckpt")]) == 2
    assert "missing.ckpt" in capsys.readouterr().err


@pytest.mark.slow
def test_train_cli_fast_dev_run_on_the_demo_data(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "neuromf.train",
        "trainer.fast_dev_run=true",
        "logger=csv",
        "torch_threads=2",
        "callbacks.samples.enabled=false",
        "eval.feat3d_enabled=false",
        f"hydra.run.dir={tmp_path}/run",
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_status(tmp_path / "run")["status"] == "completed"


def test_train_cli_reports_a_bad_override_with_hydras_message(tmp_path):
    cmd = [sys.executable, "-m", "neuromf.train", "model.conditionning=dual", f"hydra.run.dir={tmp_path}/run"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert proc.returncode != 0
    assert "Could not override 'model.conditionning'" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_a_diverging_run_stops_is_recorded_and_returns_nan(tmp_path):
    """An absurd learning rate blows the weights up: the monitor stops the run, status.json says why, and the
    task returns NaN (an Optuna FAIL) instead of raising."""
    run = tmp_path / "run"
    result = train(
        tiny_cfg(*RESUME, "trainer.max_epochs=3", "optim.lr=1e30", "callbacks.divergence.grace_steps=0"), run
    )
    status = read_status(run)
    assert result != result  # NaN
    assert status["status"] == "diverged" and ("nan" in status["reason"] or "running minimum" in status["reason"])
    assert status["global_step"] < 6  # stopped before the 3 epochs x 2 steps


@pytest.mark.parametrize(
    "override,message",
    [
        ("model.in_channels=4", "latents have 1 channels but the model expects 4"),
        ("data.latent_dir=/nonexistent/store", "/nonexistent/store/manifest.csv: manifest not found"),
        ("ckpt_path=/nonexistent/last.ckpt", "ckpt_path=/nonexistent/last.ckpt: no such checkpoint"),
    ],
)
def test_train_cli_reports_bad_input_in_one_line(tmp_path, override, message):
    cmd = [sys.executable, "-m", "neuromf.train", override, "logger=csv", f"hydra.run.dir={tmp_path}/run"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 2
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert read_status(tmp_path / "run")["status"] == "failed"
