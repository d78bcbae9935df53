"""Sliced Wasserstein distance: known answers."""

import math

import pytest
import torch

from neuromf.evaluation.swd import projection_chunks, sliced_wasserstein


def _latents(n=32, shape=(1, 4, 4, 4), seed=0):
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_identical_sets_give_zero():
    x = _latents()
    assert sliced_wasserstein(x, x.clone(), num_projections=64).item() == pytest.approx(0.0, abs=1e-12)
    # permuting the samples does not change the empirical distribution
    assert sliced_wasserstein(x, x[torch.randperm(len(x))], num_projections=64).item() < 1e-6


def test_constant_shift_matches_closed_form():
    x = _latents(n=48, shape=(1, 2, 2, 4))  # d = 16
    d = x[0].numel()
    s = torch.linspace(-1.0, 2.0, d, dtype=torch.float64).reshape(x.shape[1:])
    y = x + s
    # exact per projection: W_2^2 = <theta, s>^2 for the same seeded directions
    per = sliced_wasserstein(x, y, num_projections=64, seed=3, reduction="none")
    theta = torch.cat(list(projection_chunks(d, 64, seed=3))).double()
    torch.testing.assert_close(per, (theta @ s.flatten()) ** 2, rtol=1e-5, atol=1e-6)
    # expectation over uniform directions: SWD_2^2 = |s|^2 / d
    swd = sliced_wasserstein(x, y, num_projections=8192, seed=0).item()
    assert swd**2 == pytest.approx(s.pow(2).sum().item() / d, rel=0.05)


def test_shift_grows_monotonically_and_seed_is_reproducible():
    x = _latents()
    vals = [sliced_wasserstein(x, x + a, num_projections=128).item() for a in (0.1, 0.5, 2.0)]
    assert vals[0] < vals[1] < vals[2]
    # uniform shift a*1: <theta, 1>^2 mean is 1 -> SWD ~ a (within projection noise)
    assert vals[2] == pytest.approx(2.0, rel=0.25)
    a = sliced_wasserstein(x, x + 0.5, num_projections=16, seed=7)
    b = sliced_wasserstein(x, x + 0.5, num_projections=16, seed=7)
    c = sliced_wasserstein(x, x + 0.5, num_projections=16, seed=8)
    assert a.item() == b.item() and a.item() != c.item()


def test_unequal_sizes_exact_quantile_integral():
    x = torch.tensor([[0.0], [1.0]])
    # same empirical distribution with different sizes -> 0
    assert sliced_wasserstein(x, x.repeat(3, 1), num_projections=8).item() == pytest.approx(0.0, abs=1e-12)
    # {0, 1} vs {0, 0, 1}: quantile functions differ by 1 on [1/2, 2/3) -> W_2^2 = 1/6 for every direction
    per = sliced_wasserstein(x, torch.tensor([[0.0], [0.0], [1.0]]), num_projections=8, reduction="none")
    torch.testing.assert_close(per, torch.full((8,), 1 / 6, dtype=torch.float64))
    # large unequal Gaussian samples with a known shift
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(600, 8, generator=g), torch.randn(400, 8, generator=g) + 1.5
    swd = sliced_wasserstein(a, b, num_projections=2048).item()
    assert swd == pytest.approx(1.5, rel=0.1)  # |s|^2/d = 8*1.5^2/8


def test_p1_and_bad_inputs():
    x = _latents(n=8)
    # p = 1: E|<theta, s>| with |s| = sqrt(d) is ~ sqrt(2 / pi) for large d (here d = 64)
    swd1 = sliced_wasserstein(x, x + 1.0, p=1, num_projections=512).item()
    assert swd1 == pytest.approx(math.sqrt(2 / math.pi), rel=0.1)
    with pytest.raises(ValueError, match="different sample sizes"):
        sliced_wasserstein(x, _latents(n=8, shape=(2, 4, 4, 4)))
    with pytest.raises(ValueError, match="reduction"):
        sliced_wasserstein(x, x, reduction="sum")
