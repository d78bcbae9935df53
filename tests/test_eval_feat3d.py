"""deepbet 3D feature distance: offline loading, shapes, and distance ordering on real brain volumes."""

import os

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.transforms import GaussianSmooth, RandAffine

from neuromf.evaluation.feat3d import DeepBetFeatures, deepbet_model_path
from neuromf.evaluation.frechet import feature_stats, frechet_distance


@pytest.fixture(scope="module")
def extractor():
    return DeepBetFeatures(input_size=64)


def _real_volumes():
    """Three real T1 volumes shipped by registry packages, RAS, resized to a longest side of 64."""
    import nibabel.tests
    import pydeface
    from nilearn.datasets import load_mni152_template

    imgs = [
        load_mni152_template(resolution=1),
        nib.load(os.path.join(os.path.dirname(pydeface.__file__), "data", "mean_reg2mean.nii.gz")),
        nib.load(os.path.join(os.path.dirname(nibabel.tests.__file__), "data", "anatomical.nii")),
    ]
    out = []
    for img in imgs:
        x = torch.from_numpy(nib.as_closest_canonical(img).get_fdata(dtype=np.float32))[None, None]
        size = [round(n * 64 / max(x.shape[2:])) for n in x.shape[2:]]
        out.append(F.interpolate(x, size=size, mode="trilinear", align_corners=False)[0])
    return out


def test_model_located_offline_and_shapes(extractor):
    path = deepbet_model_path()
    assert path.name == "model.pt" and path.parent.name == "models" and path.is_file()
    assert sum(p.numel() for p in extractor.net.parameters()) == pytest.approx(2.1e6, rel=0.05)
    x = torch.rand(2, 1, 30, 40, 20)
    pre = extractor.preprocess(x)
    assert pre.shape == (2, 1, 64, 64, 64)
    torch.testing.assert_close(pre.mean(dim=(1, 2, 3, 4)), torch.full((2,), 0.449), rtol=0, atol=1e-4)
    maps = extractor.stage_features(x)
    assert [tuple(m.shape[1:]) for m in maps] == [
        (16, 16, 16, 16),
        (16, 16, 16, 16),
        (32, 8, 8, 8),
        (64, 4, 4, 4),
        (128, 2, 2, 2),
    ]
    f = extractor(x)
    assert f.shape == (2, DeepBetFeatures.num_features) == (2, 256) and torch.isfinite(f).all()
    with pytest.raises(ValueError, match="multiple of 32"):
        DeepBetFeatures(input_size=48)


@pytest.mark.slow
def test_distance_orders_real_smoothed_noise(extractor):
    vols = _real_volumes()
    assert len(vols) == 3

    def augmented(n, seed):
        aff = RandAffine(prob=1.0, rotate_range=(0.08,) * 3, scale_range=(0.06,) * 3, translate_range=(3,) * 3)
        aff.set_random_state(seed)
        g = torch.Generator().manual_seed(seed)
        return [aff(vols[i % 3]) * (0.8 + 0.4 * torch.rand(1, generator=g)) for i in range(n)]

    def feats(batch):
        return feature_stats(torch.cat([extractor(v[None]) for v in batch]))

    ref, real = augmented(12, 0), augmented(12, 1)
    smooth = GaussianSmooth(sigma=3.0)
    smoothed = [smooth(v) for v in real]
    g = torch.Generator().manual_seed(2)
    noise = [torch.rand(v.shape, generator=g) * v.max() for v in real]
    s_ref = feats(ref)
    d_real = frechet_distance(s_ref, feats(real))
    d_smooth = frechet_distance(s_ref, feats(smoothed))
    d_noise = frechet_distance(s_ref, feats(noise))
    print(f"feat3d FD: real-vs-real-augmented {d_real:.4f}  smoothed {d_smooth:.4f}  noise {d_noise:.4f}")
    assert d_real < 0.5 * d_smooth and d_real < 0.5 * d_noise
    assert frechet_distance(s_ref, s_ref) == pytest.approx(0.0, abs=1e-6)
