"""A class-conditional DCGAN with conditional batch norm in G and a spectrally normalized
projection D: the DCGAN layout with the conditioning of SNGAN-projection (Miyato & Koyama 2018)
and the spectral norm of Miyato et al. 2018's "standard CNN" experiments.

    G(z, c): z [N, z_dim] as [N, z_dim, 1, 1] -convT 4x4-> 4x4 -> (convT 4x4 s2 p1 ->)* R/2 ->
             convT s2 -> R; after every inner transposed convolution a ganfast
             ConditionalBatchNorm2d(sn=False) with its ReLU fused (gain = 1 + W_g onehot(c),
             bias = W_b onehot(c): one learned scale and shift per class and channel); the output
             is ganfast BiasAct (a bias, then tanh). Channels as DCGAN's: ngf at R/2, doubling per
             halving.
    D(img, c): (SNConv 4x4 s2 p1 + bias -> LeakyReLU 0.2)* down to 4x4 (ndf at R/2, doubling), no
               batch norm; the [N, C, 4, 4] map h flattened; logit = SNLinear(h) +
               <SNEmbedding(c), h> (the projection term: a class-specific 4x4 filter on the last
               map, its table spectrally normalized as BigGAN's).
    Init: N(0, 0.02) for convolutions, linears and embeddings, zero biases (DCGAN's).

Fused ops: conditional_batch_norm (G's normalization + ReLU), power_iteration (every spectral
norm in D), bias_act (D's bias + LeakyReLU, G's bias + tanh).

The conditioning is per class (c_dim >= 2); labels are int64 [N] class indices or float [N, c_dim]
(soft labels blend the per-class scales). Preset cdcgan-32: 32x32 grayscale, 10 classes
(Fashion-MNIST), the default of `ganfast train` (chosen by measurement, see the README).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ganfast.models.common import check_images, check_latent, labels_to_onehot
from ganfast.models.dcgan import (INIT_STD, LRELU_SLOPE, check_positive_int, check_resolution, stage_channels,
                                  stage_resolutions)
from ganfast.models.registry import register_preset
from ganfast.nn import BatchNormAct2d, BiasAct, ConditionalBatchNorm2d, SNConv2d, SNEmbedding, SNLinear

__all__ = ["CDCGANGenerator", "CDCGANDiscriminator", "build_cdcgan"]


def _check_classes(who: str, c_dim) -> int:
    if isinstance(c_dim, bool) or not isinstance(c_dim, int) or c_dim < 2:
        raise ValueError(f"{who}: c_dim must be an int >= 2 (the number of classes), got {c_dim!r}")
    return c_dim


@torch.no_grad()
def _init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Embedding)):
            # spectrally normalized layers keep their raw weight as `weight_orig` when wrapped the
            # torch way, as `weight` here (ganfast SN folds sigma into the output)
            nn.init.normal_(m.weight, 0.0, INIT_STD)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)


class CDCGANGenerator(nn.Module):
    """G(z [N, z_dim], c) -> images [N, img_channels, R, R] in (-1, 1). c required (int64 [N] or
    float [N, c_dim])."""

    def __init__(self, c_dim: int = 10, z_dim: int = 128, img_resolution: int = 32, img_channels: int = 1,
                 ngf: int = 64):
        super().__init__()
        who = type(self).__name__
        self.c_dim = _check_classes(who, c_dim)
        self.z_dim = check_positive_int(who, "z_dim", z_dim)
        self.img_resolution = check_resolution(who, img_resolution)
        self.img_channels = check_positive_int(who, "img_channels", img_channels)
        self.ngf = check_positive_int(who, "ngf", ngf)
        channels = [stage_channels(ngf, img_resolution, r) for r in stage_resolutions(img_resolution)]
        ins = [z_dim] + channels[:-1]
        self.convs = nn.ModuleList(
            nn.ConvTranspose2d(i, o, 4, 1 if k == 0 else 2, 0 if k == 0 else 1, bias=False)
            for k, (i, o) in enumerate(zip(ins, channels)))
        self.norms = nn.ModuleList(ConditionalBatchNorm2d(o, c_dim, sn=False, act="relu") for o in channels)
        self.to_img = nn.ConvTranspose2d(channels[-1], img_channels, 4, 2, 1, bias=False)
        self.out = BiasAct(img_channels, act="tanh")
        _init(self)
        for norm in self.norms:          # gain = 1 + W_g y and bias = W_b y start at exactly 1 and 0
            nn.init.zeros_(norm.gain.weight)
            nn.init.zeros_(norm.bias.weight)

    def forward(self, z: torch.Tensor, c: Optional[torch.Tensor] = None) -> torch.Tensor:
        who = type(self).__name__
        check_latent(who, z, self.z_dim)
        onehot = labels_to_onehot(who, c, self.c_dim, z.shape[0], z.dtype)        # [N, c_dim]
        x = z[:, :, None, None]
        for conv, norm in zip(self.convs, self.norms):
            x = norm(conv(x), onehot)
        return self.out(self.to_img(x))

    def extra_repr(self) -> str:
        return (f"z_dim={self.z_dim}, c_dim={self.c_dim}, img_resolution={self.img_resolution}, "
                f"img_channels={self.img_channels}, ngf={self.ngf}")


D_NORMS = ("sn", "bn")


class CDCGANDiscriminator(nn.Module):
    """D(img [N, img_channels, R, R], c) -> logits [N]. c required.

    d_norm "sn" (default): spectral norm on every layer, no batch norm. "bn": DCGAN's D instead
    (plain bias-free convolutions, batch norm + LeakyReLU after all but the first, through
    BatchNormAct2d), with a plain linear and embedding for the logit and the projection."""

    def __init__(self, c_dim: int = 10, img_resolution: int = 32, img_channels: int = 1, ndf: int = 64,
                 d_norm: str = "sn"):
        super().__init__()
        who = type(self).__name__
        self.c_dim = _check_classes(who, c_dim)
        self.img_resolution = check_resolution(who, img_resolution)
        self.img_channels = check_positive_int(who, "img_channels", img_channels)
        self.ndf = check_positive_int(who, "ndf", ndf)
        if d_norm not in D_NORMS:
            raise ValueError(f"{who}: d_norm must be one of {D_NORMS}, got {d_norm!r}")
        self.d_norm = d_norm
        channels = [stage_channels(ndf, img_resolution, r) for r in stage_resolutions(img_resolution)[::-1]]
        ins = [img_channels] + channels[:-1]
        features = channels[-1] * 16
        if d_norm == "sn":
            self.convs = nn.ModuleList(SNConv2d(i, o, 4, 2, 1) for i, o in zip(ins, channels))
            self.acts = nn.ModuleList(BiasAct(o, act="lrelu", bias=False, alpha=LRELU_SLOPE, gain=1.0)
                                      for o in channels)
            self.linear = SNLinear(features, 1)
            self.embed = SNEmbedding(c_dim, features)
        else:
            self.convs = nn.ModuleList(nn.Conv2d(i, o, 4, 2, 1, bias=k == 0) for k, (i, o) in enumerate(zip(ins, channels)))
            self.acts = nn.ModuleList([BiasAct(channels[0], act="lrelu", bias=False, alpha=LRELU_SLOPE, gain=1.0)]
                                      + [BatchNormAct2d(o, act="lrelu") for o in channels[1:]])
            self.linear = nn.Linear(features, 1)
            self.embed = nn.Embedding(c_dim, features)
        _init(self)
        for m in self.modules():            # DCGAN's batch-norm init: gamma N(1, 0.02), beta 0
            if isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, INIT_STD)
                nn.init.zeros_(m.bias)

    def forward(self, img: torch.Tensor, c: Optional[torch.Tensor] = None) -> torch.Tensor:
        who = type(self).__name__
        check_images(who, img, self.img_channels, self.img_resolution)
        onehot = labels_to_onehot(who, c, self.c_dim, img.shape[0], img.dtype)    # [N, c_dim]
        h = img
        for conv, act in zip(self.convs, self.acts):
            h = act(conv(h))
        h = h.flatten(1)                                                           # [N, C * 16]
        # projection: the spectrally normalized table's rows picked (or mixed) by the labels
        return self.linear(h).squeeze(1) + ((onehot @ self.embed.weight) * h).sum(dim=1)

    def extra_repr(self) -> str:
        return (f"c_dim={self.c_dim}, img_resolution={self.img_resolution}, img_channels={self.img_channels}, "
                f"ndf={self.ndf}, d_norm={self.d_norm!r}")


def build_cdcgan(resolution: int = 32, img_channels: int = 1, z_dim: int = 128, ngf: int = 64, ndf: int = 64,
                 c_dim: int = 10, d_norm: str = "sn") -> tuple[nn.Module, nn.Module]:
    return (CDCGANGenerator(c_dim, z_dim, resolution, img_channels, ngf),
            CDCGANDiscriminator(c_dim, resolution, img_channels, ndf, d_norm))


register_preset(
    "cdcgan-32", "cdcgan", build_cdcgan,
    description="class-conditional DCGAN at 32x32 grayscale (Fashion-MNIST; img_channels=3 for CIFAR-10): "
                "conditional batch norm in G, spectrally normalized projection D, hinge loss and G EMA; "
                "the default of `ganfast train`; G 1,189,633, D 701,889 parameters",
    published="none: a DCGAN layout with SNGAN-projection's conditioning, made for this engine",
    resolution=32, img_channels=1, z_dim=128, ngf=64, ndf=64, c_dim=10)
