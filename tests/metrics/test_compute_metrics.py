import pytest
import torch

import ganfast.metrics as metrics
from tests.metrics.conftest import ellipse_images
from tests.metrics.test_inception import StandInInception, script


def test_metric_names():
    assert metrics.METRICS == ("swd", "fid", "kid", "pr", "class_acc", "inception_fid", "inception_kid", "is")


def test_unknown_names_list_the_valid_ones():
    x = ellipse_images(4)
    with pytest.raises(ValueError, match="lpips.*valid: swd, fid, kid, pr, class_acc, inception_fid, inception_kid, is"):
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


# ---------------------------------------------------------------- class_acc

def test_class_accuracy_from_logits_by_hand():
    logits = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [5.0, 0, 0], [0, 0, 5.0], [0, 5.0, 0]])
    labels = torch.tensor([0, 1, 1, 2, 2])              # hits: yes, yes, no, yes, no
    out = metrics.class_accuracy_from_logits(logits, labels)
    assert out == pytest.approx({"class_acc": 60.0, "class_acc_min": 50.0, "class_acc_0": 100.0,
                                 "class_acc_1": 50.0, "class_acc_2": 50.0})
    # a class nobody asked for has no key and does not count in the minimum
    out = metrics.class_accuracy_from_logits(logits[:2], labels[:2])
    assert set(out) == {"class_acc", "class_acc_min", "class_acc_0", "class_acc_1"} and out["class_acc_min"] == 100.0


@pytest.mark.parametrize("labels, match", [
    (torch.tensor([0.0, 1.0]), "integer"), (torch.tensor([0, 1, 2]), r"\[2\]"), (torch.tensor([0, 3]), r"\[0, 3\)"),
    (torch.tensor([-1, 0]), r"\[0, 3\)"),
])
def test_class_accuracy_bad_labels_raise(labels, match):
    with pytest.raises(ValueError, match=match):
        metrics.class_accuracy_from_logits(torch.zeros(2, 3), labels)


def test_class_acc_scores_real_fashion_mnist_by_its_labels():
    """Real images with their true labels score as the classifier does on real data (high); the same
    images with the labels rotated by one class score near chance. compute_metrics needs the labels."""
    from ganfast.data import open_dataset
    data = open_dataset("fashion-mnist", resolution=32, channels=1)
    images, labels = data.get_batch(list(range(0, 2000, 4)))
    true = metrics.compute_metrics(["class_acc"], images, images, fake_labels=labels)
    assert true["class_acc"] > 85 and true["class_acc_min"] > 50
    assert sum(k.startswith("class_acc_") and k != "class_acc_min" for k in true) == 10
    assert true == pytest.approx(metrics.class_accuracy(images, labels))
    wrong = metrics.compute_metrics(["class_acc", "fid"], images, images, fake_labels=(labels + 1) % 10)
    assert wrong["class_acc"] < 15 and abs(wrong["fid"]) < 1e-6
    with pytest.raises(ValueError, match="fake_labels"):
        metrics.compute_metrics(["class_acc"], images, images)
