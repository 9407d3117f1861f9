import pytest
import torch
import torch.nn.functional as F

from ganfast.metrics.classifier import (DEFAULT_WEIGHTS, FashionMNISTClassifier, load_fmnist_classifier,
                                        prepare_classifier_input)


@pytest.fixture(scope="module")
def classifier():
    return load_fmnist_classifier()


def test_shipped_weights_are_small_and_documented(classifier):
    assert DEFAULT_WEIGHTS.stat().st_size < 1_000_000
    meta = classifier.metadata
    assert meta["training_script"] == "tools/train_fmnist_classifier.py"
    assert int(meta["epochs"]) >= 1 and "Fashion-MNIST train split" in meta["data"]
    assert float(meta["test_accuracy"]) >= 0.90


def test_loaded_once_and_frozen(classifier):
    assert load_fmnist_classifier() is classifier
    assert load_fmnist_classifier(DEFAULT_WEIGHTS) is classifier
    assert not classifier.training
    assert not any(p.requires_grad for p in classifier.parameters())


def test_output_shapes(classifier):
    x = torch.rand(5, 1, 32, 32) * 2 - 1
    assert classifier(x).shape == (5, 10)
    features = classifier.features(x)
    assert features.shape == (5, FashionMNISTClassifier.num_features)
    assert bool((features >= 0).all())      # taken after the ReLU


def test_28x28_is_padded_with_background():
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    padded = prepare_classifier_input(x)
    assert padded.shape == (3, 1, 32, 32)
    torch.testing.assert_close(padded[:, :, 2:30, 2:30], x)
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    assert bool((padded[:, :, border] == -1).all())


def test_rgb_and_uint8_and_other_sizes():
    gray = torch.rand(2, 1, 32, 32) * 2 - 1
    # Equal R, G, B give the same gray (the BT.601 weights sum to 1).
    torch.testing.assert_close(prepare_classifier_input(gray.expand(-1, 3, -1, -1)), gray)
    as_uint8 = torch.tensor([0, 255], dtype=torch.uint8).view(2, 1, 1, 1).expand(2, 1, 32, 32)
    torch.testing.assert_close(prepare_classifier_input(as_uint8)[:, 0, 0, 0], torch.tensor([-1.0, 1.0]))
    # 64x64 is resized; a constant image stays constant.
    assert torch.allclose(prepare_classifier_input(torch.full((1, 1, 64, 64), 0.5)), torch.tensor(0.5))


def test_bad_input_raises(classifier):
    with pytest.raises(ValueError, match="channels"):
        classifier(torch.zeros(2, 2, 32, 32))


def test_missing_weights_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_fmnist_classifier"):
        load_fmnist_classifier(tmp_path / "none.safetensors")


def test_classifies_garment_shapes(classifier):
    # Hand-drawn shapes on the -1 background: a trouser (two long vertical legs) and a bag (a wide
    # box with a handle) are the most distinctive classes; the classifier should name them.
    trouser = torch.full((1, 1, 28, 28), -1.0)
    trouser[..., 2:26, 8:13] = 0.6
    trouser[..., 2:26, 15:20] = 0.6
    trouser[..., 2:6, 8:20] = 0.6
    bag = torch.full((1, 1, 28, 28), -1.0)
    bag[..., 10:26, 3:25] = 0.4
    bag[..., 4:10, 9:11] = 0.4
    bag[..., 4:10, 17:19] = 0.4
    bag[..., 4:6, 9:19] = 0.4
    predictions = classifier(torch.cat([trouser, bag])).argmax(1).tolist()
    assert predictions == [1, 8], F.softmax(classifier(torch.cat([trouser, bag])), 1)


def test_accuracy_on_held_out_fashion_mnist(classifier):
    from ganfast.data.fashion_mnist import load_fashion_mnist

    # The test split (the embedded subset holds 100 per class of it) was never trained on.
    images, labels, source = load_fashion_mnist(split="test")
    with torch.inference_mode():
        predictions = torch.cat([classifier(torch.from_numpy(images[i:i + 500]).unsqueeze(1)).argmax(1)
                                 for i in range(0, len(labels), 500)])
    accuracy = float((predictions == torch.from_numpy(labels)).double().mean())
    assert accuracy >= 0.88, (accuracy, source)
