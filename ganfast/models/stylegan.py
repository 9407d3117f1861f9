"""StyleGAN (v1, Karras et al. 2019): the style-based generator with AdaIN, built from ganfast.nn.

Generator: StyleGAN2's MappingNetwork (8 equalized FC layers, lr multiplier 0.01, w average for
truncation, style mixing), then a synthesis network that starts from a learned 4x4 constant and
runs, per resolution, [upsampling 3x3 conv] -> AdaIN + noise -> 3x3 conv -> AdaIN + noise, with
a 1x1 ToRGB at the end (the fully grown network; no progressive growing). Every "AdaIN + noise"
is the fused ganfast.nn.AdaINNoise (noise, bias, lrelu, instance norm, style scale and shift in
one kernel). One w per AdaIN: num_ws = 2 * (log2(R) - 1), 18 at 1024x1024.

Upsampling: v1 upsamples by nearest neighbour, convolves, then blurs with [1, 2, 1]. Nearest
upsampling is zero insertion followed by the box filter [1, 1]; the chain is linear and
shift-invariant, so it equals zero insertion, the [1, 1] * [1, 2, 1] = [1, 3, 3, 1] filter and the
convolution: what EqualizedConv2d(up=2) computes (as a transposed convolution). Only the border
handling differs from v1 (one pixel of the blur's padding).

Discriminator: StyleGAN2's discriminator with architecture='orig' (no residual skips), which is
v1's (ProGAN's) discriminator at full resolution: fromRGB, per resolution 3x3 conv and blurred
3x3 downsampling conv, minibatch stddev, 3x3 conv, two FC layers; projection with labels.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from ganfast.models.registry import register_preset
from ganfast.models.stylegan2 import (StyleBasedGenerator, StyleGAN2Discriminator, _check_resolution, at_least_fp32,
                                      channels_per_resolution)
from ganfast.nn.adain_noise import NOISE_MODES, AdaINNoise
from ganfast.nn.equalized import EqualizedConv2d


class StyleGANSynthesisBlock(nn.Module):
    """One resolution: (const | 3x3 conv up 2), AdaIN + noise, 3x3 conv, AdaIN + noise."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, noise_mode: str,
                 resample_filter: Sequence[float]):
        super().__init__()
        self.resolution = resolution
        if in_channels == 0:
            self.const = nn.Parameter(torch.ones(out_channels, resolution, resolution))
            self.conv0 = None
        else:
            self.const = None
            self.conv0 = EqualizedConv2d(in_channels, out_channels, 3, bias=False, up=2, resample_filter=resample_filter)
        self.adain0 = AdaINNoise(out_channels, w_dim, resolution, noise_mode=noise_mode)
        self.conv1 = EqualizedConv2d(out_channels, out_channels, 3, bias=False)
        self.adain1 = AdaINNoise(out_channels, w_dim, resolution, noise_mode=noise_mode)

    def forward(self, x: Optional[torch.Tensor], ws: torch.Tensor, noise_mode: Optional[str]) -> torch.Tensor:
        # ws: [N, 2, w_dim]
        if self.const is not None:
            x = self.const.to(ws.dtype).unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
        else:
            x = self.conv0(x)
        x = self.adain0(x, ws[:, 0], noise_mode=noise_mode)
        return self.adain1(self.conv1(x), ws[:, 1], noise_mode=noise_mode)


class StyleGANSynthesis(nn.Module):
    """ws [N, num_ws, w_dim] -> images [N, img_channels, R, R]."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int = 16384,
                 channel_max: int = 512, noise_mode: str = "random", resample_filter: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        _check_resolution("StyleGANSynthesis", img_resolution)
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"StyleGANSynthesis: noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        channels = channels_per_resolution(img_resolution, channel_base, channel_max)
        self.blocks = nn.ModuleList([StyleGANSynthesisBlock(channels[res // 2] if res > 4 else 0, channels[res], w_dim,
                                                            res, noise_mode, resample_filter) for res in channels])
        self.torgb = EqualizedConv2d(channels[img_resolution], img_channels, 1)
        self.num_ws = 2 * len(self.blocks)

    def forward(self, ws: torch.Tensor, noise_mode: Optional[str] = None) -> torch.Tensor:
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"StyleGANSynthesis: ws must be [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        x = None
        ws = at_least_fp32(ws)
        for i, block in enumerate(self.blocks):
            x = block(x, ws[:, 2 * i:2 * i + 2], noise_mode)
        return self.torgb(x)


class StyleGANGenerator(StyleBasedGenerator):
    """StyleGAN (v1)'s generator: the mapping network and the AdaIN synthesis network."""

    def __init__(self, z_dim: int = 512, c_dim: int = 0, w_dim: int = 512, img_resolution: int = 256,
                 img_channels: int = 3, channel_base: int = 16384, channel_max: int = 512, mapping_layers: int = 8,
                 mapping_lr_multiplier: float = 0.01, w_avg_beta: float = 0.995, style_mixing_prob: float = 0.0,
                 noise_mode: str = "random", resample_filter: Sequence[float] = (1, 3, 3, 1)):
        synthesis = StyleGANSynthesis(w_dim, img_resolution, img_channels, channel_base, channel_max, noise_mode,
                                      resample_filter)
        super().__init__(synthesis, z_dim, c_dim, w_dim, mapping_layers, mapping_lr_multiplier, w_avg_beta,
                         style_mixing_prob)


def build_stylegan(resolution: int = 256, z_dim: int = 512, w_dim: int = 512, c_dim: int = 0, img_channels: int = 3,
                   channel_base: int = 16384, channel_max: int = 512, mapping_layers: int = 8,
                   style_mixing_prob: float = 0.9, mbstd_group_size: int = 4,
                   noise_mode: str = "random") -> tuple[StyleGANGenerator, StyleGAN2Discriminator]:
    G = StyleGANGenerator(z_dim, c_dim, w_dim, resolution, img_channels, channel_base, channel_max, mapping_layers,
                          style_mixing_prob=style_mixing_prob, noise_mode=noise_mode)
    D = StyleGAN2Discriminator(c_dim, resolution, img_channels, "orig", channel_base, channel_max,
                               mbstd_group_size=mbstd_group_size)
    return G, D


register_preset("stylegan-256", "stylegan", build_stylegan, resolution=256,
                description="StyleGAN (v1) at 256x256 with v1's widths (fmap_base 8192: 16384 / res, max 512)",
                published="StyleGAN paper: G 26.2M at 1024x1024 (no figure at 256; build resolution=1024 to compare)")
register_preset("stylegan-1024", "stylegan", build_stylegan, resolution=1024,
                description="StyleGAN (v1) at 1024x1024 (FFHQ)",
                published="StyleGAN paper: style-based G 26.2M (traditional G 23.1M); D as ProGAN's")
