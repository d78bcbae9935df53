"""EMA warm-up, the smoothed divergence monitor and the du/dt split logged by the diagnostics callback."""

import math
import random
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from engine_helpers import tiny_model

from neuromf.meanflow import MeanFlowObjective
from neuromf.meanflow.jvp import rms_norm, time_derivative_parts
from neuromf.training.callbacks import DiagnosticsLogger, DivergenceMonitor
from neuromf.training.ema import EMA, warmup_decay


# ---- EMA warm-up ---------------------------------------------------------------------------------------------
class _Scalar(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))


def _ema_run(ema: EMA, module: _Scalar, values, start: int = 0) -> None:
    """Sets the scalar weight to each value in turn and lets the callback update after each 'optimizer step'."""
    for k, value in enumerate(values, start=start):
        with torch.no_grad():
            module.w.fill_(value)
        ema.on_train_batch_end(SimpleNamespace(global_step=k + 1), module, None, None, k)


def _ema_value(ema: EMA) -> float:
    return float(ema._average_model.module.w.detach())


def _closed_form(values, decay):
    """e_0 = w_0 (AveragedModel copies at its first update); e_n = d_n e_{n-1} + (1 - d_n) w_n."""
    e = values[0]
    for n, w in enumerate(values[1:], start=1):
        d = min(decay, (1 + n) / (10 + n))
        e = d * e + (1 - d) * w
    return e


def test_ema_warmup_follows_its_closed_form():
    values = [float(v) for v in torch.linspace(-1.0, 3.0, 40) ** 2]
    module, ema = _Scalar(), EMA(decay=0.9)
    ema.setup(None, module, "fit")
    _ema_run(ema, module, values[:2])
    assert _ema_value(ema) == pytest.approx(2 / 11 * values[0] + 9 / 11 * values[1])
    _ema_run(ema, module, values[2:], start=2)
    # (1 + n)/(10 + n) < 0.9 up to n = 80: over these 40 updates the warm-up decay applies throughout
    assert _ema_value(ema) == pytest.approx(_closed_form(values, 0.9), rel=1e-6)
    assert warmup_decay(0.9, 100) == 0.9 and warmup_decay(0.9, 1) == pytest.approx(2 / 11)

    plain = EMA(decay=0.9, warmup=False)
    plain.setup(None, module, "fit")
    _ema_run(plain, module, values)
    e = values[0]
    for w in values[1:]:
        e = 0.9 * e + 0.1 * w
    assert _ema_value(plain) == pytest.approx(e, rel=1e-6)


def test_ema_warmup_schedule_survives_a_checkpoint():
    """The update count n (AveragedModel.n_averaged) is restored, so the resumed EMA equals the straight one."""
    values = [math.sin(k) + 0.1 * k for k in range(30)]
    module, straight = _Scalar(), EMA(decay=0.99)
    straight.setup(None, module, "fit")
    _ema_run(straight, module, values)

    first, module = EMA(decay=0.99), _Scalar()
    first.setup(None, module, "fit")
    _ema_run(first, module, values[:12])
    checkpoint = {"state_dict": module.state_dict()}
    first.on_save_checkpoint(None, module, checkpoint)
    callback_state = first.state_dict()
    assert int(checkpoint["averaging_state"]["n_averaged"]) == 12

    resumed, module = EMA(decay=0.99), _Scalar()
    resumed.setup(None, module, "fit")
    resumed.load_state_dict(callback_state)
    resumed.on_load_checkpoint(None, module, checkpoint)
    _ema_run(resumed, module, values[12:], start=12)
    assert _ema_value(resumed) == pytest.approx(_ema_value(straight))
    assert _ema_value(straight) == pytest.approx(_closed_form(values, 0.99), rel=1e-6)


# ---- divergence monitor ----------------------------------------------------------------------------------------
def _feed(monitor, values, start=0):
    """Feeds raw losses at steps start, start + 1, ...; returns the step that stopped the run (None if none)."""
    trainer = SimpleNamespace(global_step=start, should_stop=False)
    for i, v in enumerate(values):
        trainer.global_step = start + i
        monitor.on_train_batch_end(trainer, SimpleNamespace(last_diagnostics={"loss_raw": torch.tensor(v)}), 0, 0, i)
        if trainer.should_stop:
            return trainer.global_step
    return None


def _healthy(n=600, seed=0):
    """A decaying raw loss with log-normal noise and a 120x spike (59.8 vs ~0.5, as seen in a real run) every
    ~25 steps, twice in a row at times."""
    rng = random.Random(seed)
    out = []
    for k in range(n):
        base = 0.5 + 1.5 * math.exp(-k / 100)
        v = base * math.exp(rng.gauss(0, 0.4))
        if k % 25 == 7 or k % 100 == 8:
            v = 120 * base
        out.append(v)
    return out


def test_divergence_monitor_lets_a_spiky_healthy_run_go_on():
    curve = _healthy()
    assert _feed(DivergenceMonitor(threshold=100.0, grace_steps=50), curve) is None
    assert _feed(DivergenceMonitor(threshold=100.0, grace_steps=50, window=1), curve) is not None  # raw values


def test_divergence_monitor_stops_a_real_divergence():
    curve = _healthy(300)
    diverging = curve + [curve[-1] * 1.15**k for k in range(1, 200)]  # the loss grows 15 % a step
    monitor = DivergenceMonitor(threshold=100.0, grace_steps=50)
    step = _feed(monitor, diverging)
    assert step is not None and 300 < step < 300 + 60
    assert "running minimum" in monitor.reason and "median" in monitor.reason


def test_divergence_monitor_median_reacts_after_half_the_window():
    """A jump to 1000x that stays: the median of 25 values moves once 13 of them are high."""
    monitor = DivergenceMonitor(threshold=100.0, grace_steps=0, window=25)
    assert _feed(monitor, [1.0] * 40 + [1000.0] * 30) == 40 + 12
    assert monitor.running_min == 1.0


def test_divergence_monitor_state_round_trip_continues_identically():
    curve = _healthy(300) + [50.0 * 1.2**k for k in range(60)]
    straight = _feed(DivergenceMonitor(grace_steps=50), curve)
    first = DivergenceMonitor(grace_steps=50)
    assert _feed(first, curve[:310]) is None
    resumed = DivergenceMonitor(grace_steps=50)
    resumed.load_state_dict(first.state_dict())
    assert len(resumed.recent) == 25
    assert _feed(resumed, curve[310:], start=310) == straight is not None
    with pytest.raises(ValueError, match="window"):
        DivergenceMonitor(window=0)


# ---- diagnostics: the t/z split of du/dt ---------------------------------------------------------------------
def test_diagnostics_logger_logs_the_t_and_z_parts_of_du_dt():
    net = tiny_model(use_v_head=True)
    objective = MeanFlowObjective(jvp="exact")
    x = torch.randn(2, 2, 8, 8, 8, generator=torch.Generator().manual_seed(0))
    _, diag = objective(net, x, generator=torch.Generator().manual_seed(1))
    logged = {}
    module = SimpleNamespace(
        net=net,
        objective=objective,
        last_diagnostics=diag,
        device=torch.device("cpu"),
        log_dict=lambda metrics, **kw: logged.update(metrics),
    )
    logger = DiagnosticsLogger(every_n_steps=5)
    trainer = SimpleNamespace(global_step=10, world_size=1)
    logger.on_train_batch_start(trainer, module, x, 0)
    logger.on_train_batch_end(trainer, module, None, x, 0)
    p = objective.last_point
    du_dt_t, du_dt_z = time_derivative_parts(net, p["z_t"], p["r"], p["t"], p["v_tilde"])
    assert logged["train/jvp_t_norm"] == pytest.approx(float(rms_norm(du_dt_t)))
    assert logged["train/jvp_z_norm"] == pytest.approx(float(rms_norm(du_dt_z)))
    assert float(rms_norm(du_dt_t + du_dt_z)) == pytest.approx(float(diag["jvp_norm"]), rel=1e-4)
    assert logged["train/jvp_t_norm"] > 0 and logged["train/jvp_z_norm"] > 0
    logged.clear()
    trainer.global_step = 11  # not a logging step
    logger.on_train_batch_end(trainer, module, None, x, 1)
    assert not logged
