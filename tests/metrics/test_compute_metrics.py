import pytest
import torch

import ganfast.metrics as metrics
from tests.metrics.conftest import ellipse_images
from tests.metrics.test_inception import StandInInception, script


def test_metric_names():
    assert metrics.METRICS == ("swd", "fid", "kid", "pr", "inception_fid", "inception_kid", "is")


def test_unknown_names_list_the_valid_ones():
    x = ellipse_images(4)
    with pytest.raises(ValueError, match="lpips.*valid: swd, fid, kid, pr, inception_fid, inception_kid, is"):
        metrics.compute_metrics(["fid", "lpips"], x, x)
    with pytest.raises(ValueError, match="none given"):
        metrics.compute_metrics([], x, x)


def test_inception_metrics_without_weights_fail_first():
    # The bad-images check of "fid" would come later: the missing weights are reported up front.
    with pytest.raises(ValueError, match="--inception-weights"):
        metrics.compute_metrics(["fid", "is"], torch.zeros(2, 5), torch.zeros(2, 5))


def test_classifier_metrics_and_swd_together():
    real, fake = ellipse_images(32, seed=0), ellipse_images(32, seed=1)
    result = metrics.compute_metrics(["swd", "fid", "kid", "pr"], real, fake)
    assert set(result) == {"swd_32", "swd_16", "swd_avg", "fid", "kid", "kid_std", "precision", "recall"}
    assert all(isinstance(v, float) for v in result.values())
    # One feature pass gives the same numbers as the single-metric functions.
    assert result["fid"] == pytest.approx(metrics.classifier_fid(real, fake), rel=1e-9)
    assert (result["kid"], result["kid_std"]) == pytest.approx(metrics.classifier_kid(real, fake), rel=1e-9)
    assert result["swd_avg"] == pytest.approx(metrics.sliced_wasserstein(real, fake)["swd_avg"], rel=1e-9)


def test_single_name_and_inception_module():
    real = (ellipse_images(20, 3, 16, seed=0) + 1) * 0.5 * 255
    real = real.round().to(torch.uint8)
    module = script(StandInInception("logits"))
    result = metrics.compute_metrics(["inception_fid", "inception_kid", "is"], real, real, inception_weights=module)
    assert set(result) == {"inception_fid", "inception_kid", "inception_kid_std", "is", "is_std"}
    assert abs(result["inception_fid"]) < 1e-9
    assert set(metrics.compute_metrics("fid", real, real)) == {"fid"}
