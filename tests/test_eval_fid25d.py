"""2.5D FID: slicing, ResNet-50 weights loading (and its errors), per-plane distances."""

import pytest
import torch
from monai.networks.nets import resnet18, resnet50

from neuromf.evaluation.fid25d import FID25D, _to_keras_layout, extract_slices, load_resnet50


def _resnet():
    return resnet50(spatial_dims=2, n_input_channels=3, conv1_t_stride=2, feed_forward=False, bias_downsample=False)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A randomly initialised ResNet-50 state dict saved with a DataParallel-style prefix and a fc head."""
    torch.manual_seed(0)
    model = _resnet().eval()
    sd = {f"module.{k}": v for k, v in model.state_dict().items()}
    sd["module.fc.weight"], sd["module.fc.bias"] = torch.zeros(10, 2048), torch.zeros(10)
    path = tmp_path_factory.mktemp("w") / "resnet50.pt"
    torch.save(sd, path)
    return path, model


@pytest.mark.parametrize(
    "plane,frac,expected",
    [
        ("sagittal", 1.0, (2 * 10, 1, 12, 14)),
        ("coronal", 1.0, (2 * 12, 1, 10, 14)),
        ("axial", 1.0, (2 * 14, 1, 10, 12)),
        ("axial", 0.5, (2 * 7, 1, 10, 12)),
        ("sagittal", 0.01, (2 * 1, 1, 12, 14)),
    ],
)
def test_slice_shapes(plane, frac, expected):
    v = torch.randn(2, 1, 10, 12, 14)
    assert tuple(extract_slices(v, plane, frac).shape) == expected


def test_slices_are_the_central_planes_of_each_volume():
    v = torch.arange(2 * 10 * 3 * 4, dtype=torch.float32).reshape(2, 1, 10, 3, 4)
    s = extract_slices(v, "sagittal", 0.4)  # 4 central of 10 -> x = 3..6
    assert s.shape == (8, 1, 3, 4)
    torch.testing.assert_close(s[0, 0], v[0, 0, 3])
    torch.testing.assert_close(s[3, 0], v[0, 0, 6])
    torch.testing.assert_close(s[4, 0], v[1, 0, 3])
    a = extract_slices(v, "axial")
    torch.testing.assert_close(a[5, 0], v[1, 0, :, :, 1])  # 4 axial slices per volume
    with pytest.raises(ValueError, match="unknown plane"):
        extract_slices(v, "oblique")
    with pytest.raises(ValueError, match=r"\(B, 1, X, Y, Z\)"):
        extract_slices(v[:, 0], "axial")


def test_load_weights_strips_prefix_and_reproduces_the_network(weights):
    path, ref = weights
    model = load_resnet50(path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = model(x)
        torch.testing.assert_close(out, ref(x))
    assert out.shape == (2, 2048)


def test_keras_layout_weights_are_detected(tmp_path):
    torch.manual_seed(1)
    keras = _resnet()
    _to_keras_layout(keras)
    with torch.no_grad():
        for m in keras.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.bias.normal_()
    keras.eval()
    assert keras.layer2[0].conv1.stride == (2, 2) and keras.layer2[0].conv2.stride == (1, 1)
    path = tmp_path / "radimagenet.pt"
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in keras.state_dict().items()}}, path)
    model = load_resnet50(path)
    assert model.conv1.bias is not None and model.layer3[0].conv1.stride == (2, 2)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), keras(x))


def test_weights_errors(tmp_path, weights):
    with pytest.raises(FileNotFoundError, match="eval.fid.weights.*missing.pt"):
        load_resnet50(tmp_path / "missing.pt")
    bad = tmp_path / "resnet18.pt"
    torch.save(resnet18(spatial_dims=2, n_input_channels=3).state_dict(), bad)
    with pytest.raises(ValueError, match="resnet18.pt is not a ResNet-50 state dict"):
        load_resnet50(bad)
    sd = torch.load(weights[0])
    sd["module.layer1.0.conv1.weight"] = torch.zeros(3, 3, 1, 1)
    shape = tmp_path / "shape.pt"
    torch.save(sd, shape)
    with pytest.raises(ValueError, match="layer1.0.conv1.weight"):
        load_resnet50(shape)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        load_resnet50(junk)


def _volumes(n, seed):
    g = torch.Generator().manual_seed(seed)
    yy, xx, zz = torch.meshgrid(*[torch.linspace(-1, 1, 24)] * 3, indexing="ij")
    blob = (xx**2 + yy**2 + zz**2 < 0.6).float()
    real = torch.stack([blob * (1 + 0.1 * torch.randn(1, generator=g)) for _ in range(n)])[:, None]
    return real + 0.05 * torch.randn(real.shape, generator=g)


def test_fid25d_features_and_per_plane_distances(weights):
    fid = FID25D(weights[0], central_fraction=0.5, batch_size=32)
    real = _volumes(4, 0)
    f = fid.features(real)
    assert {k: tuple(v.shape) for k, v in f.items()} == {p: (4 * 12, 2048) for p in ("axial", "coronal", "sagittal")}
    torch.testing.assert_close(fid.features(real)["axial"], f["axial"])  # deterministic (eval mode)
    # intensity scale does not matter (per-volume robust [0, 1] scaling)
    torch.testing.assert_close(fid.features(3.0 * real + 1.0)["coronal"], f["coronal"], rtol=1e-4, atol=1e-4)
    # per-plane distances and their mean, on low-dimensional statistics with a closed form
    from neuromf.evaluation.frechet import FeatureStats

    def gauss(mu, var):
        return FeatureStats(mu=torch.full((3,), mu, dtype=torch.float64), sigma=var * torch.eye(3).double(), n=10)

    fake = {"axial": gauss(1.0, 1.0), "coronal": gauss(0.0, 4.0), "sagittal": gauss(0.0, 1.0)}
    real_s = {p: gauss(0.0, 1.0) for p in fake}
    d = FID25D.distance(fake, real_s)
    assert d["fid_axial"] == pytest.approx(3.0) and d["fid_coronal"] == pytest.approx(3.0)
    assert d["fid_sagittal"] == pytest.approx(0.0, abs=1e-9) and d["fid_mean"] == pytest.approx(2.0)
    assert len(fid.cache_key()["weights_sha256"]) == 64


@pytest.mark.slow
def test_fid25d_full_2048d_identical_is_zero(weights):
    # one full-size Frechet distance (2048-D: MONAI/scipy sqrtm takes about a minute on 2 CPU cores)
    fid = FID25D(weights[0], planes=("axial",), central_fraction=0.5)
    real = _volumes(6, 1)
    stats = fid.stats([fid.features(real[:3]), fid.features(real[3:])])
    assert stats["axial"].n == 6 * 12
    assert fid.distance(stats, stats)["fid_mean"] == pytest.approx(0.0, abs=1e-3)
