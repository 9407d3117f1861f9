"""Synthetic image sets for the metric tests: structured 'real' images (a bright ellipse on a dark
background, like a garment on the Fashion-MNIST background) that need no data files."""
import pytest
import torch


def ellipse_images(n: int, channels: int = 1, resolution: int = 32, seed: int = 0) -> torch.Tensor:
    """[n, channels, resolution, resolution] float in [-1, 1]: background -1, one filled ellipse of
    random centre, radii and brightness per image, with a soft edge."""
    g = torch.Generator().manual_seed(seed)
    coords = (torch.arange(resolution, dtype=torch.float32) + 0.5) / resolution       # [R]
    cy, cx = (0.3 + 0.4 * torch.rand(2, n, 1, 1, generator=g))
    ry, rx = (0.15 + 0.25 * torch.rand(2, n, 1, 1, generator=g))
    brightness = 0.3 + 0.7 * torch.rand(n, channels, 1, 1, generator=g)
    dist = ((coords.view(1, -1, 1) - cy) / ry) ** 2 + ((coords.view(1, 1, -1) - cx) / rx) ** 2  # [n, R, R]
    inside = torch.sigmoid((1.0 - dist) * 8.0).unsqueeze(1)                          # [n, 1, R, R]
    return -1.0 + inside * (1.0 + brightness)


@pytest.fixture
def make_ellipses():
    return ellipse_images
