import csv
import json
import os
import shutil
import stat

import nibabel as nib
import numpy as np
import pytest
import torch
from data_helpers import FAST_PRE, TINY_MAISI, anatomical_path, real_t1_folder

from neuromf.data.decode import decode_store
from neuromf.data.encoders import EncoderError, IdentityEncoder, MaisiEncoder, build_encoder
from neuromf.data.io import DataError, PreprocessConfig, load_preprocessed
from neuromf.data.store import LatentStore, read_latent
from neuromf.encode import collect_inputs, encode_dataset, main


def identity(latent=(16, 16, 16)):
    return IdentityEncoder(latent_shape=latent, image_shape=FAST_PRE.shape)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_identity_encode_real_files(tmp_path):
    src = real_t1_folder(tmp_path / "in")
    res = encode_dataset(collect_inputs(src, "pkg"), tmp_path / "out", identity(), FAST_PRE, progress=False)
    assert res.encoded == 2 and not res.errors
    rows = read_csv(tmp_path / "out" / "manifest.csv")
    assert [r["subject"] for r in rows] == ["anatomical", "mni152"]
    assert all(r["dataset"] == "pkg" and r["shape"] == "1x16x16x16" for r in rows)
    lat = []
    for r in rows:
        z, aff = read_latent(tmp_path / "out" / r["latent_file"])
        assert z.shape == (1, 16, 16, 16) and z.dtype == torch.float32
        assert float(r["mean"]) == pytest.approx(z.mean().item(), rel=1e-5)
        assert float(r["std"]) == pytest.approx(z.std(unbiased=False).item(), rel=1e-5)
        assert 0.0 <= z.min() and z.max() <= 1.0 and z.std() > 0.05  # percentile-scaled real brain, not empty
        assert np.all(np.diag(aff)[:3] == 4.0)  # RAS, 4 mm grid of the preprocessed image
        lat.append(z)
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    allz = torch.cat(lat).double()
    assert stats["shape"] == [1, 16, 16, 16] and stats["num_subjects"] == 2
    assert stats["channel_mean"][0] == pytest.approx(allz.mean().item(), rel=1e-5)
    assert stats["channel_std"][0] == pytest.approx(allz.std(unbiased=False).item(), rel=1e-5)
    assert stats["encoder"]["name"] == "identity" and stats["encoder"]["scale_factor"] == 1.0
    assert stats["preprocess"]["spacing"] == [4.0, 4.0, 4.0]
    assert not (tmp_path / "out" / "errors.csv").exists()


def test_resume_skips_and_force_reencodes(tmp_path):
    src = real_t1_folder(tmp_path / "in")
    out = tmp_path / "out"
    encode_dataset(collect_inputs(src), out, identity(), FAST_PRE, progress=False)
    f = out / "latents" / "mni152.safetensors"
    mtime = f.stat().st_mtime_ns
    res = encode_dataset(collect_inputs(src), out, identity(), FAST_PRE, progress=False)
    assert (res.encoded, res.skipped) == (0, 2) and f.stat().st_mtime_ns == mtime
    assert len(read_csv(out / "manifest.csv")) == 2
    with pytest.raises(DataError, match="different .*settings"):
        encode_dataset(collect_inputs(src), out, identity((8, 8, 8)), FAST_PRE, progress=False)
    res = encode_dataset(collect_inputs(src), out, identity((8, 8, 8)), FAST_PRE, force=True, progress=False)
    assert res.encoded == 2 and read_latent(f)[0].shape == (1, 8, 8, 8)


def corrupt_inputs(folder):
    """Add bad files next to the real ones: truncated gzip, 4D, NaN voxels, empty image."""
    raw = (folder / "mni152.nii.gz").read_bytes()
    (folder / "truncated.nii.gz").write_bytes(raw[: len(raw) // 2])
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(np.random.rand(8, 8, 8, 3).astype(np.float32), aff), str(folder / "fourd.nii.gz"))
    nan = np.random.rand(8, 8, 8).astype(np.float32)
    nan[1, 2, 3] = np.nan
    nib.save(nib.Nifti1Image(nan, aff), str(folder / "nan.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), aff), str(folder / "empty.nii.gz"))


@pytest.mark.parametrize(
    "name,pattern",
    [
        ("truncated", "truncated|corrupt|not a readable"),
        ("fourd", "3D image"),
        ("nan", "NaN/Inf"),
        ("empty", "empty"),
    ],
)
def test_bad_input_stops_naming_file(tmp_path, name, pattern):
    src = real_t1_folder(tmp_path / "in")
    corrupt_inputs(src)
    with pytest.raises(DataError, match=pattern) as e:
        load_preprocessed(src / f"{name}.nii.gz", FAST_PRE)
    assert f"{name}.nii.gz" in str(e.value)
    only = tmp_path / "only"
    only.mkdir()
    shutil.copy(src / f"{name}.nii.gz", only)
    with pytest.raises(DataError, match=name):
        encode_dataset(collect_inputs(only), tmp_path / "out", identity(), FAST_PRE, progress=False)


def test_on_error_skip_records_and_continues(tmp_path, capsys):
    src = real_t1_folder(tmp_path / "in")
    corrupt_inputs(src)
    out = tmp_path / "out"
    rc = main(
        [
            str(src),
            "--out",
            str(out),
            "--spacing",
            "4",
            "--shape",
            "32",
            "--latent-shape",
            "16",
            "--on-error",
            "skip",
            "--no-progress",
        ]
    )
    assert rc == 0
    errors = read_csv(out / "errors.csv")
    assert sorted(r["subject"] for r in errors) == ["empty", "fourd", "nan", "truncated"]
    assert all(r["file"] in r["error"] for r in errors)
    assert sorted(r["subject"] for r in read_csv(out / "manifest.csv")) == ["anatomical", "mni152"]
    assert sorted(p.name for p in (out / "latents").iterdir()) == [
        "anatomical.safetensors",
        "mni152.safetensors",
    ]
    assert "scans/s" in capsys.readouterr().out
    rc = main([str(src), "--out", str(tmp_path / "out2"), "--spacing", "4", "--shape", "32", "--no-progress"])
    assert rc == 2 and "error:" in capsys.readouterr().err


def test_duplicate_subject_ids(tmp_path):
    src = real_t1_folder(tmp_path / "in")
    table = tmp_path / "subjects.csv"
    table.write_text(f"path,subject,dataset,diagnosis\n{src / 'anatomical.nii'},s1,a,CN\nin/mni152.nii.gz,s1,b,AD\n")
    items = collect_inputs(table)
    assert items[1].path == str(tmp_path / "in" / "mni152.nii.gz") and items[1].diagnosis == "AD"
    with pytest.raises(DataError, match="duplicate subject id 's1'.*anatomical.nii"):
        encode_dataset(items, tmp_path / "out", identity(), FAST_PRE, progress=False)
    res = encode_dataset(items, tmp_path / "out", identity(), FAST_PRE, on_error="skip", progress=False)
    assert res.encoded == 1 and len(res.errors) == 1 and "mni152" in res.errors[0]["file"]


def test_crash_leaves_no_half_written_latent(tmp_path, monkeypatch):
    import neuromf.data.store as store

    src = real_t1_folder(tmp_path / "in")
    real_save = store.save_file

    def crashing_save(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(store, "save_file", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        encode_dataset(collect_inputs(src), tmp_path / "out", identity(), FAST_PRE, progress=False)
    assert list((tmp_path / "out" / "latents").iterdir()) == []
    monkeypatch.setattr(store, "save_file", real_save)
    res = encode_dataset(collect_inputs(src), tmp_path / "out", identity(), FAST_PRE, progress=False)
    assert res.encoded == 2


def test_identity_round_trip_preserves_image_and_affine(tmp_path):
    src = anatomical_path()  # real T1, 33x41x25 at 2 mm, LAS
    orig = nib.load(str(src))
    pre = PreprocessConfig(spacing=(2.0, 2.0, 2.0), shape=orig.shape, percentiles=(0.0, 100.0))
    (tmp_path / "in").mkdir()
    shutil.copy(src, tmp_path / "in")
    encode_dataset(
        collect_inputs(tmp_path / "in"),
        tmp_path / "out",
        IdentityEncoder(None, pre.shape),
        pre,
        progress=False,
    )
    ((nii, png),) = decode_store(tmp_path / "out", tmp_path / "dec")
    assert png.stat().st_size > 1000
    dec = nib.load(str(nii))
    _, stored_affine = read_latent(tmp_path / "out" / "latents" / "anatomical.safetensors")
    np.testing.assert_array_equal(dec.affine, stored_affine)
    # same world coordinates as the original: RAS grid = original LAS grid flipped along x
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = orig.shape[0] - 1
    np.testing.assert_array_equal(dec.affine, orig.affine @ flip)
    x = orig.get_fdata()[::-1]
    x = (x - x.min()) / (x.max() - x.min())
    np.testing.assert_allclose(dec.get_fdata(), x, atol=1e-5)


def test_identity_resampled_round_trip_within_tolerance():
    enc = IdentityEncoder(latent_shape=(16, 16, 16), image_shape=(32, 32, 32))
    g = torch.linspace(-1, 1, 32)
    img = torch.exp(-(g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2) * 2)[None, None]
    back = enc.decode(enc.encode(img))
    assert back.shape == img.shape
    assert (back - img).abs().mean() < 0.01


@pytest.fixture
def tiny_maisi_ckpt(tmp_path):
    from monai.apps.generation.maisi.networks.autoencoderkl_maisi import AutoencoderKlMaisi

    torch.manual_seed(0)
    net = AutoencoderKlMaisi(**TINY_MAISI)
    path = tmp_path / "ae.pt"
    torch.save({"state_dict": net.state_dict()}, path)
    return path


@pytest.mark.slow
def test_maisi_encode_decode_with_tiny_network(tmp_path, tiny_maisi_ckpt):
    src = real_t1_folder(tmp_path / "in")
    out = tmp_path / "out"
    rc = main(
        [
            str(src),
            "--out",
            str(out),
            "--encoder",
            "maisi",
            "--checkpoint",
            str(tiny_maisi_ckpt),
            "--maisi-config",
            json.dumps(TINY_MAISI),
            "--spacing",
            "4",
            "--shape",
            "32",
            "--scale-factor",
            "auto",
            "--no-progress",
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    store = LatentStore(out)
    stats = store.stats
    assert stats["shape"] == [4, 8, 8, 8] and stats["channels"] == 4
    assert stats["encoder"]["name"] == "maisi" and stats["encoder"]["sample"] is False
    allz = torch.stack([store.load(s)[0] for s in store.subjects]).double()
    assert stats["encoder"]["scale_factor"] == pytest.approx(1.0 / allz.std(unbiased=False).item(), rel=1e-4)
    np.testing.assert_allclose(stats["channel_mean"], allz.mean(dim=(0, 2, 3, 4)).numpy(), rtol=1e-4, atol=1e-7)
    # posterior mean: deterministic and equal to the network's z_mu
    enc = build_encoder(stats["encoder"])
    image, _ = load_preprocessed(src / "mni152.nii.gz", FAST_PRE)
    with torch.no_grad():
        z_mu, _ = enc.net.encode(image[None])
    torch.testing.assert_close(store.load("mni152")[0], z_mu[0], rtol=1e-4, atol=1e-5)
    assert enc.decode(z_mu).shape == (1, 1, 32, 32, 32)
    sampled = MaisiEncoder(str(tiny_maisi_ckpt), TINY_MAISI, sample=True).encode(image[None])
    assert sampled.shape == z_mu.shape and not torch.allclose(sampled, z_mu)


def test_maisi_checkpoint_errors(tmp_path, tiny_maisi_ckpt):
    with pytest.raises(EncoderError, match="not found.*missing.pt"):
        MaisiEncoder(str(tmp_path / "missing.pt"), TINY_MAISI)
    with pytest.raises(EncoderError, match="--checkpoint"):
        MaisiEncoder(None, TINY_MAISI)
    with pytest.raises(EncoderError, match="does not match.*ae.pt.*|ae.pt.*does not match"):
        MaisiEncoder(str(tiny_maisi_ckpt), {**TINY_MAISI, "num_channels": [8, 8, 16]})
    with pytest.raises(EncoderError, match="ae.pt"):
        MaisiEncoder(str(tiny_maisi_ckpt))  # default published config != tiny checkpoint
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(EncoderError, match="bad.pt.*cannot be read"):
        MaisiEncoder(str(bad), TINY_MAISI)
    rc = main([str(anatomical_path()), "--out", str(tmp_path / "o"), "--encoder", "maisi"])
    assert rc == 2


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--encoder", "--checkpoint", "--on-error", "--scale-factor", "--spacing", "--force"):
        assert flag in out


def test_on_error_skip_with_only_bad_inputs_writes_errors_csv_and_group_readable_files(tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    real = real_t1_folder(tmp_path / "real")
    corrupt_inputs(real)
    for name in ("truncated", "fourd", "empty"):
        shutil.copy(real / f"{name}.nii.gz", src / f"{name}.nii.gz")
    out = tmp_path / "out"
    args = ["--spacing", "4", "--shape", "32", "--latent-shape", "16", "--no-progress", "--on-error", "skip"]
    assert main([str(src), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert f"3 errors in {out / 'errors.csv'}" in err
    assert sorted(r["subject"] for r in read_csv(out / "errors.csv")) == ["empty", "fourd", "truncated"]
    old_umask = os.umask(0o022)
    try:
        assert main([str(real), "--out", str(tmp_path / "good"), *args]) == 0
    finally:
        os.umask(old_umask)
    written = [*(tmp_path / "good" / "latents").iterdir(), tmp_path / "good" / "manifest.csv"]
    assert written and all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in written)
