"""The image convention shared by every metric, checked in one place.

Metric functions take real and fake images as tensors [N, C, H, W], square (H == W), C = 1
(grayscale) or 3 (RGB), either
  * floating point in [-1, 1] -- what ganfast generators output, or
  * uint8 in [0, 255] -- what datasets and image files hold.
`as_float_images` validates that and returns float32 in [-1, 1]; `as_uint8_images` returns uint8
in [0, 255] (what the Inception network takes).
"""
from __future__ import annotations

import torch

# Generators without a final tanh (StyleGAN) overshoot [-1, 1] a little, more so early in training;
# saving an image clamps that away, and so do the metrics. Values beyond +-(1 + slack) mean another
# convention (float images in [0, 255]), which would give meaningless numbers, so they raise.
FLOAT_RANGE_SLACK = 1.0


def _check_layout(name: str, images: torch.Tensor) -> None:
    """Type, rank, channel count, squareness and non-emptiness of an image batch."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"{name}: expected a tensor [N, C, H, W], got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"{name}: expected images [N, C, H, W] (rank 4), got shape {list(images.shape)}")
    n, c, h, w = images.shape
    if c not in (1, 3):
        raise ValueError(f"{name}: expected 1 (grayscale) or 3 (RGB) channels, got C={c} "
                         f"in shape {list(images.shape)}")
    if h != w:
        raise ValueError(f"{name}: expected square images (H == W), got H={h}, W={w}")
    if n == 0 or h == 0:
        raise ValueError(f"{name}: expected a non-empty batch of images, got shape {list(images.shape)}")


def as_float_images(name: str, images: torch.Tensor) -> torch.Tensor:
    """Validate `images` (the argument called `name`) and return float32 [N, C, H, W] in [-1, 1].

    uint8 images map 0 -> -1 and 255 -> 1 (x / 127.5 - 1). Floating images are clamped to
    [-1, 1]. Raises ValueError for: a non-tensor, rank != 4, C not in (1, 3), H != W, an empty
    batch, a dtype that is neither uint8 nor floating, non-finite values, or floating values
    outside [-1 - FLOAT_RANGE_SLACK, 1 + FLOAT_RANGE_SLACK].
    """
    _check_layout(name, images)
    if images.dtype == torch.uint8:
        return images.float() / 127.5 - 1.0
    if not images.is_floating_point():
        raise ValueError(f"{name}: expected uint8 in [0, 255] or floating point in [-1, 1], "
                         f"got dtype {images.dtype}")
    images = images.float()
    if not bool(torch.isfinite(images).all()):
        raise ValueError(f"{name}: images contain NaN or infinite values")
    lo, hi = float(images.min()), float(images.max())
    if lo < -1.0 - FLOAT_RANGE_SLACK or hi > 1.0 + FLOAT_RANGE_SLACK:
        raise ValueError(f"{name}: floating images must lie in [-1, 1], got values in [{lo:.4g}, {hi:.4g}] "
                         f"(images in [0, 255]? pass them as uint8, or as x / 127.5 - 1)")
    return images.clamp(-1.0, 1.0)


def as_uint8_images(name: str, images: torch.Tensor) -> torch.Tensor:
    """Validate like `as_float_images` and return uint8 [N, C, H, W] in [0, 255] (rounded)."""
    if isinstance(images, torch.Tensor) and images.dtype == torch.uint8:
        _check_layout(name, images)   # every uint8 value is in range
        return images
    return ((as_float_images(name, images) + 1.0) * 127.5).round().to(torch.uint8)


def rgb_to_gray(images: torch.Tensor) -> torch.Tensor:
    """[N, 3, H, W] -> [N, 1, H, W] with the ITU-R BT.601 luma weights (0.299, 0.587, 0.114).
    The weights sum to 1, so [-1, 1] stays [-1, 1]. [N, 1, H, W] passes through."""
    if images.shape[1] == 1:
        return images
    weights = images.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True)
