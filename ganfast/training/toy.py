"""The 2-D ring of Gaussians (the seeds' mode-collapse example) and how to score samples on it.

Data: `modes` Gaussians of standard deviation `std` centred on a circle of `radius`. A sample is
"high quality" when it lies within `quality_sigmas` standard deviations of its nearest centre; a
mode is "covered" when it holds at least `min_share` of the fair share (1 / modes) of high-quality
samples. This is the measure of Metz et al. 2017 and Srivastava et al. 2017 (VEEGAN): modes
covered and the fraction of high-quality samples.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

__all__ = ["ring_centers", "RingOfGaussians", "RingCoverage", "ring_coverage"]


def ring_centers(modes: int = 8, radius: float = 2.0) -> torch.Tensor:
    """[modes, 2] float64: the centres, the first at angle 0, counter-clockwise."""
    if isinstance(modes, bool) or not isinstance(modes, int) or modes < 1:
        raise ValueError(f"ring_centers: modes must be an int >= 1, got {modes!r}")
    if not radius > 0:
        raise ValueError(f"ring_centers: radius must be > 0, got {radius!r}")
    angles = torch.arange(modes, dtype=torch.float64) * (2 * math.pi / modes)
    return radius * torch.stack([angles.cos(), angles.sin()], dim=1)


class RingOfGaussians(Dataset):
    """A fixed sample of `size` points from the ring (drawn once from `seed`): items are
    (point float32 [2], label int64 = its mode), so it plugs into ganfast.data.batch_iterator."""

    def __init__(self, size: int = 65536, modes: int = 8, radius: float = 2.0, std: float = 0.02, seed: int = 0):
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"RingOfGaussians: size must be an int >= 1, got {size!r}")
        if not std > 0:
            raise ValueError(f"RingOfGaussians: std must be > 0, got {std!r}")
        self.modes, self.radius, self.std = modes, float(radius), float(std)
        self.centers = ring_centers(modes, radius)
        gen = torch.Generator().manual_seed(seed)
        self.labels = torch.randint(modes, (size,), generator=gen)
        noise = torch.randn(size, 2, generator=gen, dtype=torch.float64) * std
        self.points = (self.centers[self.labels] + noise).float()            # [size, 2]
        self.num_classes, self.resolution, self.channels = 0, None, None

    def __len__(self) -> int:
        return self.points.shape[0]

    def __getitem__(self, i: int):
        return self.points[i], self.labels[i]


@dataclass(frozen=True)
class RingCoverage:
    modes_covered: int        # modes holding >= min_share of a fair share of the high-quality samples
    high_quality: float       # fraction of samples within quality_sigmas std of their nearest centre
    per_mode: tuple           # high-quality sample count per mode


def ring_coverage(samples: torch.Tensor, modes: int = 8, radius: float = 2.0, std: float = 0.02,
                  quality_sigmas: float = 3.0, min_share: float = 0.25) -> RingCoverage:
    """Score samples [N, 2] against the ring (see the module docstring)."""
    if not isinstance(samples, torch.Tensor) or samples.ndim != 2 or samples.shape[1] != 2 or samples.shape[0] < 1:
        got = list(samples.shape) if isinstance(samples, torch.Tensor) else type(samples).__name__
        raise ValueError(f"ring_coverage: samples must be [N, 2] with N >= 1, got {got}")
    centers = ring_centers(modes, radius)
    dist = torch.cdist(samples.detach().double().cpu(), centers)          # [N, modes]
    nearest_dist, nearest = dist.min(dim=1)
    good = nearest_dist <= quality_sigmas * std
    per_mode = torch.bincount(nearest[good], minlength=modes)
    fair = good.sum().item() / modes
    covered = int((per_mode >= max(1.0, min_share * fair)).sum()) if fair > 0 else 0
    return RingCoverage(covered, good.double().mean().item(), tuple(per_mode.tolist()))
