"""Sliced Wasserstein distance between Laplacian-pyramid patch statistics (SWD), the multi-scale
metric of Karras et al. 2018, "Progressive Growing of GANs", appendix D.

For each image set: a Laplacian pyramid per image, from the full resolution down to a 16x16
low-pass level; at every level, random 7x7 neighbourhoods (128 per image) become descriptors of
7*7*C values; each set's descriptors are normalised per colour channel to zero mean and unit
standard deviation (over that set's descriptors and patch pixels), and the sliced Wasserstein
distance between the real and the fake descriptor sets is the mean, over random unit directions,
of the 1-D Wasserstein-1 distance between the projections (128 directions, drawn 4 times and
averaged: 512 in all, as in the ProGAN code).
Small distances at a fine level mean similar edges and noise; at 16x16, similar large-scale
structure. Values are reported x1e3, as in the paper.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from ganfast.metrics.images import as_float_images

# Binomial 5-tap filter [1, 4, 6, 4, 1] / 16 (Burt & Adelson's pyramid kernel, as in the paper).
_BINOMIAL_5 = (1.0, 4.0, 6.0, 4.0, 1.0)
# Projected values held at once while sorting (bounds memory for millions of descriptors).
_PROJECTION_CHUNK_ELEMENTS = 1 << 24


def _blur(x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """Separable [1, 4, 6, 4, 1]/16 filter per channel, reflect padding; [N, C, H, W] -> same."""
    taps = x.new_tensor(_BINOMIAL_5) / 16.0 * gain ** 0.5
    channels = x.shape[1]
    x = F.pad(x, (2, 2, 2, 2), mode="reflect")
    x = F.conv2d(x, taps.view(1, 1, 1, 5).expand(channels, 1, 1, 5), groups=channels)
    return F.conv2d(x, taps.view(1, 1, 5, 1).expand(channels, 1, 5, 1), groups=channels)


def _downsample(x: torch.Tensor) -> torch.Tensor:
    return _blur(x)[:, :, ::2, ::2]                                   # [N, C, H/2, W/2]


def _upsample(x: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.shape
    zeros = x.new_zeros(n, c, 2 * h, 2 * w)
    zeros[:, :, ::2, ::2] = x
    return _blur(zeros, gain=4.0)   # a quarter of the samples are non-zero: gain 4 keeps the mean


def pyramid_resolutions(resolution: int, min_resolution: int = 16) -> list[int]:
    """Level resolutions, finest first: halve while the result is whole and >= min_resolution
    (32 -> [32, 16]; 256 -> [256, 128, 64, 32, 16]; 28 -> [28])."""
    resolutions = [resolution]
    while resolutions[-1] % 2 == 0 and resolutions[-1] // 2 >= min_resolution:
        resolutions.append(resolutions[-1] // 2)
    return resolutions


def laplacian_pyramid(images: torch.Tensor, num_levels: int) -> list[torch.Tensor]:
    """[N, C, R, R] -> num_levels tensors [N, C, R / 2^i, R / 2^i]: band-pass levels (a Gaussian
    level minus the upsampled next one) and, last, the low-pass Gaussian level itself."""
    pyramid, current = [], images
    for _ in range(num_levels - 1):
        smaller = _downsample(current)
        pyramid.append(current - _upsample(smaller))
        current = smaller
    pyramid.append(current)
    return pyramid


def reconstruct_from_pyramid(pyramid: list[torch.Tensor]) -> torch.Tensor:
    """Inverse of `laplacian_pyramid`: coarse to fine, upsample and add the band."""
    images = pyramid[-1]
    for band in reversed(pyramid[:-1]):
        images = band + _upsample(images)
    return images


def _gather_patches(level: torch.Tensor, top: torch.Tensor, left: torch.Tensor, patch: int) -> torch.Tensor:
    """Neighbourhoods of each image at the given top-left corners: level [N, C, S, S], top and
    left int64 [N, D] -> [N * D, C, patch, patch]."""
    n, c = level.shape[:2]
    per_image = top.shape[1]
    top, left = top.to(level.device), left.to(level.device)
    offsets = torch.arange(patch, device=level.device)
    rows = (top[:, :, None] + offsets)[:, :, :, None]                  # [N, D, patch, 1]
    cols = (left[:, :, None] + offsets)[:, :, None, :]                 # [N, D, 1, patch]
    batch = torch.arange(n, device=level.device)[:, None, None, None]  # [N, 1, 1, 1]
    # Advanced indices around a slice put the broadcast index dims first: [N, D, patch, patch, C].
    patches = level[batch, :, rows, cols]
    return patches.permute(0, 1, 4, 2, 3).reshape(n * per_image, c, patch, patch)


def _descriptor_sets(images: torch.Tensor, resolutions: list[int], per_image: int, patch: int,
                     generator: torch.Generator, batch_size: int) -> list[torch.Tensor]:
    """Normalised descriptors [N * per_image, C * patch * patch] for every pyramid level."""
    n = images.shape[0]
    # Corners drawn up front (CPU generator), so the batch size cannot change the result.
    corners = [torch.randint(0, size - patch + 1, (2, n, per_image), generator=generator)
               for size in resolutions]
    per_level: list[list[torch.Tensor]] = [[] for _ in resolutions]
    for start in range(0, n, batch_size):   # batches bound the pyramid's memory
        stop = min(start + batch_size, n)
        for i, level in enumerate(laplacian_pyramid(images[start:stop], len(resolutions))):
            top, left = corners[i][:, start:stop]
            per_level[i].append(_gather_patches(level, top, left, patch))
    descriptor_sets = []
    for chunks in per_level:
        d = torch.cat(chunks)                                          # [M, C, patch, patch]
        mean = d.mean(dim=(0, 2, 3), keepdim=True)
        # A constant image set has zero spread; the floor keeps it finite (its descriptors become 0).
        std = d.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-8)
        descriptor_sets.append(((d - mean) / std).flatten(1))
    return descriptor_sets


def _sort_rows(x: torch.Tensor) -> torch.Tensor:
    """Each row of [P, M] sorted ascending. On the CPU numpy's sort is about 10x faster than
    torch.sort, which also computes the indices."""
    if x.device.type == "cpu":
        return torch.from_numpy(np.sort(x.numpy(), axis=1))
    return torch.sort(x, dim=1).values


def sliced_wasserstein_distance(a: torch.Tensor, b: torch.Tensor, *, projections: int = 128,
                                repeats: int = 4, generator: Optional[torch.Generator] = None) -> float:
    """Sliced Wasserstein-1 distance between two equally sized point sets a, b [M, D]: the mean
    over `projections` random unit directions u of mean_i |sort(a u)_i - sort(b u)_i|, averaged
    over `repeats` independent draws of the directions (CPU `generator`; None: seed 0)."""
    if a.ndim != 2 or a.shape != b.shape or a.shape[0] == 0:
        raise ValueError(f"a, b: expected two non-empty point sets of equal shape [M, D], "
                         f"got {list(a.shape)} and {list(b.shape)}")
    if projections < 1 or repeats < 1:
        raise ValueError(f"projections, repeats: expected >= 1, got {projections}, {repeats}")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    m, dim = a.shape
    chunk = max(1, _PROJECTION_CHUNK_ELEMENTS // m)
    per_repeat = []
    for _ in range(repeats):
        directions = torch.randn(dim, projections, generator=generator)
        directions = (directions / directions.norm(dim=0, keepdim=True)).to(a.device, a.dtype)
        total = a.new_zeros(())
        for j in range(0, projections, chunk):
            u_t = directions[:, j:j + chunk].t()                       # [p, D]
            projected_a = _sort_rows(u_t @ a.t())                      # [p, M]
            projected_b = _sort_rows(u_t @ b.t())
            total = total + (projected_a - projected_b).abs().mean(dim=1).sum()
        per_repeat.append(float(total) / projections)
    return sum(per_repeat) / repeats


def sliced_wasserstein(real: torch.Tensor, fake: torch.Tensor, *, descriptors_per_image: int = 128,
                       patch: int = 7, projections: int = 128, repeats: int = 4,
                       min_resolution: int = 16, seed: int = 0, batch_size: int = 256) -> dict[str, float]:
    """SWD (x1e3) between real and fake images [N, C, R, R] (metric image convention) per pyramid
    level and averaged: {"swd_<R>": ..., "swd_<R/2>": ..., ..., "swd_avg": ...}, finest first.

    Deterministic for a given seed (a private torch.Generator; the global RNG is untouched). When
    the sets differ in size, a random subset of the larger one, as large as the smaller one, is
    used, since the sorted-projection distance compares equally sized sets. `batch_size` bounds
    how many images are in a pyramid at once; it does not change the result.
    """
    real = as_float_images("real", real)
    fake = as_float_images("fake", fake)
    if real.shape[1:] != fake.shape[1:]:
        raise ValueError(f"real, fake: expected the same [C, R, R], got {list(real.shape[1:])} "
                         f"and {list(fake.shape[1:])}")
    resolution = real.shape[-1]
    if patch < 1 or patch > resolution:
        raise ValueError(f"patch: expected 1 <= patch <= image resolution {resolution}, got {patch}")
    if descriptors_per_image < 1:
        raise ValueError(f"descriptors_per_image: expected >= 1, got {descriptors_per_image}")
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    if min_resolution < max(patch, 4):
        # Below 4x4 the 5-tap filter's reflect padding has nothing to reflect.
        raise ValueError(f"min_resolution: expected >= max(patch, 4) = {max(patch, 4)}, got {min_resolution}")
    generator = torch.Generator().manual_seed(seed)
    count = min(real.shape[0], fake.shape[0])
    real, fake = (x if x.shape[0] == count else x[torch.randperm(x.shape[0], generator=generator)[:count]]
                  for x in (real, fake))

    resolutions = pyramid_resolutions(resolution, min_resolution)
    real_sets = _descriptor_sets(real, resolutions, descriptors_per_image, patch, generator, batch_size)
    fake_sets = _descriptor_sets(fake, resolutions, descriptors_per_image, patch, generator, batch_size)
    result = {}
    for size, real_d, fake_d in zip(resolutions, real_sets, fake_sets):
        result[f"swd_{size}"] = 1e3 * sliced_wasserstein_distance(
            real_d, fake_d, projections=projections, repeats=repeats, generator=generator)
    result["swd_avg"] = sum(result.values()) / len(resolutions)
    return result
