import math

import pytest
import torch

from ganfast.metrics.fid import (classifier_fid, classifier_kid, frechet_distance_from_features,
                                 kernel_distance_from_features, manifold_radii, precision_recall,
                                 precision_recall_from_features)


def _column(*values):
    return torch.tensor(values, dtype=torch.float64).view(-1, 1)


# ---- FID on hand-made features -----------------------------------------------------------------

def test_frechet_distance_in_one_dimension():
    # 1-D: (mu_r - mu_f)^2 + s_r + s_f - 2 sqrt(s_r s_f) = (mu_r - mu_f)^2 + (sd_r - sd_f)^2.
    # real {-1, 1}: mean 0, unbiased variance 2; fake {2, 6}: mean 4, variance 8.
    # 16 + 2 + 8 - 2 * 4 = 18.
    assert frechet_distance_from_features(_column(-1, 1), _column(2, 6)) == pytest.approx(18.0, rel=1e-9)


def test_frechet_distance_of_independent_dimensions_adds_up():
    # Dimension 0 as above (18); dimension 1 is constant, 3 (real) and 5 (fake): variance 0 and no
    # covariance with dimension 0, so it adds (3 - 5)^2 = 4.
    real = torch.tensor([[-1.0, 3.0], [1.0, 3.0]], dtype=torch.float64)
    fake = torch.tensor([[2.0, 5.0], [6.0, 5.0]], dtype=torch.float64)
    assert frechet_distance_from_features(real, fake) == pytest.approx(22.0, rel=1e-9)


def test_frechet_distance_of_a_set_with_itself_is_zero():
    f = torch.randn(500, 16, dtype=torch.float64)
    assert abs(frechet_distance_from_features(f, f.clone())) < 1e-8


def test_frechet_distance_needs_two_samples_and_equal_widths():
    with pytest.raises(ValueError, match="fake_features: expected at least 2"):
        frechet_distance_from_features(torch.randn(5, 3), torch.randn(1, 3))
    with pytest.raises(ValueError, match="feature sizes differ"):
        frechet_distance_from_features(torch.randn(5, 3), torch.randn(5, 4))
    with pytest.raises(ValueError, match=r"real_features: expected floating features \[N, F\]"):
        frechet_distance_from_features(torch.randn(5), torch.randn(5, 1))


# ---- KID on hand-made features -----------------------------------------------------------------

def test_kernel_distance_by_hand():
    # F = 1, kernel k(x, y) = (x y + 1)^3; subsets of the whole sets, so every draw is the same.
    # real {0, 1}: k(0, 1) = 1 -> 2 * 1 / (2 * 1) = 1; fake {2, 3}: k(2, 3) = 7^3 = 343 -> 343;
    # cross: k(0,2) + k(0,3) + k(1,2) + k(1,3) = 1 + 1 + 27 + 64 = 93 -> 2 * 93 / 4 = 46.5.
    # Unbiased MMD^2 = 1 + 343 - 46.5 = 297.5.
    mean, std = kernel_distance_from_features(_column(0, 1), _column(2, 3), subset_size=2, subsets=3)
    assert mean == pytest.approx(297.5, rel=1e-9)
    assert std == pytest.approx(0.0, abs=1e-9)


def test_kernel_distance_seeded_and_leaves_global_rng_alone():
    real, fake = torch.randn(200, 8), torch.randn(200, 8) + 0.3
    state = torch.get_rng_state()
    first = kernel_distance_from_features(real, fake, subset_size=50, subsets=10, seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    assert kernel_distance_from_features(real, fake, subset_size=50, subsets=10, seed=1) == first
    assert kernel_distance_from_features(real, fake, subset_size=50, subsets=10, seed=2) != first


def test_kernel_distance_default_subset_fits_small_sets():
    mean, std = kernel_distance_from_features(torch.randn(30, 4), torch.randn(40, 4) + 5, subsets=5)
    assert mean > 0 and math.isfinite(std)


@pytest.mark.parametrize("kwargs, match", [(dict(subset_size=31), "subset_size"), (dict(subset_size=1), "subset_size"),
                                           (dict(subsets=0), "subsets")])
def test_kernel_distance_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kernel_distance_from_features(torch.randn(30, 4), torch.randn(40, 4), **kwargs)


# ---- precision / recall on hand-made features --------------------------------------------------

def test_precision_recall_two_dimensional_by_hand():
    # real on a line, 1 apart: with k = 1 every real radius is 1.
    real = torch.tensor([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    # fake: two near the line, two far away and 1 apart from each other.
    fake = torch.tensor([[0.5, 0.0], [1.5, 0.5], [10.0, 10.0], [10.0, 11.0]])
    # fake radii (k=1): |f0 - f1| = sqrt(1.25) = 1.118 for f0 and f1; 1 for f2 and f3.
    torch.testing.assert_close(manifold_radii(fake.double(), 1),
                               torch.tensor([math.sqrt(1.25), math.sqrt(1.25), 1.0, 1.0], dtype=torch.float64))
    # precision: f0 is 0.5 from r0, f1 is sqrt(0.5) = 0.707 from r1 (<= 1): inside; f2, f3 far -> 2/4.
    # recall: r0 (0.5 from f0), r1 (0.5 from f0), r2 (0.707 from f1) inside a radius-1.118 ball;
    # r3 is sqrt(2.25 + 0.25) = 1.58 from f1 and farther from the rest -> 3/4.
    assert precision_recall_from_features(real, fake, k=1) == {"precision": 0.5, "recall": 0.75}


def test_precision_recall_kth_neighbour_and_boundary():
    # k = 2 on 0, 1, 3 (1-D): radii are the 2nd-nearest distances 3, 2, 3.
    torch.testing.assert_close(manifold_radii(_column(0, 1, 3), 2), torch.tensor([3.0, 2.0, 3.0], dtype=torch.float64))
    # real {0, 1} has radii 1: a fake point at 2 lies exactly on the ball around 1 and counts as
    # inside; one at 2.001 does not.
    assert precision_recall_from_features(_column(0, 1), _column(0.5, 2), k=1)["precision"] == 1.0
    assert precision_recall_from_features(_column(0, 1), _column(0.5, 2.001), k=1)["precision"] == 0.5


def test_precision_recall_identical_and_far_apart_sets():
    f = torch.randn(300, 16)
    assert precision_recall_from_features(f, f.clone()) == {"precision": 1.0, "recall": 1.0}
    assert precision_recall_from_features(f, f + 1000.0) == {"precision": 0.0, "recall": 0.0}


def test_precision_recall_needs_more_than_k_samples():
    with pytest.raises(ValueError, match="at least 4"):
        precision_recall_from_features(torch.randn(3, 2), torch.randn(10, 2), k=3)


# ---- on images, through the shipped Fashion-MNIST classifier ----------------------------------

@pytest.fixture(scope="module")
def image_sets():
    from tests.metrics.conftest import ellipse_images
    return {"real_a": ellipse_images(200, 1, 32, seed=0), "real_b": ellipse_images(200, 1, 32, seed=1),
            "noise": torch.rand(200, 1, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1}


def test_classifier_fid_self_zero_and_noise_far(image_sets):
    real_a, real_b, noise = image_sets["real_a"], image_sets["real_b"], image_sets["noise"]
    self_fid = classifier_fid(real_a, real_a)
    other_fid = classifier_fid(real_a, real_b)
    noise_fid = classifier_fid(real_a, noise)
    assert abs(self_fid) < 1e-3 * other_fid
    assert noise_fid > 10 * other_fid, (other_fid, noise_fid)


def test_classifier_kid_noise_far(image_sets):
    real_a, real_b, noise = image_sets["real_a"], image_sets["real_b"], image_sets["noise"]
    other_kid, _ = classifier_kid(real_a, real_b, subset_size=100, subsets=20)
    noise_kid, noise_std = classifier_kid(real_a, noise, subset_size=100, subsets=20)
    assert noise_kid > 10 * max(other_kid, noise_std), (other_kid, noise_kid, noise_std)


def test_classifier_precision_recall_on_images(image_sets):
    real_a, noise = image_sets["real_a"], image_sets["noise"]
    assert precision_recall(real_a, real_a) == {"precision": 1.0, "recall": 1.0}
    far = precision_recall(real_a, noise)
    assert far["precision"] < 0.05 and far["recall"] < 0.05, far


def test_classifier_metrics_accept_uint8_and_rgb(image_sets):
    real = image_sets["real_a"][:64]
    as_uint8 = ((real + 1) * 127.5).round().to(torch.uint8)
    as_rgb = real.expand(-1, 3, -1, -1)      # equal channels: the luma weights sum to 1
    # Rounding to uint8 moves pixels by up to 1/255; the RGB -> gray weights by float32 rounding;
    # 64 samples of 128 features give a singular covariance, whose square root has ~1e-6 noise.
    assert abs(classifier_fid(real, as_uint8)) < 1e-2
    assert abs(classifier_fid(real, as_rgb)) < 1e-4
