"""`python -m neuromf.weights check`: a weights file loads into the network it is for, or one line names it."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from data_helpers import TINY_MAISI

from neuromf.weights import main


@pytest.fixture(scope="module")
def autoencoder(tmp_path_factory):
    from monai.apps.generation.maisi.networks.autoencoderkl_maisi import AutoencoderKlMaisi

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("w") / "autoencoder_v1.pt"
    torch.save({"state_dict": AutoencoderKlMaisi(**TINY_MAISI).state_dict()}, path)
    return path


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    return err


def test_maisi_autoencoder_ok_and_hashes(autoencoder, capsys):
    sha = hashlib.sha256(autoencoder.read_bytes()).hexdigest()
    md5 = hashlib.md5(autoencoder.read_bytes()).hexdigest()
    args = ["check", "maisi-autoencoder", str(autoencoder), "--maisi-config", json.dumps(TINY_MAISI)]
    assert main([*args, "--sha256", sha.upper(), "--md5", md5]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"ok: {autoencoder}: AutoencoderKlMaisi num_channels=[8, 8, 8] latent_channels=4")
    assert f"sha256 {sha}, md5 {md5}" in out
    assert main([*args, "--sha256", "0" * 64]) == 2
    err = one_error_line(capsys)
    assert str(autoencoder) in err and f"sha256 {sha}, expected {'0' * 64}" in err


def test_maisi_autoencoder_of_another_layout_is_refused(autoencoder, tmp_path, capsys):
    assert main(["check", "maisi-autoencoder", str(autoencoder)]) == 2  # the published config, a tiny file
    err = one_error_line(capsys)
    assert str(autoencoder) in err and "does not match the AutoencoderKlMaisi config" in err
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["check", "maisi-autoencoder", str(bad)]) == 2
    assert "cannot be read" in one_error_line(capsys)
    assert main(["check", "radimagenet", str(tmp_path / "missing.pt")]) == 2
    assert f"{tmp_path / 'missing.pt'}: no such file" in one_error_line(capsys)


def test_radimagenet_resnet50_layouts(tmp_path, capsys):
    from monai.networks.nets import resnet18, resnet50

    good = tmp_path / "RadImageNet-ResNet50_notop.pt"
    net = resnet50(spatial_dims=2, n_input_channels=3, feed_forward=False, bias_downsample=False)
    torch.save(net.state_dict(), good)
    assert main(["check", "radimagenet", str(good)]) == 0
    assert "ResNet-50, torchvision layout: all" in capsys.readouterr().out
    wrong = tmp_path / "resnet18.pt"
    torch.save(resnet18(spatial_dims=2, n_input_channels=3, feed_forward=False).state_dict(), wrong)
    assert main(["check", "radimagenet", str(wrong)]) == 2
    err = one_error_line(capsys)
    assert str(wrong) in err and "is not a ResNet-50 state dict" in err


def test_maisi_unet_against_the_training_model_config(tmp_path, capsys):
    from monai.apps.generation.maisi.networks.diffusion_model_unet_maisi import DiffusionModelUNetMaisi

    layout = dict(
        spatial_dims=3,
        in_channels=4,
        out_channels=4,
        num_channels=[32, 32, 64, 64],
        attention_levels=[False, False, True, True],
        num_head_channels=[0, 0, 32, 32],
        num_res_blocks=1,
        include_spacing_input=True,
        num_class_embeds=128,
        resblock_updown=True,
        include_fc=True,
    )
    narrow = ["--override", "model.num_channels=[32,32,64,64]", "--override", "model.num_res_blocks=1"]
    path = tmp_path / "diff_unet_3d_rflow-mr.pt"
    torch.save({"unet_state_dict": DiffusionModelUNetMaisi(**layout).state_dict(), "num_train_timesteps": 1000}, path)
    assert main(["check", "maisi-unet", str(path), *narrow]) == 0
    out = capsys.readouterr().out
    assert "MAISI diffusion UNet for model=maisi_mr model.num_channels=[32,32,64,64]" in out
    assert "placeholder modality and spacing" in out
    other = tmp_path / "other_layout.pt"
    torch.save({"unet_state_dict": DiffusionModelUNetMaisi(**{**layout, "resblock_updown": False}).state_dict()}, other)
    assert main(["check", "maisi-unet", str(other), *narrow]) == 2
    err = one_error_line(capsys)
    assert str(other) in err and "does not match the model config" in err
