"""Inception metrics through tiny stand-in TorchScript modules that follow the documented contract
(uint8 RGB in; features with return_features=True; logits or probabilities otherwise)."""
import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from ganfast.metrics.fid import frechet_distance_from_features
from ganfast.metrics.inception import (class_probabilities, inception_metrics,
                                       inception_score_from_probabilities, load_inception)

NUM_CLASSES = 4


class StandInInception(torch.nn.Module):
    """Features: per-channel mean of the pixels / 255 and one constant -> [N, 4]. Class: the mean
    brightness quantised to NUM_CLASSES levels; outputs confident logits ("logits"), the matching
    probabilities ("probabilities") or all-zero logits ("uniform")."""

    def __init__(self, output: str):
        super().__init__()
        self.output = output
        self.num_classes = NUM_CLASSES   # TorchScript reads attributes, not module globals

    def forward(self, images: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        assert images.dtype == torch.uint8, "the contract promises uint8"
        assert images.shape[1] == 3, "the contract promises RGB"
        x = images.float() / 255.0
        if return_features:
            return torch.cat([x.mean(dim=(2, 3)), torch.ones(x.shape[0], 1)], dim=1)
        if self.output == "uniform":
            return torch.zeros(x.shape[0], self.num_classes)
        label = (x.mean(dim=(1, 2, 3)) * (self.num_classes - 1)).round().long()
        logits = F.one_hot(label, self.num_classes).float() * 60.0
        return logits.softmax(dim=1) if self.output == "probabilities" else logits


class WithOutputBiasSwitch(torch.nn.Module):
    """Like the NVlabs file's forward(img, return_features, no_output_bias): uniform logits when
    no_output_bias is set (IS 1), confident distinct classes otherwise (IS NUM_CLASSES)."""

    def __init__(self):
        super().__init__()
        self.num_classes = NUM_CLASSES

    def forward(self, images: torch.Tensor, return_features: bool = False,
                no_output_bias: bool = False) -> torch.Tensor:
        n = images.shape[0]
        if return_features or no_output_bias:
            return torch.zeros(n, self.num_classes)
        return F.one_hot(torch.arange(n) % self.num_classes, self.num_classes).float() * 60.0


class WithoutFeatureSwitch(torch.nn.Module):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.float().mean(dim=(2, 3))


def script(module: torch.nn.Module) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():   # torch marks TorchScript deprecated; it is still the format
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(module)


def _script(module: torch.nn.Module, path) -> str:
    script(module).save(str(path))
    return str(path)


@pytest.fixture
def weights(tmp_path):
    return {output: _script(StandInInception(output), tmp_path / f"{output}.pt")
            for output in ("logits", "probabilities", "uniform")}


def _brightness_levels(levels, per_level: int, channels: int = 3) -> torch.Tensor:
    """Flat images, `per_level` of each brightness level (class index), as uint8 [N, C, 8, 8]."""
    values = torch.tensor([round(255 * level / (NUM_CLASSES - 1)) for level in levels for _ in range(per_level)])
    return values.to(torch.uint8).view(-1, 1, 1, 1).expand(-1, channels, 8, 8).contiguous()


# ---- Inception Score formula ------------------------------------------------------------------

def test_inception_score_by_hand():
    # p(y|x) = [1, 0] and [0.5, 0.5]: p(y) = [0.75, 0.25].
    # KL_1 = log(1 / 0.75) = 0.287682; KL_2 = 0.5 log(0.5/0.75) + 0.5 log(0.5/0.25) = 0.143841.
    # IS = exp((0.287682 + 0.143841) / 2) = exp(0.215762) = 1.240806.
    probabilities = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    mean, std = inception_score_from_probabilities(probabilities, splits=1)
    assert mean == pytest.approx(1.240806, rel=1e-6) and std == 0.0


def test_inception_score_extremes():
    uniform = torch.full((12, 5), 0.2)
    assert inception_score_from_probabilities(uniform, splits=3) == pytest.approx((1.0, 0.0))
    one_hot = F.one_hot(torch.arange(12) % 4, 4).double()      # every split holds all 4 classes
    assert inception_score_from_probabilities(one_hot, splits=3) == pytest.approx((4.0, 0.0))


def test_inception_score_splits_are_contiguous_and_std_is_over_splits():
    # Split 1 holds classes 0, 1 (IS 2); split 2 holds one class (IS 1): mean 1.5, std 0.5.
    probabilities = F.one_hot(torch.tensor([0, 1, 2, 2]), 3).double()
    assert inception_score_from_probabilities(probabilities, splits=2) == pytest.approx((1.5, 0.5))
    with pytest.raises(ValueError, match="splits"):
        inception_score_from_probabilities(probabilities, splits=5)


def test_class_probabilities_accepts_either_form():
    logits = torch.randn(6, 5, dtype=torch.float64)
    torch.testing.assert_close(class_probabilities(logits), logits.softmax(1))
    torch.testing.assert_close(class_probabilities(logits.softmax(1)), logits.softmax(1))


# ---- through the TorchScript contract ---------------------------------------------------------

def test_is_of_uniform_logits_is_one(weights):
    fake = _brightness_levels(range(NUM_CLASSES), 5)
    result = inception_metrics(None, fake, weights["uniform"], metrics=("is",), is_splits=5)
    assert result == pytest.approx({"is": 1.0, "is_std": 0.0})


@pytest.mark.parametrize("output", ["logits", "probabilities"])
def test_is_of_confident_distinct_predictions_is_number_of_classes(weights, output):
    # Two splits, each holding every class equally often (contiguous halves).
    levels = list(range(NUM_CLASSES)) * 2
    fake = _brightness_levels(levels, 3)
    result = inception_metrics(None, fake, weights[output], metrics=("is",), is_splits=2)
    assert result["is"] == pytest.approx(NUM_CLASSES, rel=1e-6) and result["is_std"] == pytest.approx(0, abs=1e-6)


def test_float_and_grayscale_images_reach_the_module_as_uint8_rgb(weights):
    fake = _brightness_levels(range(NUM_CLASSES), 2, channels=1).float() / 127.5 - 1   # float, 1 channel
    assert inception_metrics(None, fake, weights["logits"], metrics=("is",), is_splits=1)["is"] == \
        pytest.approx(NUM_CLASSES, rel=1e-6)


def test_fid_and_kid_use_the_module_features(weights):
    real = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    fake = (real.float() * 0.5).to(torch.uint8)
    result = inception_metrics(real, fake, weights["logits"], metrics=("fid", "kid"), kid_subset_size=20,
                               kid_subsets=5, batch_size=7)
    assert set(result) == {"inception_fid", "inception_kid", "inception_kid_std"}
    # The stand-in's features are the channel means / 255 and a constant.
    features = [torch.cat([x.double().mean(dim=(2, 3)) / 255, torch.ones(40, 1, dtype=torch.float64)], 1)
                for x in (real, fake)]
    assert result["inception_fid"] == pytest.approx(frechet_distance_from_features(*features), rel=1e-5)
    assert result["inception_fid"] > 0 and result["inception_kid"] > 0
    same = inception_metrics(real, real, weights["logits"], metrics=("fid",))
    assert abs(same["inception_fid"]) < 1e-9


def test_no_output_bias_is_requested_when_the_module_offers_it(tmp_path):
    path = _script(WithOutputBiasSwitch(), tmp_path / "nvlabs_like.pt")
    fake = torch.zeros(2 * NUM_CLASSES, 3, 8, 8, dtype=torch.uint8)
    # IS 1 (not NUM_CLASSES) shows the switch was set.
    assert inception_metrics(None, fake, path, metrics=("is",), is_splits=1)["is"] == pytest.approx(1.0)
    module = load_inception(path)
    assert module is load_inception(path)                          # cached per path
    assert load_inception(module) is module                        # a loaded module passes through


# ---- errors -------------------------------------------------------------------------------------

def test_missing_weights_tell_the_user_what_to_pass(tmp_path):
    fake = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="--inception-weights PATH"):
        inception_metrics(None, fake, None, metrics=("is",))
    with pytest.raises(FileNotFoundError, match="--inception-weights PATH"):
        load_inception(tmp_path / "missing.pt")


def test_a_file_that_is_not_torchscript_is_rejected(tmp_path):
    path = tmp_path / "weights.pt"
    path.write_bytes(b"not a TorchScript archive")
    with pytest.raises(ValueError, match="not a TorchScript file"):
        load_inception(path)


def test_a_module_without_return_features_is_rejected(tmp_path):
    path = _script(WithoutFeatureSwitch(), tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="return_features"):
        load_inception(path)


def test_bad_selection_and_missing_real(weights):
    fake = _brightness_levels(range(NUM_CLASSES), 2)
    with pytest.raises(ValueError, match="metrics"):
        inception_metrics(fake, fake, weights["logits"], metrics=("fid", "lpips"))
    with pytest.raises(ValueError, match="real"):
        inception_metrics(None, fake, weights["logits"], metrics=("fid",))
    assert math.isfinite(inception_metrics(fake, fake, weights["logits"], metrics=("kid",),
                                           kid_subset_size=4, kid_subsets=2)["inception_kid"])
