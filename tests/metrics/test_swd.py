import math

import pytest
import torch

from ganfast.metrics.swd import (laplacian_pyramid, pyramid_resolutions, reconstruct_from_pyramid,
                                 sliced_wasserstein, sliced_wasserstein_distance)

# Small settings keep each call well under a second on 2 CPU cores.
FAST = dict(descriptors_per_image=32, projections=128, repeats=2)


@pytest.mark.parametrize("resolution, expected", [
    (32, [32, 16]),
    (256, [256, 128, 64, 32, 16]),
    (28, [28]),          # 14 < 16: raw Fashion-MNIST has a single level
    (48, [48, 24]),      # 24 / 2 = 12 < 16 ends it
    (16, [16]),
])
def test_pyramid_resolutions(resolution, expected):
    assert pyramid_resolutions(resolution, 16) == expected


@pytest.mark.parametrize("channels, resolution, levels", [(1, 32, 2), (3, 64, 3), (3, 48, 2)])
def test_pyramid_reconstructs_exactly(channels, resolution, levels):
    x = torch.randn(3, channels, resolution, resolution, dtype=torch.float64)
    pyramid = laplacian_pyramid(x, levels)
    assert [p.shape[-1] for p in pyramid] == [resolution >> i for i in range(levels)]
    torch.testing.assert_close(reconstruct_from_pyramid(pyramid), x, rtol=0, atol=1e-12)


def test_pyramid_of_constant_image_has_empty_bands():
    # The binomial filter sums to 1 and the zero-insert upsampling with gain 4 puts weight
    # (1+6+1)/16*2 = (4+4)/16*2 = 1 on every output pixel, so a constant passes unchanged.
    x = torch.full((2, 3, 32, 32), 0.25, dtype=torch.float64)
    band, low = laplacian_pyramid(x, 2)
    torch.testing.assert_close(band, torch.zeros_like(band), rtol=0, atol=1e-12)
    torch.testing.assert_close(low, torch.full((2, 3, 16, 16), 0.25, dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("dim, mean_abs_projection", [
    (1, 1.0),
    (2, 2 / math.pi),
    (3, 0.5),
    (10, 256 / (315 * math.pi)),   # Gamma(5) / (sqrt(pi) Gamma(11/2)) = 768 / (945 pi)
])
def test_sliced_distance_of_shifted_set_is_mean_projected_shift(dim, mean_abs_projection):
    # b = a + s: every projection of b is that of a shifted by <s, u>, so the sorted values differ
    # by exactly |<s, u>|; averaged over unit directions that is |s| E|u_1|, with
    # E|u_1| = Gamma(d/2) / (sqrt(pi) Gamma((d+1)/2)). 4 x 512 directions put the Monte-Carlo
    # error near 1%; in 1-D the only directions are +-1 and the answer is exact.
    a = torch.randn(500, dim, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    shift = torch.full((dim,), 3.0 / math.sqrt(dim), dtype=torch.float64)   # |s| = 3
    got = sliced_wasserstein_distance(a, a + shift, projections=512, repeats=4)
    expected = 3.0 * mean_abs_projection
    tolerance = 1e-12 if dim == 1 else 0.04 * expected
    assert abs(got - expected) <= tolerance, (dim, got, expected)


def test_sliced_distance_is_order_free_and_zero_for_permuted_sets():
    a = torch.randn(300, 4, dtype=torch.float64)
    assert sliced_wasserstein_distance(a, a[torch.randperm(300)]) == pytest.approx(0.0, abs=1e-12)


def test_sliced_distance_rejects_unequal_sets():
    with pytest.raises(ValueError, match="a, b"):
        sliced_wasserstein_distance(torch.zeros(5, 3), torch.zeros(6, 3))


def test_identical_sets_much_closer_than_different_sets(make_ellipses):
    real = make_ellipses(64, 3, 32, seed=0)
    # 128 descriptors per image: fewer leave too much sampling noise for a clear margin.
    options = dict(FAST, descriptors_per_image=128)
    same = sliced_wasserstein(real, real.clone(), **options)
    noise = sliced_wasserstein(real, torch.rand(64, 3, 32, 32) * 2 - 1, **options)
    assert set(same) == {"swd_32", "swd_16", "swd_avg"}
    assert same["swd_avg"] == pytest.approx((same["swd_32"] + same["swd_16"]) / 2)
    for key in same:
        # Same images, different random patches: only sampling noise remains.
        assert same[key] < 0.15 * noise[key], (key, same[key], noise[key])


def test_grows_monotonically_with_added_noise(make_ellipses):
    real = make_ellipses(64, 1, 32, seed=0)
    noise = torch.randn(real.shape, generator=torch.Generator().manual_seed(5))
    values = [sliced_wasserstein(real, (real + sigma * noise).clamp(-1, 1), **FAST)["swd_avg"]
              for sigma in (0.0, 0.05, 0.2, 0.6)]
    assert all(x < y for x, y in zip(values, values[1:])) and values[-1] > 2 * values[1], values


def test_deterministic_in_seed_and_leaves_global_rng_alone(make_ellipses):
    real, fake = make_ellipses(16, 1, 32, seed=0), make_ellipses(16, 1, 32, seed=1)
    state = torch.get_rng_state()
    first = sliced_wasserstein(real, fake, seed=3, **FAST)
    assert torch.equal(torch.get_rng_state(), state)
    assert sliced_wasserstein(real, fake, seed=3, **FAST) == first
    assert sliced_wasserstein(real, fake, seed=4, **FAST) != first
    # Pyramid batching is a memory knob only.
    assert sliced_wasserstein(real, fake, seed=3, batch_size=5, **FAST) == pytest.approx(first, rel=1e-5)


def test_levels_at_64_and_uint8_and_unequal_sizes(make_ellipses):
    real = ((make_ellipses(12, 3, 64, seed=0) + 1) * 127.5).round().to(torch.uint8)
    fake = make_ellipses(20, 3, 64, seed=1)
    result = sliced_wasserstein(real, fake, **FAST)
    assert list(result) == ["swd_64", "swd_32", "swd_16", "swd_avg"]
    assert all(math.isfinite(v) and v > 0 for v in result.values())


def test_constant_fake_set_stays_finite(make_ellipses):
    result = sliced_wasserstein(make_ellipses(8, 1, 32), torch.zeros(8, 1, 32, 32), **FAST)
    assert all(math.isfinite(v) for v in result.values())


@pytest.mark.parametrize("kwargs, match", [
    (dict(patch=40), "patch"),
    (dict(min_resolution=2), "min_resolution"),
    (dict(descriptors_per_image=0), "descriptors_per_image"),
])
def test_bad_arguments_raise(make_ellipses, kwargs, match):
    x = make_ellipses(4, 1, 32)
    with pytest.raises(ValueError, match=match):
        sliced_wasserstein(x, x, **kwargs)


def test_mismatched_image_shapes_raise(make_ellipses):
    with pytest.raises(ValueError, match="real, fake"):
        sliced_wasserstein(make_ellipses(4, 1, 32), make_ellipses(4, 3, 32))
