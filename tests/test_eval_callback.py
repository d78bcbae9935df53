"""EvaluationCallback driven by a real Lightning Trainer with a tiny fake module and data module."""

import json

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import EarlyStopping
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader

from neuromf.evaluation import EvaluationCallback, sliced_wasserstein

SHAPE = (1, 8, 8, 8)


class FakeData(pl.LightningDataModule):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(123)
        self.train = torch.randn(8, *SHAPE, generator=g)
        self.val = torch.randn(12, *SHAPE, generator=g)
        self.decode_calls = 0
        self.train_calls = 0

    def train_dataloader(self):
        return DataLoader(self.train, batch_size=4)

    def val_dataloader(self):
        return DataLoader(self.val, batch_size=6)

    def val_latents(self):
        return self.val.clone()

    def train_latents(self, limit=None, seed=0):
        self.train_calls += 1
        return self.train[:limit].clone()

    def decode(self, z):
        self.decode_calls += z.shape[0]
        return F.interpolate(z, scale_factor=4, mode="trilinear", align_corners=False)  # (B, 1, 32, 32, 32)


class FakeModule(pl.LightningModule):
    """generate() returns noise + shift; shift = offset (plateau) or offset / (1 + epoch) (improving), divided by
    nfe when ``nfe_helps`` (more steps -> closer to the data)."""

    def __init__(self, offset=2.0, improving=False, nfe_helps=False):
        super().__init__()
        self.nfe_helps = nfe_helps
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.offset, self.improving = offset, improving
        self.generate_calls = []

    def training_step(self, batch, batch_idx):
        return ((self.w - 1) ** 2).sum() + 0 * batch.mean()

    def validation_step(self, batch, batch_idx):
        self.log("val/loss_raw", batch.pow(2).mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)

    @torch.no_grad()
    def generate(self, noise, nfe=1, use_ema=None):
        self.generate_calls.append((noise.shape[0], nfe, use_ema, self.current_epoch))
        shift = self.offset / (1 + self.current_epoch) if self.improving else self.offset
        return noise + (shift / nfe if self.nfe_helps else shift)


def _trainer(tmp_path, callbacks, max_epochs, logger=False):
    return pl.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        callbacks=callbacks,
        logger=logger,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=str(tmp_path),
        num_sanity_val_steps=1,
    )


def _cb(tmp_path, **kw):
    args = dict(
        num_samples=10,
        nfe_list=[1],
        batch_size=4,
        swd_projections=32,
        feat3d_enabled=False,
        objective_key="val/swd",
        cache_dir=str(tmp_path / "c"),
    )
    args.update(kw)
    return EvaluationCallback(**args)


def test_early_stopping_triggers_after_patience_on_plateau(tmp_path):
    cb = _cb(tmp_path, nfe_list=[2], use_ema=True)
    es = EarlyStopping(monitor="val/swd", mode="min", patience=2)
    model = FakeModule(improving=False)
    trainer = _trainer(tmp_path, [cb, es], max_epochs=10)
    trainer.fit(model, datamodule=FakeData())
    # epoch 0 sets the best; epochs 1 and 2 do not improve -> stop after epoch 2 (sanity check skipped)
    assert [h["epoch"] for h in cb.history] == [0, 1, 2]
    assert es.stopped_epoch == 2 and trainer.current_epoch == 3
    assert len({h["val/swd"] for h in cb.history}) == 1  # fixed-seed noise -> identical values
    assert cb.best["val/swd"]["epoch"] == 0
    assert all(c[1:3] == (2, True) for c in model.generate_calls) and [c[0] for c in model.generate_calls[:3]] == [
        4,
        4,
        2,
    ]
    # the logged value is the SWD between the generated set and the validation latents
    dm = FakeData()
    noise = torch.randn(10, *SHAPE, generator=torch.Generator().manual_seed(0))
    expected = sliced_wasserstein(noise + 2.0, dm.val_latents(), num_projections=32, seed=0).item()
    assert cb.history[0]["val/swd"] == pytest.approx(expected, rel=1e-5)
    assert cb.history[0]["val/swd/nfe2"] == cb.history[0]["val/swd"] and cb.history[0]["val/eval_time_s"] > 0
    assert trainer.callback_metrics["val/swd"].item() == pytest.approx(expected, rel=1e-5)
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["finished"] and summary["objective"] == pytest.approx(expected, rel=1e-5)
    assert summary["best"]["val/swd"]["epoch"] == 0 and len(summary["history"]) == 3


def test_no_early_stop_while_improving(tmp_path):
    cb = _cb(tmp_path)
    es = EarlyStopping(monitor="val/swd", mode="min", patience=1)
    trainer = _trainer(tmp_path, [cb, es], max_epochs=4)
    trainer.fit(FakeModule(improving=True), datamodule=FakeData())
    assert [h["epoch"] for h in cb.history] == [0, 1, 2, 3] and trainer.current_epoch == 4
    swd = [h["val/swd"] for h in cb.history]
    assert swd == sorted(swd, reverse=True) and swd[0] > swd[-1]
    assert cb.best["val/swd"] == {"value": swd[-1], "epoch": 3, "step": cb.history[-1]["step"]}
    assert cb.best_value() == swd[-1]
    # state round-trips through a checkpoint dict
    other = _cb(tmp_path)
    other.load_state_dict(cb.state_dict())
    assert other.best == cb.best and other.history == cb.history


@pytest.mark.parametrize("every,val_every,expected", [(2, 1, [0, 2, 4]), (1, 2, [1, 3, 5]), (3, 2, [1, 5])])
def test_evaluation_cadence(tmp_path, every, val_every, expected):
    cb = _cb(tmp_path, every_n_epochs=every)
    trainer = _trainer(tmp_path, [cb], max_epochs=6)
    trainer.check_val_every_n_epoch = val_every
    trainer.fit(FakeModule(), datamodule=FakeData())
    assert [h["epoch"] for h in cb.history] == expected


@pytest.mark.slow
def test_feat3d_logged_cached_and_summarised(tmp_path):
    cb = _cb(tmp_path, feat3d_enabled=True, feat3d_every_n_epochs=2, feat3d_input_size=32, dataset_key="fake")
    dm = FakeData()
    logger = CSVLogger(save_dir=str(tmp_path), name="", version="")
    _trainer(tmp_path, [cb], max_epochs=3, logger=logger).fit(FakeModule(improving=True), datamodule=dm)
    assert [("val/feat3d_fd" in h) for h in cb.history] == [
        True,
        False,
        True,
    ]  # epoch 0 baseline, then every 2
    fd = [h["val/feat3d_fd"] for h in cb.history if "val/feat3d_fd" in h]
    assert fd[0] > fd[1] > 0  # samples moving towards the data
    assert (cb.cache.misses, cb.cache.hits) == (1, 0)  # real features computed once, kept for epoch 2
    # real set + reference levels (8 training latents, 8 collapsed, 10 noise latents) once, then generated twice
    assert dm.decode_calls == 12 + 8 + 8 + 10 + 2 * 10
    assert len(list((tmp_path / "c").glob("eval-reference-*.safetensors"))) == 1
    first = cb.history[0]
    assert {
        f"val/{m}/nfe1" for m in ("feat3d_fd", "kid", "precision", "recall", "density", "coverage", "msssim")
    } <= set(first)
    assert 0 <= first["val/coverage/nfe1"] <= 1 and 0 < first["val/msssim/nfe1"] <= 1
    ref = cb.reference
    assert ref["ref/feat3d_fd/real"] < ref["ref/feat3d_fd/noise"]  # (the fake data's "brains" are noise-like)
    assert ref["ref/msssim/collapsed"] > ref["ref/msssim/real"]  # one volume repeated: no diversity
    assert "ref/coverage/real" in cb.reference and "ref/msssim/noise" in cb.reference
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert set(summary["best"]) >= {"val/swd", "val/feat3d_fd"}
    assert summary["best"]["val/feat3d_fd"]["value"] == pytest.approx(min(fd))
    metrics_csv = (tmp_path / "metrics.csv").read_text()
    assert "val/swd" in metrics_csv and "val/feat3d_fd" in metrics_csv and "ref/kid/noise" in metrics_csv
    assert summary["reference"]["feat3d_fd"] == {
        lvl: cb.reference[f"ref/feat3d_fd/{lvl}"] for lvl in ("real", "collapsed", "noise")
    }
    # a second run with the same data and cache directory reuses the statistics from disk
    cb2 = _cb(tmp_path, feat3d_enabled=True, feat3d_every_n_epochs=2, feat3d_input_size=32, dataset_key="fake")
    dm2 = FakeData()
    _trainer(tmp_path / "run2", [cb2], max_epochs=1).fit(FakeModule(), datamodule=dm2)
    assert (cb2.cache.misses, cb2.cache.hits) == (0, 1) and dm2.decode_calls == 10
    # changing the data set key invalidates it
    cb3 = _cb(tmp_path, feat3d_enabled=True, feat3d_input_size=32, dataset_key="other")
    _trainer(tmp_path / "run3", [cb3], max_epochs=1).fit(FakeModule(), datamodule=FakeData())
    assert cb3.cache.misses == 1


def test_missing_fid_weights_fail_before_training(tmp_path):
    cb = _cb(tmp_path, fid_weights=str(tmp_path / "nope.pt"))
    model = FakeModule()
    with pytest.raises(FileNotFoundError, match="eval.fid.weights.*nope.pt"):
        _trainer(tmp_path, [cb], max_epochs=1).fit(model, datamodule=FakeData())
    assert model.generate_calls == []
    with pytest.raises(ValueError, match="every_n_epochs"):
        EvaluationCallback(every_n_epochs=0)


@pytest.mark.slow
def test_fid_in_callback_with_random_weights(tmp_path):
    from monai.networks.nets import resnet50

    torch.manual_seed(0)
    net = resnet50(spatial_dims=2, n_input_channels=3, conv1_t_stride=2, feed_forward=False, bias_downsample=False)
    torch.save(net.state_dict(), tmp_path / "w.pt")
    cb = _cb(tmp_path, fid_weights=str(tmp_path / "w.pt"), fid_planes=["axial"], fid_every_n_epochs=2)
    _trainer(tmp_path, [cb], max_epochs=2).fit(FakeModule(), datamodule=FakeData())
    assert "val/fid_axial" in cb.history[0] and "val/fid_mean" in cb.history[0]
    assert "val/fid_mean" not in cb.history[1]
    assert (
        cb.history[0]["val/fid_mean"] == pytest.approx(cb.history[0]["val/fid_axial"])
        and cb.history[0]["val/fid_mean"] > 0
    )


def test_nfe_list_reference_levels_cached_and_reused(tmp_path, monkeypatch):
    from neuromf.evaluation.suite import MetricSuite

    calls = []
    original = MetricSuite.reference
    monkeypatch.setattr(MetricSuite, "reference", lambda self, *a, **kw: calls.append(1) or original(self, *a, **kw))
    cb = _cb(tmp_path, nfe_list=[1, 2], objective_key="val/swd/nfe2")
    model, dm = FakeModule(nfe_helps=True), FakeData()
    logger = CSVLogger(save_dir=str(tmp_path), name="", version="")
    _trainer(tmp_path, [cb], max_epochs=2, logger=logger).fit(model, datamodule=dm)
    assert sorted({c[1] for c in model.generate_calls}) == [1, 2]
    h = cb.history[0]
    assert h["val/swd/nfe2"] < h["val/swd/nfe1"] == h["val/swd"]  # the aliases are the first NFE's
    assert cb.best["val/swd/nfe2"]["value"] == min(x["val/swd/nfe2"] for x in cb.history)
    assert "val/eval_time_s" not in cb.best
    # reference levels: training latents (floor) far below noise (ceiling); computed once, logged once
    ref = cb.reference
    levels = ("real", "collapsed", "noise")
    metrics = ("swd", "swd_patch", "template_corr", "template_corr_min")
    assert set(ref) == {f"ref/{m}/{lvl}" for m in metrics for lvl in levels}
    # training latents read twice per fit: the reference subset and the mean volume of template_corr
    assert ref["ref/swd/real"] < ref["ref/swd/noise"] and len(calls) == 1 and dm.train_calls == 2
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["reference"]["swd"] == {lvl: ref[f"ref/swd/{lvl}"] for lvl in levels}
    assert summary["objective_key"] == "val/swd/nfe2" and summary["objective"] == cb.best["val/swd/nfe2"]["value"]
    rows = [line for line in (tmp_path / "metrics.csv").read_text().splitlines()[1:] if line]
    header = (tmp_path / "metrics.csv").read_text().splitlines()[0].split(",")
    col = header.index("ref/swd/noise")
    assert sum(bool(r.split(",")[col]) for r in rows) == 1
    # a second run over the same data reads them from the cache: no recomputation
    cb2 = _cb(tmp_path, nfe_list=[1, 2])
    _trainer(tmp_path / "run2", [cb2], max_epochs=1).fit(FakeModule(), datamodule=FakeData())
    assert len(calls) == 1 and (cb2.cache.misses, cb2.cache.hits) == (0, 1) and cb2.reference == ref


def test_best_direction_per_metric():
    cb = EvaluationCallback(feat3d_enabled=False)
    cb._update({"val/coverage/nfe1": 0.5, "val/kid/nfe1": 0.2, "val/msssim/nfe1": 0.7}, 0, 10, 1.0)
    cb._update({"val/coverage/nfe1": 0.8, "val/kid/nfe1": 0.3, "val/msssim/nfe1": 0.1}, 1, 20, 1.0)
    assert cb.best["val/coverage/nfe1"]["epoch"] == 1 and cb.best["val/kid/nfe1"]["epoch"] == 0
    assert "val/msssim/nfe1" not in cb.best
    with pytest.raises(ValueError, match="nfe_list"):
        EvaluationCallback(nfe_list=[1, 1])


class PooledFeatures(torch.nn.Module):
    """Stand-in for DeepBetFeatures: (B, 1, X, Y, Z) -> (B, 8) average-pooled 2^3 blocks (cheap, deterministic)."""

    def forward(self, v):
        return F.adaptive_avg_pool3d(v, 2).flatten(1)

    def cache_key(self):
        return {"backbone": "pooled-2"}


class ManyTrainLatents(FakeData):
    """40 training latents and a seeded subset per `seed`, as the real datamodule's train_latents."""

    def __init__(self):
        super().__init__()
        self.train = torch.randn(40, *SHAPE, generator=torch.Generator().manual_seed(7))

    def train_latents(self, limit=None, seed=0):
        self.train_calls += 1
        if limit is None or limit >= len(self.train):
            return self.train.clone()
        pick = torch.randperm(len(self.train), generator=torch.Generator().manual_seed(seed))[:limit]
        return self.train[pick.sort().values].clone()


def test_intervals_logged_and_knn_reference_from_training_latents(tmp_path):
    cb = _cb(tmp_path, num_samples=8, knn_num_real=24, bootstrap_resamples=40, objective_key="val/feat3d_fd/nfe1")
    cb._feat3d = PooledFeatures()  # setup() keeps an extractor it already has
    cb.feat3d_enabled = True
    dm = ManyTrainLatents()
    logger = CSVLogger(save_dir=str(tmp_path), name="", version="")
    _trainer(tmp_path, [cb], max_epochs=2, logger=logger).fit(FakeModule(improving=True), datamodule=dm)
    first = cb.history[0]
    for m in ("feat3d_fd", "kid", "precision", "recall", "density", "coverage"):
        lo, hi, se = (first[f"val/{m}/nfe1_{b}"] for b in ("ci_lo", "ci_hi", "se"))
        assert lo <= hi and se >= 0, m
    assert first["val/feat3d_fd/nfe1_se"] > 0
    assert "val/swd/nfe1_se" not in first  # latent metrics: no bootstrap (registry: interval=False)
    # the k-NN reference: 24 training latents none of which is in the 8-latent real-floor set
    assert cb.knn_reference == {"set": "train", "size": 24, "k": 3, "description": cb.knn_reference["description"]}
    floor = dm.train_latents(8, seed=0).flatten(1)
    assert cb._ref.knn_feat3d.shape == (24, 8) and cb._ref.feat3d.shape == (12, 8)
    knn_lat = dm.train_latents(32, seed=0 ^ 0x6B4E4E)
    knn_lat = knn_lat[~(knn_lat.flatten(1)[:, None] == floor[None]).all(-1).any(1)][:24]
    assert torch.equal(cb._ref.knn_feat3d, PooledFeatures()(dm.decode(knn_lat)))
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    best = summary["best"]["val/feat3d_fd/nfe1"]
    assert summary["objective"] == best["value"]
    assert summary["objective_interval"] == {b: best[b] for b in ("se", "ci_lo", "ci_hi")}
    assert summary["knn_reference"]["size"] == 24
    assert "val/feat3d_fd/nfe1_ci_hi" in (tmp_path / "metrics.csv").read_text()
    # the best value is tracked for values only, never for their interval bounds
    assert not any(k.endswith(("_se", "_ci_lo", "_ci_hi")) for k in summary["best"])
