"""DCGAN (Radford, Metz & Chintala 2015): the all-convolutional G/D pair, at any power-of-two resolution.

The paper's architecture rules, as built here:
  - no pooling: D downsamples with stride-2 convolutions, G upsamples with stride-2 transposed
    convolutions (4x4 kernels, padding 1, so each exactly doubles / halves the resolution);
  - batch norm in G and D except G's output layer and D's input layer;
  - no fully connected hidden layers: z [N, z_dim] enters as [N, z_dim, 1, 1] and a 4x4
    transposed convolution (no padding) makes the 4x4 map; D ends in a 4x4 valid convolution;
  - ReLU in G, tanh at its output; LeakyReLU(0.2) in D; D returns logits (no sigmoid: the
    losses take logits);
  - weights N(0, 0.02), batch-norm gamma N(1, 0.02), beta 0.
Every convolution is bias-free (the batch norm after it has its own shift), as in the PyTorch
DCGAN tutorial whose 64x64 model (nz=100, ngf=ndf=64, nc=3) has G 3,576,704 and D 2,765,568
parameters; preset "dcgan-64" is that model, parameter for parameter.

Channel plan for resolution R (a power of two >= 16): a map at resolution r has
base * R / (2 r) channels (base = ngf in G, ndf in D), i.e. `base` at R/2 and doubling at each
halving down to base * R / 8 at 4x4 (ngf * 8 = 512 at R=64, ngf * 4 = 256 at R=32).
    G: [N, z, 1, 1] -convT 4x4 s1 p0-> 4x4 -BN,ReLU-> (convT 4x4 s2 p1 -BN,ReLU->)* R/2 -convT s2-> R -tanh
    D: R -conv 4x4 s2 p1, LReLU-> R/2 -> (conv 4x4 s2 p1 -BN,LReLU->)* 4x4 -conv 4x4 valid-> [N] logits

Fused ops: BatchNormAct2d (below) is torch's BatchNorm2d run through
ganfast.ops.conditional_batch_norm with every sample's gain and shift equal to gamma and beta:
normalize, affine and ReLU in one pass (G); D's LeakyReLU, which that op does not fuse, is a
ganfast.ops.bias_act (gain 1) after it. D's input-layer LeakyReLU and G's output tanh are
ganfast.nn.BiasAct without a bias. set_backend(model, "reference") reaches all of them.

The conditional variants (cGAN, ACGAN, InfoGAN) are in ganfast.models.conditional; building a
dcgan preset with c_dim > 0 gives the label-concatenation cGAN of that layout.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ganfast.models.common import check_images, check_latent, labels_to_onehot
from ganfast.models.registry import register_preset
from ganfast.nn.batch_norm_act import BatchNormAct2d
from ganfast.nn.bias_act import BiasAct

__all__ = ["BatchNormAct2d", "DCGANGenerator", "DCGANDiscriminator", "build_dcgan", "init_dcgan_weights",
           "check_positive_int", "check_resolution", "INIT_STD", "LRELU_SLOPE"]

INIT_STD = 0.02        # the paper's N(0, 0.02) weight init (and BN gamma's spread around 1)
LRELU_SLOPE = 0.2      # D's LeakyReLU slope
MIN_RESOLUTION = 16    # below it G would have no batch-normalized upsampling layer


def check_positive_int(who: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{who}: {name} must be a positive int, got {value!r}")
    return value


def check_resolution(who: str, resolution) -> int:
    if (isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < MIN_RESOLUTION
            or resolution & (resolution - 1)):
        raise ValueError(f"{who}: resolution must be a power of two >= {MIN_RESOLUTION} (e.g. 32, 64), "
                         f"got {resolution!r}")
    return resolution


def stage_channels(base: int, resolution: int, r: int) -> int:
    """Channels of the map at resolution r (4 <= r <= resolution / 2): base at R/2, doubling per halving."""
    return base * resolution // (2 * r)


def stage_resolutions(resolution: int) -> list[int]:
    """The inner map sizes [4, 8, ..., resolution / 2]."""
    return [2 ** k for k in range(2, resolution.bit_length() - 1)]


@torch.no_grad()
def init_dcgan_weights(module: nn.Module) -> nn.Module:
    """The DCGAN init on every layer in `module`: conv / linear weights N(0, 0.02) and biases 0;
    batch-norm gamma N(1, 0.02), beta 0. Returns module."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, INIT_STD)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, INIT_STD)
            nn.init.zeros_(m.bias)
    return module


def generator_layers(in_dim: int, img_resolution: int, img_channels: int, ngf: int) -> nn.Sequential:
    """G's network: [N, in_dim, 1, 1] -> [N, img_channels, R, R] in (-1, 1)."""
    resolutions = stage_resolutions(img_resolution)                       # [4, ..., R/2]
    channels = [stage_channels(ngf, img_resolution, r) for r in resolutions]
    layers = [nn.ConvTranspose2d(in_dim, channels[0], 4, 1, 0, bias=False),  # 1x1 -> 4x4
              BatchNormAct2d(channels[0], act="relu")]
    for c_in, c_out in zip(channels[:-1], channels[1:]):                  # r -> 2r
        layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), BatchNormAct2d(c_out, act="relu")]
    layers += [nn.ConvTranspose2d(channels[-1], img_channels, 4, 2, 1, bias=False),  # R/2 -> R, no BN
               BiasAct(img_channels, act="tanh", bias=False)]
    return nn.Sequential(*layers)


def discriminator_trunk(in_channels: int, img_resolution: int, ndf: int) -> nn.Sequential:
    """D's shared trunk: [N, in_channels, R, R] -> [N, ndf * R / 8, 4, 4] (the heads read it)."""
    resolutions = stage_resolutions(img_resolution)[::-1]                 # [R/2, ..., 4]
    channels = [stage_channels(ndf, img_resolution, r) for r in resolutions]
    layers = [nn.Conv2d(in_channels, channels[0], 4, 2, 1, bias=False),   # R -> R/2, no BN
              BiasAct(channels[0], act="lrelu", bias=False, alpha=LRELU_SLOPE, gain=1.0)]
    for c_in, c_out in zip(channels[:-1], channels[1:]):                  # r -> r/2
        layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), BatchNormAct2d(c_out, act="lrelu")]
    return nn.Sequential(*layers)


def logit_head(in_channels: int, out_features: int, bias: bool) -> nn.Conv2d:
    """A 4x4 valid convolution over the trunk's [N, C, 4, 4] map: [N, out_features, 1, 1]."""
    return nn.Conv2d(in_channels, out_features, 4, 1, 0, bias=bias)


class DCGANGenerator(nn.Module):
    """G(z [N, z_dim], c=None) -> images [N, img_channels, R, R] in (-1, 1). Unconditional.

    appended_dim: for subclasses (ganfast.models.conditional), the width of the vector they
    concatenate to z (one-hot labels, InfoGAN codes); G's first layer takes z_dim + appended_dim.
    """

    c_dim = 0

    def __init__(self, z_dim: int = 100, img_resolution: int = 64, img_channels: int = 3, ngf: int = 64,
                 appended_dim: int = 0):
        super().__init__()
        who = type(self).__name__
        self.z_dim = check_positive_int(who, "z_dim", z_dim)
        self.img_resolution = check_resolution(who, img_resolution)
        self.img_channels = check_positive_int(who, "img_channels", img_channels)
        self.ngf = check_positive_int(who, "ngf", ngf)
        self.net = init_dcgan_weights(generator_layers(z_dim + appended_dim, img_resolution, img_channels, ngf))

    def latent_input(self, z: torch.Tensor, c: Optional[torch.Tensor]) -> torch.Tensor:
        """What the network reads, [N, z_dim + appended_dim]; here z itself (labels are refused)."""
        labels_to_onehot(type(self).__name__, c, self.c_dim, z.shape[0], z.dtype)
        return z

    def synthesize(self, x: torch.Tensor) -> torch.Tensor:
        """[N, z_dim + appended_dim] -> [N, img_channels, R, R]."""
        return self.net(x[:, :, None, None])

    def forward(self, z: torch.Tensor, c: Optional[torch.Tensor] = None) -> torch.Tensor:
        check_latent(type(self).__name__, z, self.z_dim)
        return self.synthesize(self.latent_input(z, c))

    def extra_repr(self) -> str:
        return (f"z_dim={self.z_dim}, c_dim={self.c_dim}, img_resolution={self.img_resolution}, "
                f"img_channels={self.img_channels}, ngf={self.ngf}")


class DCGANDiscriminator(nn.Module):
    """D(img [N, img_channels, R, R], c=None) -> logits [N]. Unconditional.

    features(img, c) -> [N, ndf * R / 8, 4, 4] is the trunk's output, which subclasses'
    auxiliary heads share. appended_channels: for subclasses, the channels they concatenate to
    the image (cGAN's broadcast one-hot labels); the first layer takes img_channels + that.
    """

    c_dim = 0

    def __init__(self, img_resolution: int = 64, img_channels: int = 3, ndf: int = 64, appended_channels: int = 0):
        super().__init__()
        who = type(self).__name__
        self.img_resolution = check_resolution(who, img_resolution)
        self.img_channels = check_positive_int(who, "img_channels", img_channels)
        self.ndf = check_positive_int(who, "ndf", ndf)
        self.trunk = discriminator_trunk(img_channels + appended_channels, img_resolution, ndf)
        self.trunk_channels = stage_channels(ndf, img_resolution, 4)
        self.logit = logit_head(self.trunk_channels, 1, bias=False)
        init_dcgan_weights(self)

    def trunk_input(self, img: torch.Tensor, c: Optional[torch.Tensor]) -> torch.Tensor:
        """What the trunk reads, [N, img_channels + appended_channels, R, R]; here the image (labels refused)."""
        labels_to_onehot(type(self).__name__, c, self.c_dim, img.shape[0], img.dtype)
        return img

    def features(self, img: torch.Tensor, c: Optional[torch.Tensor] = None) -> torch.Tensor:
        check_images(type(self).__name__, img, self.img_channels, self.img_resolution)
        return self.trunk(self.trunk_input(img, c))

    def real_fake_logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.logit(features)[:, 0, 0, 0]                           # [N]

    def forward(self, img: torch.Tensor, c: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.real_fake_logits(self.features(img, c))

    def extra_repr(self) -> str:
        return (f"c_dim={self.c_dim}, img_resolution={self.img_resolution}, img_channels={self.img_channels}, "
                f"ndf={self.ndf}")


def build_dcgan(resolution: int = 64, img_channels: int = 3, z_dim: int = 100, ngf: int = 64, ndf: int = 64,
                c_dim: int = 0) -> tuple[nn.Module, nn.Module]:
    """(G, D) of the DCGAN layout; c_dim > 0 gives the label-concatenation cGAN of the same layout."""
    if c_dim:
        # Imported here: ganfast.models.conditional builds on this module.
        from ganfast.models.conditional import build_cgan
        return build_cgan(resolution=resolution, img_channels=img_channels, z_dim=z_dim, ngf=ngf, ndf=ndf,
                          c_dim=c_dim)
    return (DCGANGenerator(z_dim, resolution, img_channels, ngf),
            DCGANDiscriminator(resolution, img_channels, ndf))


register_preset(
    "dcgan-64", "dcgan", build_dcgan,
    description="DCGAN at 64x64 RGB (CelebA / LSUN-sized): z 100, ngf = ndf = 64, bias-free convolutions; "
                "G 3,576,704, D 2,765,568 parameters",
    published="PyTorch DCGAN tutorial (dcgan_faces_tutorial; nz=100, ngf=ndf=64, nc=3, bias-free convs): "
              "G 3,576,704, D 2,765,568 at 64x64 (the DCGAN paper gives no totals); equal here",
    resolution=64, img_channels=3, z_dim=100, ngf=64, ndf=64, c_dim=0)

register_preset(
    "dcgan-32", "dcgan", build_dcgan,
    description="DCGAN at 32x32 grayscale (MNIST / Fashion-MNIST padded to 32; img_channels=3 for CIFAR-10): "
                "z 100, ngf = ndf = 64, 4x4 maps of 256 channels; G 1,066,880, D 661,248 parameters",
    published="none: the DCGAN paper gives no parameter totals and the tutorial has only the 64x64 model; "
              "this is that model's layout at 32x32 (one stride-2 layer fewer each side)",
    resolution=32, img_channels=1, z_dim=100, ngf=64, ndf=64, c_dim=0)
