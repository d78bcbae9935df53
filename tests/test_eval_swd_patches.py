"""Patch SWD and the seeding of SWD directions, on the real-brain demo latents."""

import torch

from neuromf.evaluation.swd import patch_sliced_wasserstein, random_patches, sliced_wasserstein


def test_random_patches_are_the_voxels_at_their_corners():
    v = torch.arange(2 * 2 * 5 * 6 * 7, dtype=torch.float32).view(2, 2, 5, 6, 7)
    patches = random_patches(v, 3, per_volume=4, seed=1)
    assert patches.shape == (8, 2 * 27)
    # each descriptor is a 3^3 block (channels last) of one volume: consecutive z-voxels differ by 1
    block = patches.view(8, 3, 3, 3, 2)
    assert torch.all(block[..., 1:, :] - block[..., :-1, :] == 1)
    assert torch.all(block[..., 1] - block[..., 0] == 5 * 6 * 7)
    torch.testing.assert_close(random_patches(v, 3, 4, seed=1), patches)


def test_swd_directions_do_not_align_with_equally_seeded_noise():
    """Noise drawn with seed 0 and directions drawn with seed 0 must not share a stream."""
    x = torch.randn(8, 4096, generator=torch.Generator().manual_seed(0))
    y = torch.randn(8, 4096, generator=torch.Generator().manual_seed(99))
    same_seed, other_seeds = sliced_wasserstein(x, y, seed=0), [sliced_wasserstein(x, y, seed=s) for s in (3, 7, 11)]
    # an aligned first direction would add |x_0|^2 / (N P) = 4096 / (8 * 256) = 2 to SWD^2 (0.72 -> ~1.6)
    assert abs(float(same_seed) - float(sum(other_seeds)) / 3) < 0.1


def test_swd_and_patch_swd_rank_brains_above_noise(demo_latents):
    from neuromf.data import LatentDataModule

    dm = LatentDataModule(latent_dir=str(demo_latents))
    dm.setup()
    val = dm.val_latents()
    train = torch.stack([dm.dataset("train")[i] for i in range(8)])
    noise = torch.randn(8, *val.shape[1:], generator=torch.Generator().manual_seed(0))
    assert sliced_wasserstein(train, val) < sliced_wasserstein(noise, val)
    assert patch_sliced_wasserstein(train, val) < 0.7 * patch_sliced_wasserstein(noise, val)
