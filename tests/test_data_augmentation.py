import pytest
import torch

from neuromf.data.augmentation import DEPRECATED_KEYS, build_augmentation
from neuromf.data.datamodule import EpochRandomSampler, LatentDataset, ResumableDataLoader
from neuromf.data.masking import random_spatial_mask


def test_disabled_returns_none():
    assert build_augmentation(None, [1.0]) is None
    assert build_augmentation({}, [1.0]) is None
    assert build_augmentation({"enabled": False, "noise_std": 0.5}, [1.0]) is None


def test_noise_calibrated_per_channel():
    std = torch.tensor([0.5, 2.0, 4.0])
    aug = build_augmentation({"enabled": True, "noise_std": 0.1, "calibrate_to_data": True}, std, seed=0)
    z = torch.randn(3, 24, 24, 24)
    out = aug(z, 0)
    assert out.shape == z.shape
    assert not torch.equal(out, z)
    got = (out - z).reshape(3, -1).std(1)
    torch.testing.assert_close(got, 0.1 * std, rtol=0.03, atol=0.0)


def test_absolute_noise_and_flip():
    aug = build_augmentation({"enabled": True, "noise_std": 0.2, "calibrate_to_data": False}, [5.0, 7.0])
    z = torch.zeros(2, 20, 20, 20)
    got = (aug(z, 0) - z).reshape(2, -1).std(1)
    torch.testing.assert_close(got, torch.full((2,), 0.2), rtol=0.05, atol=0.0)
    flip = build_augmentation({"enabled": True, "flip_lr_prob": 1.0}, [1.0])
    z = torch.arange(4 * 3 * 2, dtype=torch.float32).reshape(1, 4, 3, 2)
    torch.testing.assert_close(flip(z, 0), z.flip(1))  # left-right = first spatial axis in RAS


def test_draws_depend_only_on_seed_epoch_and_sample_index():
    cfg = {"enabled": True, "noise_std": 0.1, "calibrate_to_data": False, "flip_lr_prob": 0.5}
    aug = build_augmentation(cfg, [1.0], seed=3)
    z = torch.randn(1, 8, 8, 8)
    first = [aug(z, i) for i in range(16)]
    assert all(torch.equal(a, aug(z, i)) for i, a in enumerate(first))  # repeatable, in any order
    assert torch.equal(first[5], build_augmentation(cfg, [1.0], seed=3)(z, 5))  # a new process: same draw
    assert not torch.equal(first[0], first[1])  # each sample its own draw
    assert not torch.equal(first[0], build_augmentation(cfg, [1.0], seed=4)(z, 0))
    flipped = [bool((a - z.flip(1)).abs().max() < (a - z).abs().max()) for a in first]
    assert 0 < sum(flipped) < 16  # flips are drawn per sample (p = 0.5)
    aug.set_epoch(1)
    assert aug.epoch == 1 and not torch.equal(aug(z, 0), first[0])  # a new epoch: new draws
    aug.set_epoch(0)
    assert torch.equal(aug(z, 0), first[0])


def _epochs(num_workers: int, epochs: int = 3) -> dict[tuple[int, int], torch.Tensor]:
    """(epoch, sample index) -> augmented latent, from `epochs` passes of the training loader over 12 constant
    latents (sample i is all i, so the index is read back from the mean) with noise and flips."""
    latents = {f"s{i:02d}": torch.full((1, 4, 4, 4), float(i)) for i in range(12)}
    aug = build_augmentation({"enabled": True, "noise_std": 0.1, "flip_lr_prob": 0.5}, [1.0], seed=7)
    ds = LatentDataset(sorted(latents), latents.__getitem__, aug)
    epoch = [0]
    loader = ResumableDataLoader(
        ds,
        batch_size=5,
        sampler=EpochRandomSampler(ds, 7),
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        progress=lambda: (epoch[0], 0, float("inf")),
    )
    out = {}
    for e in range(epochs):
        epoch[0] = e
        loader.sampler.set_epoch(e)  # as Lightning does
        for batch in loader:
            out.update({(e, round(float(z.mean()))): z for z in batch})
    return out


def test_worker_processes_see_the_same_draws_as_the_main_process():
    """Persistent workers hold a copy of the dataset: the epoch reaches them through shared memory."""
    main, workers = _epochs(0), _epochs(2)
    assert sorted(main) == sorted(workers) == [(e, i) for e in range(3) for i in range(12)]
    for key, z in main.items():
        torch.testing.assert_close(workers[key], z, rtol=0, atol=0)
    assert all(not torch.equal(main[0, i], main[1, i]) for i in range(12))  # a new epoch: new draws


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
