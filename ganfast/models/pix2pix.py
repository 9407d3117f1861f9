"""pix2pix (Isola, Zhu, Zhou & Efros 2017): a U-Net generator and a PatchGAN on (input, output) pairs.

    G(x [N, in_channels, R, R]) -> y [N, out_channels, R, R] in (-1, 1)        (G.img2img == "paired")
    D(x, y) -> patch logits [N, 1, h, w]: a PatchGAN on cat([x, y]) (in_channels + out_channels)

U-Net (the reference's "unet_256" at num_downs=8, R=256, ngf=64): num_downs levels, each halving
the map, widths ngf, 2 ngf, 4 ngf, 8 ngf, 8 ngf, ... (ngf * min(2^i, 8) at level i). As the
reference's recursive skip blocks, from the outermost (level 0) in:
    down_0 = conv4x4 s2 (in -> ngf)
    down_i = LReLU(0.2), conv4x4 s2, norm                     (0 < i < num_downs - 1)
    down_inner = LReLU(0.2), conv4x4 s2                        (no norm)
    up_inner = ReLU, convT4x4 s2, norm;  up_i = ReLU, convT4x4 s2 (2 w_i -> w_{i-1}), norm, [Dropout]
    up_0 = ReLU, convT4x4 s2 (2 ngf -> out, bias), tanh
and every non-outermost block returns cat([x, up(inner(down(x)))]) (its input as the skip).
Dropout(0.5) (dropout=True) follows the up path's norm in the middle blocks whose both widths are
8 ngf (the reference's num_downs - 5 blocks; none when num_downs <= 5). Convs have a bias only with
instance norm, except up_0's. unet_256 with in = out = 3 has 54,413,955 parameters.

Fused ops: the skip features reach the network only through the next block's ReLU (the up path
starts with ReLU on cat([x, up])), and the next down path reads LReLU(x). Since
ReLU(LReLU(x)) == ReLU(x) exactly (LReLU keeps the sign), each down level's norm is fused with the
LReLU (ganfast.nn.BatchNormAct2d, act 'lrelu'; NormAct2d for instance norm) and the skip is
ReLU(that); the up path's norm is fused with the ReLU that the outer block applies to it
(BatchNormAct2d 'relu'; Dropout commutes with ReLU). up_0's bias + tanh is ganfast.nn.BiasAct
(ganfast.ops.bias_act, gain 1), and so are down_0's conv bias + LReLU and down_inner's conv bias +
ReLU with instance norm (with batch norm those convs have no bias: torch's activations). The result equals the
reference's layer sequence (tested in float64 against a plain-torch recursive U-Net).
D: ganfast.models.img2img_layers.PatchDiscriminator (conv + LReLU as BiasAct, BN + LReLU as
BatchNormAct2d); sn=True spectrally normalizes D's convs (ganfast.nn.SNConv2d).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ganfast.models.common import check_images
from ganfast.models.dcgan import check_positive_int
from ganfast.models.img2img_layers import (D_KINDS, PatchDiscriminator, bias_activation, check_bool, check_choice,
                                           check_norm, conv_norm_act, init_normal)
from ganfast.models.registry import register_preset

__all__ = ["UnetGenerator", "Pix2PixDiscriminator", "build_pix2pix", "unet_widths"]


def unet_widths(ngf: int, num_downs: int) -> list[int]:
    """Channels of each level's down-path output, outermost first: ngf * min(2^i, 8)."""
    return [ngf * min(2 ** i, 8) for i in range(num_downs)]


class UnetGenerator(nn.Module):
    """The pix2pix U-Net: x [N, in_channels, R, R] -> [N, out_channels, R, R] in (-1, 1);
    R must be a multiple of 2^num_downs. See the module docstring for the layers and fusions.

    down[i]: level i's down path (its output is LReLU(norm(conv)) for i < num_downs - 1, and
    ReLU(conv) for the innermost); up[i]: level i's up path (ReLU(norm(convT)), tanh at level 0).
    """

    img2img = "paired"
    z_dim = 0
    c_dim = 0

    def __init__(self, in_channels: int = 3, out_channels: int = 3, num_downs: int = 8, ngf: int = 64,
                 norm: str = "batch", dropout: bool = True, resolution: int = 256):
        super().__init__()
        who = type(self).__name__
        self.in_channels = self.in_nc = check_positive_int(who, "in_channels", in_channels)
        self.out_channels = self.img_channels = check_positive_int(who, "out_channels", out_channels)
        self.ngf = check_positive_int(who, "ngf", ngf)
        self.num_downs = check_positive_int(who, "num_downs", num_downs)
        if num_downs < 2:
            raise ValueError(f"{who}: num_downs must be >= 2 (an outermost and an innermost level), got {num_downs}")
        self.img_resolution = check_positive_int(who, "resolution", resolution)
        if resolution % 2 ** num_downs:
            raise ValueError(f"{who}: resolution must be a multiple of 2^num_downs = {2 ** num_downs}, "
                             f"got {resolution}")
        self.norm = check_norm(who, norm, ("batch", "instance"))
        self.dropout = check_bool(who, "dropout", dropout)
        use_bias = norm == "instance"
        w = unet_widths(ngf, num_downs)
        inner = num_downs - 1
        down = [nn.Sequential(nn.Conv2d(in_channels, ngf, 4, 2, 1, bias=False),
                              bias_activation(ngf, "lrelu", bias=use_bias))]
        for i in range(1, inner):
            down.append(nn.Sequential(*conv_norm_act(w[i - 1], w[i], 4, 2, 1, norm, "lrelu")))
        down.append(nn.Sequential(nn.Conv2d(w[inner - 1], w[inner], 4, 2, 1, bias=False),
                                  bias_activation(w[inner], "relu", bias=use_bias)))
        up = [nn.Sequential(nn.ConvTranspose2d(2 * ngf, out_channels, 4, 2, 1, bias=False),
                            bias_activation(out_channels, "tanh", bias=True))]
        for i in range(1, inner + 1):
            c_in = w[i] if i == inner else 2 * w[i]    # the innermost up path has no skip to read
            layers = conv_norm_act(c_in, w[i - 1], 4, 2, 1, norm, "relu", transposed=True)
            if dropout and i < inner and w[i - 1] == w[i] == 8 * ngf:
                layers.append(nn.Dropout(0.5))
            up.append(nn.Sequential(*layers))
        self.down, self.up = nn.ModuleList(down), nn.ModuleList(up)
        init_normal(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(type(self).__name__, x, self.in_channels, self.img_resolution)
        skips = []                                   # LReLU(level i's features), [N, w_i, R / 2^(i+1), ...]
        h = x
        for down in self.down[:-1]:
            h = down(h)
            skips.append(h)
        h = self.up[-1](self.down[-1](h))           # innermost: ReLU(norm(convT(ReLU(conv))))
        for i in range(self.num_downs - 2, -1, -1):
            # ReLU(cat([skip, up])) of the reference, with ReLU(LReLU(s)) == ReLU(s)
            h = self.up[i](torch.cat([F.relu(skips[i]), h], dim=1))
        return h

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, num_downs={self.num_downs}, "
                f"ngf={self.ngf}, norm={self.norm!r}, dropout={self.dropout}, img_resolution={self.img_resolution}")


class Pix2PixDiscriminator(nn.Module):
    """D(x [N, in_channels, H, W], y [N, out_channels, H, W]) -> logits [N, 1, h, w]: a
    PatchDiscriminator (.net) on cat([x, y], dim=1). receptive_field: one logit's field in px."""

    c_dim = 0

    def __init__(self, in_channels: int = 3, out_channels: int = 3, ndf: int = 64, n_layers: int = 3,
                 kind: str = "patch", norm: str = "batch", sn: bool = False, resolution: Optional[int] = None):
        super().__init__()
        who = type(self).__name__
        self.in_channels = check_positive_int(who, "in_channels", in_channels)
        self.out_channels = self.img_channels = check_positive_int(who, "out_channels", out_channels)
        self.img_resolution = resolution
        self.net = PatchDiscriminator(in_channels + out_channels, ndf, n_layers, kind, norm, sn, resolution)
        self.receptive_field = self.net.receptive_field

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor) or x.ndim != 4 or y.ndim != 4 \
                or x.shape[1] != self.in_channels or y.shape[1] != self.out_channels \
                or x.shape[0] != y.shape[0] or x.shape[2:] != y.shape[2:]:
            shapes = [list(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__ for t in (x, y)]
            raise ValueError(f"{type(self).__name__}: x and y must be [N, {self.in_channels}, H, W] and "
                             f"[N, {self.out_channels}, H, W], got {shapes[0]} and {shapes[1]}")
        return self.net(torch.cat([x, y], dim=1))


def build_pix2pix(resolution: int = 256, in_channels: int = 3, out_channels: int = 3, ngf: int = 64, ndf: int = 64,
                  num_downs: Optional[int] = None, d_layers: int = 3, d_kind: str = "patch", norm: str = "batch",
                  dropout: bool = True, sn: bool = False) -> tuple[nn.Module, nn.Module]:
    """(G, D) of pix2pix. num_downs None: log2(resolution), so the innermost map is 1x1 (unet_256
    at 256). d_kind: 'patch' (d_layers strided layers), 'pixel' or 'image'. norm applies to G and D;
    sn: spectral norm on D's convs."""
    who = "build_pix2pix"
    check_positive_int(who, "resolution", resolution)
    if num_downs is None:
        if resolution < 4 or resolution & (resolution - 1):
            raise ValueError(f"{who}: with num_downs=None, resolution must be a power of two >= 4, got {resolution}")
        num_downs = resolution.bit_length() - 1
    check_choice(who, "d_kind", d_kind, D_KINDS)
    check_positive_int(who, "d_layers", d_layers)
    check_bool(who, "sn", sn)
    check_norm(who, norm, ("batch", "instance"))
    G = UnetGenerator(in_channels, out_channels, num_downs, ngf, norm, dropout, resolution)
    D = Pix2PixDiscriminator(in_channels, out_channels, ndf, d_layers, d_kind, norm, sn, resolution)
    return G, D


register_preset(
    "pix2pix-256", "pix2pix", build_pix2pix,
    description="pix2pix at 256x256 RGB -> RGB: U-Net unet_256 (8 levels, ngf 64, batch norm, dropout), "
                "70x70 PatchGAN (3 layers, ndf 64) on the 6-channel (x, y) pair; G 54,413,955, D 2,768,705",
    published="Isola et al. 2017 / the reference pix2pix code's printout: G (unet_256) 54.414 M, "
              "D (basic, 6 input channels) 2.769 M; equal here",
    resolution=256, in_channels=3, out_channels=3, ngf=64, ndf=64, num_downs=8, d_layers=3, d_kind="patch",
    norm="batch", dropout=True, sn=False)

register_preset(
    "pix2pix-32", "pix2pix", build_pix2pix,
    description="pix2pix at 32x32 grayscale (Fashion-MNIST edges -> clothing, 'edges2fmnist'): U-Net of 5 levels "
                "(ngf 32, innermost 1x1, batch norm; no 8 ngf middle level, so no dropout), 2-layer PatchGAN "
                "(ndf 32, 34 px field, 6x6 logits) on the 2-channel pair; G 4,164,929, D 167,329 parameters; "
                "a batch-16 training step (D on real and fake pairs, G with L1) ~0.06 s at 2 threads",
    published="none: a scaled-down pix2pix-256 (same builder) sized for a fast CPU run",
    resolution=32, in_channels=1, out_channels=1, ngf=32, ndf=32, num_downs=5, d_layers=2, d_kind="patch",
    norm="batch", dropout=True, sn=False)
