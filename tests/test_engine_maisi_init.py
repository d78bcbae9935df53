"""Starting from a MAISI diffusion UNet checkpoint: the weights load with the run's modality and spacing folded in
(the u-head equals MAISI's negated velocity), and settings that cannot start right are refused, naming the file
and the keys."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from monai.apps.generation.maisi.networks.diffusion_model_unet_maisi import DiffusionModelUNetMaisi
from training_helpers import TINY, tiny_cfg

import neuromf.train as train_app
from neuromf.data.datamodule import datamodule_for_run
from neuromf.models import MeanFlowUNet
from neuromf.models.maisi_init import MaisiInitError, init_from_maisi
from neuromf.tracking.run import read_status

REPO = Path(__file__).resolve().parents[1]
# The published NV-Generate-MR diffusion UNet layout (config_network_rflow.json) at a CPU-test width: the same
# flags (include_fc, resblock_updown, spacing input, 128 modality classes, heads only at the two deepest levels).
PUBLISHED_MR = dict(
    spatial_dims=3,
    in_channels=4,
    out_channels=4,
    num_channels=[64, 128, 256, 512],
    attention_levels=[False, False, True, True],
    num_head_channels=[0, 0, 32, 32],
    num_res_blocks=2,
    include_top_region_index_input=False,
    include_bottom_region_index_input=False,
    include_spacing_input=True,
    num_class_embeds=128,
    resblock_updown=True,
    include_fc=True,
)
NARROW = {**PUBLISHED_MR, "num_channels": [32, 32, 64, 64], "num_res_blocks": 1}


def _ours(layout: dict, **kw) -> MeanFlowUNet:
    return MeanFlowUNet(
        in_channels=layout["in_channels"],
        num_channels=layout["num_channels"],
        attention_levels=layout["attention_levels"],
        num_res_blocks=layout["num_res_blocks"],
        num_head_channels=layout["num_head_channels"],
        norm_num_groups=32,
        resblock_updown=layout["resblock_updown"],
        include_fc=layout["include_fc"],
        **{"conditioning": "t_h", "use_v_head": True, "time_scale": 1000.0, **kw},
    )


@pytest.fixture(scope="module")
def maisi_ckpt(tmp_path_factory):
    """(path, MAISI net) of a published-layout checkpoint with random weights (no weight left at zero)."""
    torch.manual_seed(0)
    net = DiffusionModelUNetMaisi(**NARROW).eval()
    with torch.no_grad():
        for p in net.parameters():  # MONAI zero-inits the output conv: give every weight a value
            p.add_(0.02 * torch.randn_like(p))
    path = tmp_path_factory.mktemp("maisi") / "diff_unet_3d_rflow-mr.pt"
    torch.save(
        {"unet_state_dict": net.state_dict(), "scale_factor": torch.tensor(1.05), "num_train_timesteps": 1000}, path
    )
    return path, net


def test_published_layout_loads_and_the_u_head_is_minus_maisis_velocity(maisi_ckpt):
    path, maisi = maisi_ckpt
    net = _ours(NARROW).eval()
    spacing = [150.0, 150.0, 150.0]
    report = init_from_maisi(net, path, spacing=spacing, modality=9)
    assert {k.split(".")[0] for k in report.dropped} == {"class_embedding", "spacing_layer"}
    assert len(report.loaded) == len(net.unet.state_dict())
    z, t = torch.randn(2, 4, 16, 16, 16), torch.tensor([0.3, 0.9])
    with torch.no_grad():
        ref = maisi(z, t * 1000, class_labels=torch.tensor([9, 9]), spacing_tensor=torch.tensor([spacing] * 2))
        other = maisi(z, t * 1000, class_labels=torch.tensor([3, 3]), spacing_tensor=torch.tensor([spacing] * 2))
        u = net(z, t, t)
    # MAISI's rectified-flow velocity is x - eps; MeanFlow's is eps - x: the loaded u-head at r = t is its negative,
    # for the folded modality (another modality gives another output, so the fold is not vacuous)
    torch.testing.assert_close(u, -ref, rtol=1e-4, atol=1e-5)
    assert (u + other).abs().max() > 1e-3
    assert report.metadata["num_train_timesteps"] == 1000
    # the v-head starts as the loaded velocity too (a zero v-head made iMF's first tangent 0)
    with torch.no_grad():
        torch.testing.assert_close(net.v(z, t), -ref, rtol=1e-4, atol=1e-5)


def test_a_v_head_with_a_res_block_also_starts_as_the_loaded_velocity(maisi_ckpt):
    path, _ = maisi_ckpt
    net = _ours(NARROW, v_head_num_res_blocks=1).eval()
    init_from_maisi(net, path, spacing=[150.0, 150.0, 150.0], modality=9)
    z, t = torch.randn(2, 4, 16, 16, 16), torch.tensor([0.2, 1.0])
    with torch.no_grad():
        torch.testing.assert_close(net.v(z, t), net(z, t, t), rtol=1e-5, atol=1e-6)
        assert net.v(z, t).abs().max() > 1e-3


def test_latents_are_fed_at_the_checkpoints_scale_when_starting_from_maisi(maisi_ckpt, tmp_path, demo_latents):
    """Not z-scored: z x the checkpoint's scale_factor (1.05 in the fixture), the scale MAISI was trained on."""
    from neuromf.data.store import LatentStore

    path, _ = maisi_ckpt
    cfg = tiny_cfg(f"init.maisi_checkpoint={path}")
    dm = datamodule_for_run(cfg, tmp_path / "run")
    dm.setup("fit")
    assert dm.normalize is False and dm.scale_factor == pytest.approx(1.05)
    subject = dm.splits["val"][0]
    raw = LatentStore(demo_latents).load(subject)[0]
    torch.testing.assert_close(dm.val_latents()[0], raw * 1.05, rtol=1e-5, atol=1e-5)
    plain = datamodule_for_run(tiny_cfg(), tmp_path / "plain")
    assert plain.normalize is True  # without MAISI weights: z-scored, as before


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"prediction_type": "x"}, "model.prediction_type=x"),
        ({"conditioning": "h"}, "model.conditioning=h"),
        ({"time_scale": 1.0}, "model.time_scale=1.0"),
    ],
)
def test_settings_that_cannot_start_right_are_refused(maisi_ckpt, kwargs, needle):
    path, _ = maisi_ckpt
    with pytest.raises(MaisiInitError, match=needle) as err:
        init_from_maisi(_ours(NARROW, **kwargs), path, spacing=[1, 1, 1], modality=0)
    assert str(path) in str(err.value)


def test_a_layout_mismatch_names_the_keys_and_a_truncated_file_is_named(maisi_ckpt, tmp_path):
    path, _ = maisi_ckpt
    with pytest.raises(MaisiInitError, match=r"keys .*(missing|not in the network|another shape).*model=maisi_mr"):
        init_from_maisi(_ours({**NARROW, "resblock_updown": False}), path, spacing=[1, 1, 1], modality=0)
    with pytest.raises(MaisiInitError, match="set init.modality"):
        init_from_maisi(_ours(NARROW), path, spacing=[1, 1, 1])
    with pytest.raises(MaisiInitError, match="set init.spacing"):
        init_from_maisi(_ours(NARROW), path, modality=0)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(MaisiInitError, match=f"{broken}: not a readable torch checkpoint"):
        init_from_maisi(_ours(NARROW), broken)


@pytest.mark.slow
def test_the_full_published_mr_layout_maps_with_model_maisi_mr(tmp_path):
    """The production-size published layout against conf/model/maisi_mr.yaml (178.7 M parameters)."""
    from hydra import compose, initialize_config_dir

    from neuromf.instantiate import build

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base=None):
        cfg = compose(config_name="train", overrides=["model=maisi_mr"])
    net = build(dict(cfg.model), _convert_="all")
    state = DiffusionModelUNetMaisi(**PUBLISHED_MR).state_dict()
    path = tmp_path / "mr.pt"
    torch.save({"unet_state_dict": state, "num_train_timesteps": 1000}, path)
    del state
    report = init_from_maisi(net, path, spacing=[100.0, 100.0, 100.0], modality=9)
    assert len(report.loaded) == len(net.unet.state_dict()) and report.dropped


def test_train_refuses_in_one_line_with_exit_2(maisi_ckpt, tmp_path):
    path, _ = maisi_ckpt
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "neuromf.train",
            *TINY,
            f"init.maisi_checkpoint={path}",
            "init.modality=9",
            "init.spacing=[1,1,1]",
            f"hydra.run.dir={tmp_path}/run",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: init.maisi_checkpoint=") and "does not match the model config" in last


# the layout of TINY's network (conf/model/small.yaml at 8-8-16), with the published MR conditioning inputs
TINY_MAISI = dict(
    spatial_dims=3,
    in_channels=1,
    out_channels=1,
    num_channels=[8, 8, 16],
    attention_levels=[False, False, False],
    num_head_channels=8,
    num_res_blocks=1,
    norm_num_groups=4,
    include_spacing_input=True,
    num_class_embeds=128,
)


class FirstStepProbe(pl.Callback):
    """The network's u(z, t, t) and UNet weights when the first training batch starts (before any optimizer step),
    and the weights at the end."""

    def __init__(self, z: torch.Tensor, t: torch.Tensor):
        self.z, self.t, self.u, self.start, self.end = z, t, None, None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.u is None:
            assert trainer.global_step == 0
            with torch.no_grad():
                self.u = pl_module.net(self.z, self.t, self.t).clone()
            self.start = {k: v.detach().clone() for k, v in pl_module.net.unet.state_dict().items()}

    def on_train_end(self, trainer, pl_module):
        self.end = {k: v.detach().clone() for k, v in pl_module.net.unet.state_dict().items()}


@pytest.mark.slow
@pytest.mark.parametrize("conditioning", ["dual", "t_h"])
def test_a_training_run_starts_from_the_maisi_weights(tmp_path, monkeypatch, demo_latents, conditioning):
    """`neuromf.train` with init.maisi_checkpoint (u-prediction): at its first step the u-head at r = t is MAISI's
    negated velocity for the folded modality and spacing; the run completes and its optimizer moves the weights."""
    torch.manual_seed(1)
    maisi = DiffusionModelUNetMaisi(**TINY_MAISI).eval()
    with torch.no_grad():
        for p in maisi.parameters():
            p.add_(0.02 * torch.randn_like(p))
    path = tmp_path / "tiny_maisi.pt"
    torch.save({"unet_state_dict": maisi.state_dict(), "num_train_timesteps": 1000}, path)
    spacing = [150.0, 150.0, 150.0]
    cfg = tiny_cfg(
        "model.prediction_type=u",
        f"model.conditioning={conditioning}",
        "model.time_scale=1000.0",
        f"init.maisi_checkpoint={path}",
        "init.modality=9",
        f"init.spacing=[{','.join(map(str, spacing))}]",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "trainer.limit_val_batches=1",
        "data.batch_size=2",
        "objective=val/loss_raw",
    )
    z, t = torch.randn(2, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([0.3, 0.9])
    probe = FirstStepProbe(z, t)
    build_callbacks = train_app.build_callbacks
    monkeypatch.setattr(train_app, "build_callbacks", lambda c, d: [*build_callbacks(c, d), probe])
    run = tmp_path / "run"
    train_app.train(cfg, run)

    status = read_status(run)
    assert status["status"] == "completed" and status["global_step"] == 2
    assert status["init"].startswith(f"started from MAISI checkpoint {path}")
    with torch.no_grad():
        ref = maisi(z, t * 1000, class_labels=torch.tensor([9, 9]), spacing_tensor=torch.tensor([spacing] * 2))
    torch.testing.assert_close(probe.u, -ref, rtol=1e-4, atol=1e-5)
    assert torch.equal(probe.start["conv_in.conv.weight"], maisi.state_dict()["conv_in.conv.weight"])
    assert not torch.equal(probe.end["conv_in.conv.weight"], probe.start["conv_in.conv.weight"])  # it trained
