import pytest
import torch

from neuromf.data.augmentation import DEPRECATED_KEYS, build_augmentation
from neuromf.data.masking import random_spatial_mask


def test_disabled_returns_none():
    assert build_augmentation(None, [1.0]) is None
    assert build_augmentation({}, [1.0]) is None
    assert build_augmentation({"enabled": False, "noise_std": 0.5}, [1.0]) is None


def test_noise_calibrated_per_channel():
    std = torch.tensor([0.5, 2.0, 4.0])
    aug = build_augmentation(
        {"enabled": True, "noise_std": 0.1, "calibrate_to_data": True},
        std,
        generator=torch.Generator().manual_seed(0),
    )
    z = torch.randn(3, 24, 24, 24)
    out = aug(z)
    assert out.shape == z.shape
    assert not torch.equal(out, z)
    got = (out - z).reshape(3, -1).std(1)
    torch.testing.assert_close(got, 0.1 * std, rtol=0.03, atol=0.0)


def test_absolute_noise_and_flip():
    aug = build_augmentation({"enabled": True, "noise_std": 0.2, "calibrate_to_data": False}, [5.0, 7.0])
    z = torch.zeros(2, 20, 20, 20)
    got = (aug(z) - z).reshape(2, -1).std(1)
    torch.testing.assert_close(got, torch.full((2,), 0.2), rtol=0.05, atol=0.0)
    flip = build_augmentation({"enabled": True, "flip_lr_prob": 1.0}, [1.0])
    z = torch.arange(4 * 3 * 2, dtype=torch.float32).reshape(1, 4, 3, 2)
    torch.testing.assert_close(flip(z), z.flip(1))  # left-right = first spatial axis in RAS


@pytest.mark.parametrize("old", sorted(DEPRECATED_KEYS))
def test_deprecated_keys_name_replacement(old):
    with pytest.raises(ValueError, match=f"{old}.*{DEPRECATED_KEYS[old].split()[0]}"):
        build_augmentation({old: 0.1}, [1.0])


def test_unknown_key_and_bad_values():
    with pytest.raises(ValueError, match="unknown"):
        build_augmentation({"enabled": True, "rotate": 1}, [1.0])
    with pytest.raises(ValueError, match="flip_lr_prob"):
        build_augmentation({"enabled": True, "flip_lr_prob": 2}, [1.0])


def test_random_spatial_mask():
    assert random_spatial_mask((2, 4, 8, 8, 8), 0.0) is None
    m = random_spatial_mask((3, 4, 8, 8, 8), 0.25, generator=torch.Generator().manual_seed(0))
    assert m.shape == (3, 1, 8, 8, 8)
    assert set(m.unique().tolist()) == {0.0, 1.0}
    assert (m.reshape(3, -1).sum(1) == 512 - 128).all()
    assert not torch.equal(m[0], m[1])
    m2 = random_spatial_mask((3, 4, 8, 8, 8), 0.25, generator=torch.Generator().manual_seed(0))
    assert torch.equal(m, m2)
    with pytest.raises(ValueError):
        random_spatial_mask((2, 4, 8, 8, 8), 1.0)
    with pytest.raises(ValueError):
        random_spatial_mask((2, 8, 8, 8), 0.5)
