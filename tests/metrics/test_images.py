import pytest
import torch

from ganfast.metrics.images import FLOAT_RANGE_SLACK, as_float_images, as_uint8_images, rgb_to_gray


def test_uint8_maps_to_minus_one_one():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 1, 1, 3).expand(1, 1, 3, 3)
    got = as_float_images("real", x)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got[0, 0, 0], torch.tensor([-1.0, 51 / 127.5 - 1, 1.0]))


def test_float_passes_and_overshoot_is_clamped():
    x = torch.tensor([-1.7, -0.5, 0.25, 1.3]).view(1, 1, 2, 2).double()
    got = as_float_images("fake", x)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.flatten(), torch.tensor([-1.0, -0.5, 0.25, 1.0]))


def test_uint8_round_trip_and_rounding():
    x = torch.tensor([-1.0, 0.0, 1.0, 0.999]).view(1, 1, 2, 2)
    # (x + 1) * 127.5: 0, 127.5 -> 128 (round half to even), 255, 254.87 -> 255
    assert as_uint8_images("fake", x).flatten().tolist() == [0, 128, 255, 255]
    u = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    assert as_uint8_images("real", u) is u
    assert torch.equal(as_uint8_images("real", as_float_images("real", u)), u)


def test_rgb_to_gray_uses_bt601_weights():
    x = torch.zeros(1, 3, 2, 2)
    x[:, 0], x[:, 1], x[:, 2] = 1.0, -1.0, 0.5
    expected = 0.299 * 1.0 + 0.587 * -1.0 + 0.114 * 0.5
    torch.testing.assert_close(rgb_to_gray(x), torch.full((1, 1, 2, 2), expected))
    gray = torch.rand(2, 1, 3, 3)
    assert rgb_to_gray(gray) is gray


@pytest.mark.parametrize("images, match", [
    ([[0.0]], "tensor"),                                          # not a tensor
    (torch.zeros(3, 8, 8), r"rank 4"),                            # missing batch dim
    (torch.zeros(2, 2, 8, 8), "channels"),                        # 2 channels
    (torch.zeros(2, 4, 8, 8), "channels"),                        # RGBA
    (torch.zeros(2, 1, 8, 6), "square"),
    (torch.zeros(0, 1, 8, 8), "non-empty"),
    (torch.zeros(2, 1, 8, 8, dtype=torch.int32), "dtype"),
    (torch.full((2, 1, 8, 8), 255.0), r"\[-1, 1\]"),              # float [0, 255] convention
    (torch.full((2, 1, 8, 8), -1.0 - FLOAT_RANGE_SLACK - 0.01), r"\[-1, 1\]"),
    (torch.full((2, 1, 8, 8), float("nan")), "NaN"),
])
def test_bad_images_raise_naming_the_argument(images, match):
    with pytest.raises(ValueError, match=match) as info:
        as_float_images("fake", images)
    assert str(info.value).startswith("fake:")
