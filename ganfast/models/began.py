"""BEGAN's autoencoder discriminator (Berthelot, Schumm & Metz 2017).

NOTE: unlike every other ganfast D, these return a reconstruction, not logits:
    BEGANDiscriminator(img [N, C, R, R], c=None) -> reconstruction [N, C, R, R]
    BEGANDiscriminatorMLP(x [N, dim], c=None)    -> reconstruction [N, dim]
so they pair with ganfast.training.losses.BEGANLoss (the L1 reconstruction error is the score),
not with d_loss / g_loss. Both are unconditional; no preset is registered.

Layout (the paper's figure 1, 3x3 convolutions and ELUs throughout):
    encoder  conv -> per resolution R, R/2, ..., 8: two convs at width hidden * (level + 1), then a
             stride-2 conv to the next width (none after 8x8) -> flatten -> Linear -> h [N, embed_dim]
    decoder  h -> Linear -> [N, hidden, 8, 8] -> per resolution 8, ..., R: two convs at width hidden,
             then 2x nearest-neighbour upsampling (none after R) -> conv to C channels (no activation)
The embedding and the decoder's first Linear are linear (no activation), as in the paper. Each
ELU is ganfast.nn.BiasAct (ganfast.ops.bias_act, act='elu', gain 1) fused with the bias of the
bias-free layer before it, so set_backend(D, "reference") reaches every activation.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ganfast.models.common import check_images, labels_to_onehot
from ganfast.models.dcgan import check_positive_int
from ganfast.nn.bias_act import BiasAct

__all__ = ["BEGANDiscriminator", "BEGANDiscriminatorMLP"]

BOTTLENECK_RESOLUTION = 8     # the encoder's last map and the decoder's first (the paper's 8x8)


def conv_elu(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    """3x3 convolution (padding 1) then bias + ELU fused: [N, in, r, r] -> [N, out, r / stride, r / stride]."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
                         BiasAct(out_channels, act="elu", gain=1.0))


def linear_elu(in_features: int, out_features: int) -> nn.Sequential:
    """Linear then bias + ELU fused: [N, in] -> [N, out]."""
    return nn.Sequential(nn.Linear(in_features, out_features, bias=False),
                         BiasAct(out_features, act="elu", gain=1.0))


def _check_resolution(who: str, resolution) -> int:
    if (isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < BOTTLENECK_RESOLUTION
            or resolution & (resolution - 1)):
        raise ValueError(f"{who}: img_resolution must be a power of two >= {BOTTLENECK_RESOLUTION}, got {resolution!r}")
    return resolution


class BEGANDiscriminator(nn.Module):
    """D(img [N, img_channels, R, R], c=None) -> reconstruction [N, img_channels, R, R] (not logits).

    encode(img) -> h [N, embed_dim]; decode(h) -> reconstruction. R: a power of two >= 8.
    """

    c_dim = 0

    def __init__(self, img_resolution: int, img_channels: int, hidden: int = 64, embed_dim: int = 64):
        super().__init__()
        who = type(self).__name__
        self.img_resolution = _check_resolution(who, img_resolution)
        self.img_channels = check_positive_int(who, "img_channels", img_channels)
        self.hidden = check_positive_int(who, "hidden", hidden)
        self.embed_dim = check_positive_int(who, "embed_dim", embed_dim)
        num_levels = (img_resolution // BOTTLENECK_RESOLUTION).bit_length()     # R, R/2, ..., 8
        self.bottleneck_channels = hidden * num_levels

        encoder = [conv_elu(img_channels, hidden)]
        for level in range(num_levels):
            width = hidden * (level + 1)
            encoder += [conv_elu(width, width), conv_elu(width, width)]
            if level < num_levels - 1:
                encoder.append(conv_elu(width, width + hidden, stride=2))      # halve; widen by `hidden`
        self.encoder = nn.Sequential(*encoder)
        bottleneck = BOTTLENECK_RESOLUTION ** 2
        self.embed = nn.Linear(self.bottleneck_channels * bottleneck, embed_dim)
        self.unembed = nn.Linear(embed_dim, hidden * bottleneck)

        decoder = []
        for level in range(num_levels):
            decoder += [conv_elu(hidden, hidden), conv_elu(hidden, hidden)]
            if level < num_levels - 1:
                decoder.append(nn.Upsample(scale_factor=2, mode="nearest"))
        decoder.append(nn.Conv2d(hidden, img_channels, 3, 1, 1))
        self.decoder = nn.Sequential(*decoder)

    def encode(self, img: torch.Tensor) -> torch.Tensor:
        """[N, img_channels, R, R] -> h [N, embed_dim]."""
        check_images(type(self).__name__, img, self.img_channels, self.img_resolution)
        return self.embed(self.encoder(img).flatten(1))

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        """h [N, embed_dim] -> [N, img_channels, R, R]."""
        x = self.unembed(h).view(h.shape[0], self.hidden, BOTTLENECK_RESOLUTION, BOTTLENECK_RESOLUTION)
        return self.decoder(x)

    def forward(self, img: torch.Tensor, c: Optional[torch.Tensor] = None) -> torch.Tensor:
        labels_to_onehot(type(self).__name__, c, self.c_dim, img.shape[0], img.dtype)   # refuses labels
        return self.decode(self.encode(img))

    def extra_repr(self) -> str:
        return (f"img_resolution={self.img_resolution}, img_channels={self.img_channels}, hidden={self.hidden}, "
                f"embed_dim={self.embed_dim}")


class BEGANDiscriminatorMLP(nn.Module):
    """The same autoencoder for points: D(x [N, dim], c=None) -> reconstruction [N, dim].

    encoder: two Linear + ELU layers of width `hidden`, then a Linear to h [N, embed_dim];
    decoder: the mirror image, ending in a Linear to dim (no activation). For 2-D toy data (rings,
    grids of Gaussians).
    """

    c_dim = 0

    def __init__(self, dim: int, hidden: int = 128, embed_dim: int = 16):
        super().__init__()
        who = type(self).__name__
        self.dim = check_positive_int(who, "dim", dim)
        self.hidden = check_positive_int(who, "hidden", hidden)
        self.embed_dim = check_positive_int(who, "embed_dim", embed_dim)
        self.encoder = nn.Sequential(linear_elu(dim, hidden), linear_elu(hidden, hidden), nn.Linear(hidden, embed_dim))
        self.decoder = nn.Sequential(linear_elu(embed_dim, hidden), linear_elu(hidden, hidden), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, c: Optional[torch.Tensor] = None) -> torch.Tensor:
        who = type(self).__name__
        if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != self.dim:
            got = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{who}: x must be [N, {self.dim}], got {got}")
        labels_to_onehot(who, c, self.c_dim, x.shape[0], x.dtype)                  # refuses labels
        return self.decoder(self.encoder(x))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, hidden={self.hidden}, embed_dim={self.embed_dim}"
