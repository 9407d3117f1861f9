"""CycleGAN (Zhu, Park, Isola & Efros 2017): two ResNet generators and two PatchGANs, unpaired.

    G.G_AB, G.G_BA: ResnetGenerator;  G(x, direction="AB" | "BA") -> translated image in (-1, 1)
    D.D_A, D.D_B: PatchDiscriminator;  D(x, domain="A" | "B") -> patch logits [N, 1, h, w]
    (G.img2img == "unpaired"; D_A judges domain-A images.)

ResnetGenerator (the reference's resnet_9blocks at 256 px, resnet_6blocks at 128 px):
    reflect-pad 3, conv7x7 (in -> ngf), norm, ReLU
    2 x [conv3x3 s2 p1, norm, ReLU]                  ngf -> 2 ngf -> 4 ngf
    n_blocks x ResnetBlock(4 ngf)                    x + [pad, conv3x3, norm, ReLU, (Dropout), pad, conv3x3, norm]
    2 x [convT3x3 s2 p1 output_padding 1, norm, ReLU]   4 ngf -> 2 ngf -> ngf
    reflect-pad 3, conv7x7 (ngf -> out, bias), tanh
CycleGAN uses InstanceNorm2d(affine=False, track_running_stats=False), so its convs have biases;
with norm="batch" they are bias-free. resnet_9blocks 3 -> 3 at ngf 64: 11,378,179 parameters.
Reflection padding is the conv's padding_mode="reflect" (the same values as a ReflectionPad2d
before an unpadded conv). The PatchGAN at n_layers=3 with instance norm and 3 input channels has
2,764,737 parameters.

Fused ops: conv + norm + ReLU is the conv then ganfast.nn.BatchNormAct2d (batch norm with the
ReLU fused) or, for instance norm, ganfast.models.img2img_layers.NormAct2d (plain torch: no
ganfast op was faster, see NormAct2d); the output conv's bias + tanh is ganfast.nn.BiasAct
(ganfast.ops.bias_act). D: see PatchDiscriminator (conv bias + LReLU as BiasAct; norm + LReLU
as NormAct2d / BatchNormAct2d); sn=True spectrally normalizes D's convs (ganfast.nn.SNConv2d).
"""
from __future__ import annotations

import torch
from torch import nn

from ganfast.models.common import check_images
from ganfast.models.dcgan import check_positive_int
from ganfast.models.img2img_layers import (PatchDiscriminator, ResnetBlock, TwoDomainDiscriminator,
                                           TwoDomainGenerator, bias_activation, check_bool, check_nonneg_int,
                                           check_norm, conv_norm_act, init_normal)
from ganfast.models.registry import register_preset

__all__ = ["ResnetGenerator", "CycleGANGenerator", "build_cyclegan"]

N_DOWNSAMPLING = 2   # the reference's two stride-2 convs (a 4x smaller map in the residual blocks)


class ResnetGenerator(nn.Module):
    """x [N, in_channels, H, W] -> [N, out_channels, H, W] in (-1, 1); H, W multiples of 4."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3, ngf: int = 64, n_blocks: int = 9,
                 norm: str = "instance", dropout: bool = False):
        super().__init__()
        who = type(self).__name__
        self.in_channels = check_positive_int(who, "in_channels", in_channels)
        self.out_channels = check_positive_int(who, "out_channels", out_channels)
        self.ngf = check_positive_int(who, "ngf", ngf)
        self.n_blocks = check_nonneg_int(who, "n_blocks", n_blocks)
        self.norm = check_norm(who, norm, ("batch", "instance"))
        self.dropout = check_bool(who, "dropout", dropout)
        layers = conv_norm_act(in_channels, ngf, 7, 1, 3, norm, "relu", padding_mode="reflect")
        for i in range(N_DOWNSAMPLING):
            layers += conv_norm_act(ngf * 2 ** i, ngf * 2 ** (i + 1), 3, 2, 1, norm, "relu")
        width = ngf * 2 ** N_DOWNSAMPLING
        layers += [ResnetBlock(width, norm, dropout) for _ in range(n_blocks)]
        for i in range(N_DOWNSAMPLING, 0, -1):
            layers += conv_norm_act(ngf * 2 ** i, ngf * 2 ** (i - 1), 3, 2, 1, norm, "relu", transposed=True,
                                    output_padding=1)
        layers += [nn.Conv2d(ngf, out_channels, 7, 1, 3, bias=False, padding_mode="reflect"),
                   bias_activation(out_channels, "tanh", bias=True)]
        self.net = nn.Sequential(*layers)
        init_normal(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, ngf={self.ngf}, "
                f"n_blocks={self.n_blocks}, norm={self.norm!r}, dropout={self.dropout}")


class CycleGANGenerator(TwoDomainGenerator):
    """.G_AB (A -> B) and .G_BA (B -> A); G(x, direction="AB") -> translated image [N, C, R, R]."""

    def __init__(self, resolution: int = 256, channels_A: int = 3, channels_B: int = 3, ngf: int = 64,
                 n_blocks: int = 9, norm: str = "instance", dropout: bool = False):
        super().__init__("unpaired", resolution, channels_A, channels_B)
        if resolution % 2 ** N_DOWNSAMPLING:
            raise ValueError(f"{type(self).__name__}: resolution must be a multiple of {2 ** N_DOWNSAMPLING}, "
                             f"got {resolution}")
        self.G_AB = ResnetGenerator(channels_A, channels_B, ngf, n_blocks, norm, dropout)
        self.G_BA = ResnetGenerator(channels_B, channels_A, ngf, n_blocks, norm, dropout)

    def translate(self, x: torch.Tensor, direction: str) -> torch.Tensor:
        return (self.G_AB if direction == "AB" else self.G_BA)(x)

    def extra_repr(self) -> str:
        return f"img_resolution={self.img_resolution}, channels_A={self.channels_A}, channels_B={self.channels_B}"


def build_cyclegan(resolution: int = 256, channels_A: int = 3, channels_B: int = 3, ngf: int = 64, ndf: int = 64,
                   n_blocks: int = 9, d_layers: int = 3, norm: str = "instance", dropout: bool = False,
                   sn: bool = False) -> tuple[nn.Module, nn.Module]:
    """(G, D) of CycleGAN: G.G_AB, G.G_BA (ResNet generators with n_blocks residual blocks) and
    D.D_A, D.D_B (PatchGANs with d_layers strided layers). norm applies to G and D."""
    who = "build_cyclegan"
    check_norm(who, norm, ("batch", "instance"))
    check_positive_int(who, "d_layers", d_layers)
    check_bool(who, "sn", sn)
    G = CycleGANGenerator(resolution, channels_A, channels_B, ngf, n_blocks, norm, dropout)
    D = TwoDomainDiscriminator(PatchDiscriminator(channels_A, ndf, d_layers, "patch", norm, sn),
                               PatchDiscriminator(channels_B, ndf, d_layers, "patch", norm, sn))
    return G, D


register_preset(
    "cyclegan-256", "cyclegan", build_cyclegan,
    description="CycleGAN at 256x256 RGB: two resnet_9blocks generators (ngf 64, instance norm) and two 70x70 "
                "PatchGANs (3 layers, ndf 64); G_AB and G_BA 11,378,179 each, D_A and D_B 2,764,737 each",
    published="Zhu et al. 2017 / the reference CycleGAN code's printout: G (resnet_9blocks) 11.378 M, "
              "D (basic, instance norm) 2.765 M per network; equal here",
    resolution=256, channels_A=3, channels_B=3, ngf=64, ndf=64, n_blocks=9, d_layers=3, norm="instance",
    dropout=False, sn=False)

register_preset(
    "cyclegan-32", "cyclegan", build_cyclegan,
    description="CycleGAN at 32x32 grayscale (Fashion-MNIST class pairs, 'fmnist:<a>-<b>'): ResNet generators "
                "with ngf 32 and 3 blocks at 8x8, 2-layer PatchGANs (ndf 32, 34 px field, 6x6 logits), instance norm; "
                "G_AB, G_BA 1,073,281 each, D_A, D_B 166,625 each; a batch-16 training step (both directions, "
                "cycle passes, both D) ~0.27 s at 2 threads",
    published="none: a scaled-down cyclegan-256 (same builder) sized for a fast CPU run",
    resolution=32, channels_A=1, channels_B=1, ngf=32, ndf=32, n_blocks=3, d_layers=2, norm="instance",
    dropout=False, sn=False)
