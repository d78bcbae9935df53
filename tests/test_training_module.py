"""The Lightning module, its optimiser schedule, EMA and callbacks."""

import math
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from training_helpers import tiny_cfg

from neuromf.train import build_module
from neuromf.training.callbacks import DivergenceMonitor, SampleCollector
from neuromf.training.ema import EMA
from neuromf.training.optim import build_optimizer, build_scheduler


def _lrs(schedule, steps=14, warmup=4, min_ratio=0.1):
    p = [torch.nn.Parameter(torch.zeros(1))]
    opt = build_optimizer(p, {"lr": 2.0})
    sched = build_scheduler(opt, {"schedule": schedule, "warmup_steps": warmup, "min_lr_ratio": min_ratio}, steps)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
def test_lr_schedule_values_at_known_steps(schedule):
    lrs, W, T, m = _lrs(schedule), 4, 14, 0.1
    for k in range(W):  # linear warmup lr * (k + 1) / W
        assert lrs[k] == pytest.approx(2.0 * (k + 1) / W)
    for k in range(W, T):
        frac = (k - W) / (T - W)
        expected = {
            "constant": 1.0,
            "linear": 1 - (1 - m) * frac,
            "cosine": m + (1 - m) * (1 + math.cos(math.pi * frac)) / 2,
        }[schedule]
        assert lrs[k] == pytest.approx(2.0 * expected, rel=1e-6)


def test_unknown_schedule_is_refused():
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(1))], {"lr": 1.0})
    with pytest.raises(ValueError, match="optim.schedule"):
        build_scheduler(opt, {"schedule": "step"}, 10)


def test_module_builds_and_refuses_x_prediction_with_fd():
    module = build_module(tiny_cfg())
    assert module.net.use_v_head and module.hparams.model["conditioning"] == "t_h"
    with pytest.raises(ValueError, match="prediction_type=x with loss.jvp=fd"):
        build_module(tiny_cfg("model.prediction_type=x", "loss.jvp=fd"))


def test_training_step_changes_the_weights_and_logs_diagnostics():
    module = build_module(tiny_cfg())
    optimizer = build_optimizer(module.net.parameters(), {"lr": 1e-3})
    before = [p.detach().clone() for p in module.net.parameters()]
    x = torch.randn(2, 1, 16, 16, 16)
    module.log = lambda *a, **k: None  # outside a Trainer
    for step in range(5):  # zero-initialised convs (MAISI res blocks, extra embedding) unblock layer by layer
        optimizer.zero_grad()
        module.training_step(x, step).backward()
        optimizer.step()
    changed = sum(not torch.equal(a, b) for a, b in zip(before, module.net.parameters()))
    assert changed == len(before)
    assert {"loss_raw", "loss_u", "loss_v", "jvp_norm", "cos_V_v", "cos_vhat_v", "loss_ch0"} <= set(
        module.last_diagnostics
    )


def _mask_spy(monkeypatch):
    """Wraps the module's random_spatial_mask; records the device it was asked for and the mask's device."""
    import neuromf.training.module as module_py

    calls, real = [], module_py.random_spatial_mask

    def spy(*args, **kwargs):
        mask = real(*args, **kwargs)
        calls.append((kwargs.get("device"), mask.device))
        return mask

    monkeypatch.setattr(module_py, "random_spatial_mask", spy)
    return calls


def test_loss_mask_is_drawn_on_the_batch_device(monkeypatch):
    calls = _mask_spy(monkeypatch)
    module = build_module(tiny_cfg("data.mask_ratio=0.25"))
    x = torch.randn(2, 1, 8, 8, 8)
    module._objective(x, module._gen())
    assert calls and all(asked is not None and torch.device(asked) == x.device == got for asked, got in calls)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_loss_mask_on_cuda_uses_the_modules_cuda_generator(monkeypatch):
    calls = _mask_spy(monkeypatch)
    module = build_module(tiny_cfg("data.mask_ratio=0.25")).cuda()
    module.log = lambda *a, **k: None
    x = torch.randn(2, 1, 8, 8, 8, device="cuda")
    loss = module.training_step(x, 0)
    assert torch.isfinite(loss) and calls[-1][1].type == "cuda"


class _Recorder(pl.Callback):
    """Records the trained weights after every step (before EMA's update runs? no: EMA is updated in its own
    on_train_batch_end; this callback is placed before it, so it sees the same post-step weights)."""

    def __init__(self):
        self.weights = []

    def on_train_batch_end(self, trainer, pl_module, *args):
        self.weights.append(pl_module.net.unet.conv_in.conv.weight.detach().clone())


def test_ema_moves_toward_the_weights_at_the_configured_rate(tmp_path):
    cfg = tiny_cfg("trainer.max_steps=3", "data.batch_size=2")
    module = build_module(cfg)
    from neuromf.data.datamodule import datamodule_for_run

    recorder, ema = _Recorder(), EMA(decay=0.5, warmup=False)  # constant decay (warm-up: test_training_callbacks)
    trainer = pl.Trainer(
        max_steps=3,
        callbacks=[recorder, ema],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        inference_mode=False,
    )
    trainer.fit(module, datamodule=datamodule_for_run(cfg, tmp_path))
    w = recorder.weights
    expected = w[0]  # AveragedModel copies the weights at its first update
    for wk in w[1:]:
        expected = 0.5 * expected + 0.5 * wk
    # at the end of fit the EMA weights are copied into the module
    torch.testing.assert_close(ema.ema_net.unet.conv_in.conv.weight, expected)
    torch.testing.assert_close(module.net.unet.conv_in.conv.weight, expected)
    assert not torch.allclose(expected, w[-1])


def _fake_trainer(step=0):
    return SimpleNamespace(global_step=step, should_stop=False)


def _feed(monitor, values, start=0):
    trainer = _fake_trainer()
    for i, v in enumerate(values):
        trainer.global_step = start + i
        module = SimpleNamespace(last_diagnostics={"loss_raw": torch.tensor(v)})
        monitor.on_train_batch_end(trainer, module, None, None, i)
        if trainer.should_stop:
            return trainer.global_step
    return None


def test_divergence_monitor_fires_on_nan_and_inf():
    monitor = DivergenceMonitor(threshold=10.0, grace_steps=100)
    assert _feed(monitor, [1.0, 0.9, float("nan")]) == 2
    assert "nan" in monitor.reason
    assert _feed(DivergenceMonitor(grace_steps=100), [1.0, float("inf")]) == 1


def test_divergence_monitor_threshold_after_grace_only():
    monitor = DivergenceMonitor(threshold=10.0, grace_steps=3, window=1)  # window 1: raw values
    # step 1: 50x the running minimum but inside the grace period -> no stop; step 5: > 10 x 0.5 -> stop
    assert _feed(monitor, [1.0, 50.0, 0.5, 0.6, 4.0, 5.1]) == 5
    assert "running minimum" in monitor.reason
    assert _feed(DivergenceMonitor(threshold=10.0, grace_steps=3, window=1), [1.0, 9.9, 9.0, 9.5, 9.9]) is None


class _FakeDataModule:
    latent_shape = (1, 8, 8, 8)

    def __init__(self):
        self.saved = []

    def save_sample(self, z, stem):
        self.saved.append(stem)
        return stem.with_suffix(".nii.gz"), stem.with_suffix(".png")


def _collector_trainer(epoch, rank0=True):
    return SimpleNamespace(
        sanity_checking=False,
        is_global_zero=rank0,
        current_epoch=epoch,
        global_step=epoch * 10,
        datamodule=_FakeDataModule(),
        loggers=[],
    )


def test_sample_collector_determinism_nfe_ema_and_epoch_skipping(tmp_path):
    from engine_helpers import tiny_model

    ema_net, net = tiny_model(in_channels=1, seed=0), tiny_model(in_channels=1, seed=1)
    module = SimpleNamespace(logged={}, device=torch.device("cpu"))
    module.generate = lambda noise, nfe, use_ema: __import__("neuromf.meanflow", fromlist=["sample"]).sample(
        ema_net if use_ema else net, noise, nfe
    )
    module.log = lambda k, v, **kw: module.logged.__setitem__(k, v)
    col = SampleCollector(run_dir=str(tmp_path), every_n_epochs=2, num_samples=2, nfe_list=[1, 3], use_ema=True)
    assert not col.should_run(_collector_trainer(epoch=0)) and col.should_run(_collector_trainer(epoch=1))
    assert not col.should_run(_collector_trainer(epoch=1, rank0=False))  # rank guard
    # the final weights are sampled whatever the epoch: a budget's last step (max_steps) or the last epoch
    last_step = SimpleNamespace(**vars(_collector_trainer(epoch=2)), max_steps=20, max_epochs=-1)
    assert col.should_run(last_step) and not col.should_run(SimpleNamespace(**{**vars(last_step), "max_steps": 40}))
    last_epoch = SimpleNamespace(**vars(_collector_trainer(epoch=4)), max_steps=-1, max_epochs=5)
    assert col.should_run(last_epoch) and not col.should_run(SimpleNamespace(**{**vars(last_epoch), "max_epochs": 9}))
    a = col.collect(_collector_trainer(1), module)
    b = {k: v.clone() for k, v in col.collect(_collector_trainer(1), module).items()}
    torch.testing.assert_close(a[1], b[1])  # same noise -> same samples
    assert not torch.allclose(a[1], a[3])  # 1 vs 3 steps differ
    assert module.logged["val/nfe_consistency"] == pytest.approx(float((a[1] - a[3]).pow(2).mean().sqrt()))
    raw = SampleCollector(run_dir=str(tmp_path / "raw"), num_samples=2, nfe_list=[1], use_ema=False)
    assert not torch.allclose(raw.collect(_collector_trainer(1), module)[1], a[1])  # EMA weights were used
    assert (tmp_path / "samples" / "epoch_0001" / "nfe_3" / "latents.pt").exists()
