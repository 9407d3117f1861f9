"""SRGAN (Ledig et al. 2017): the SRResNet generator, the SRGAN discriminator, and content losses.

Super-resolution by a factor `scale` (a power of two): G maps a low-resolution image to one
`scale` times larger, D tells real high-resolution images from G's outputs.

    G (SRResNet): lr [N, C, R/s, R/s] in [-1, 1] -> hr [N, C, R, R] in (-1, 1)
        conv 9x9 (C -> ngf) + PReLU                                 = head
        n_blocks x residual block: x + [conv 3x3, BN, PReLU, conv 3x3, BN]
        conv 3x3 + BN, plus head (the long skip)
        log2(s) x upsampling block: conv 3x3 (ngf -> 4 ngf), PixelShuffle(2), PReLU
        conv 9x9 (ngf -> C), tanh
    D: hr [N, C, R, R] -> logits [N]
        conv 3x3 (C -> ndf) + LeakyReLU(0.2)                        (no BN)
        7 x conv 3x3 + BN + LeakyReLU(0.2): ndf x (1, 2, 2, 4, 4, 8, 8) channels, strides
            (2, 1, 2, 1, 2, 1, 2): R -> ceil(R / 16) per side
        flatten [N, 8 ndf * ceil(R/16)^2] (the paper flattens, so D is tied to its resolution)
        dense (d_dense) + LeakyReLU(0.2), dense (1): logits; the sigmoid lives in the loss

Ranges: the paper scales HR images to [-1, 1] (hence G's tanh) and LR inputs to [0, 1]; here
LR inputs are in [-1, 1] as well, the range of every ganfast image (and of
ganfast.data's bicubic_downsample). Convolutions followed by a batch norm are bias-free (the
norm's shift makes the bias redundant); the others have a bias. Weights use torch's default
init (the paper does not specify one).

Losses (the training step lives elsewhere): G minimizes content loss + 1e-3 * adversarial loss
(-log D(G(lr)), non-saturating). The paper's content loss "VGG54" is the MSE between VGG19
feature maps phi_5,4 (after the 4th convolution's ReLU, before the 5th max pooling) of the
super-resolved and the real image, with the features rescaled by 1/12.75 (the loss by
1/12.75^2 ~= 0.006) to bring it to the scale of the pixel MSE. `ContentLoss` computes it
("vgg", from a VGG TorchScript file the user supplies, as no VGG weights ship), the pixel MSE
("mse", SRResNet-MSE), or a feature MSE on the shipped Fashion-MNIST classifier ("classifier").

Fused ops: D's batch norms with LeakyReLU are ganfast.nn.BatchNormAct2d(act="lrelu") (torch's
BatchNorm2d parameters and buffers); D's first layer and first dense layer take their bias and
LeakyReLU (gain 1, not bias_act's default sqrt(2)) in one ganfast.nn.BiasAct, after a bias-free
conv / linear; G's batch norms are BatchNormAct2d(act="linear") and its output bias + tanh a
BiasAct. PReLU (a learned slope per channel) is torch's nn.PReLU: no ganfast op computes it.
set_backend(model, "reference") turns every fused layer into plain PyTorch. sn=True puts
spectral normalization (ganfast.nn.SNConv2d / SNLinear) on every D weight, keeping the batch
norms. Parameter counts equal those of the same network in plain torch layers.

Presets: srgan-96 (the paper: 96 px HR crops, 4x, RGB, 16 blocks, 64 filters; G 1,548,547 and
D 23,563,649 parameters; the paper states no totals) and srgan-32 (Fashion-MNIST 16 -> 32 px,
gray, 2x, 8 blocks of 32 filters, D from 32 filters with a 512-unit dense layer; G 200,289 and D
1,697,921 parameters: a training step at batch 16 with the classifier content loss, D's and G's
forward and backward, takes about 0.14 s on 2 CPU threads).
"""
from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from ganfast.models.common import check_images
from ganfast.models.dcgan import check_positive_int
from ganfast.models.registry import register_preset
from ganfast.nn.batch_norm_act import BatchNormAct2d
from ganfast.nn.bias_act import BiasAct
from ganfast.nn.spectral_norm import SNConv2d, SNLinear

__all__ = ["SRResNetGenerator", "SRGANDiscriminator", "ResidualBlock", "UpsampleBlock", "build_srgan",
           "ContentLoss", "CONTENT_KINDS", "VGG_FEATURE_SCALE", "ADVERSARIAL_WEIGHT", "LRELU_SLOPE",
           "discriminator_channels", "discriminator_side"]

LRELU_SLOPE = 0.2            # D's LeakyReLU slope
ADVERSARIAL_WEIGHT = 1e-3    # the paper's weight of the adversarial term in G's loss
VGG_FEATURE_SCALE = 1 / 12.75  # the paper's rescaling of the VGG feature maps
D_CHANNEL_MULTIPLIERS = (1, 2, 2, 4, 4, 8, 8)   # D's seven BN blocks, in units of ndf
D_STRIDES = (2, 1, 2, 1, 2, 1, 2)


def check_scale(who: str, scale) -> int:
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 2 or scale & (scale - 1):
        raise ValueError(f"{who}: scale must be a power of two >= 2 (2, 4, 8, ...), got {scale!r}")
    return scale


def check_sr_resolution(who: str, resolution, scale: int) -> int:
    check_positive_int(who, "resolution", resolution)
    if resolution % scale:
        raise ValueError(f"{who}: resolution (the HR side) must be divisible by scale={scale}, got {resolution}")
    return resolution


def discriminator_channels(ndf: int) -> list[int]:
    """Output channels of D's seven BN blocks."""
    return [ndf * m for m in D_CHANNEL_MULTIPLIERS]


def discriminator_side(resolution: int) -> int:
    """The side of D's last feature map: each stride-2 3x3 conv (padding 1) maps r to ceil(r / 2)."""
    side = resolution
    for stride in D_STRIDES:
        side = (side - 1) // stride + 1
    return side


class ResidualBlock(nn.Module):
    """x + [conv 3x3, BN, PReLU, conv 3x3, BN](x); x: [N, C, H, W] -> [N, C, H, W]."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            BatchNormAct2d(channels, act="linear"),
            nn.PReLU(channels),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            BatchNormAct2d(channels, act="linear"),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class UpsampleBlock(nn.Sequential):
    """conv 3x3 (C -> 4C), PixelShuffle(2), PReLU: [N, C, H, W] -> [N, C, 2H, 2W]."""

    def __init__(self, channels: int):
        super().__init__(nn.Conv2d(channels, 4 * channels, 3, padding=1),
                         nn.PixelShuffle(2),
                         nn.PReLU(channels))


class SRResNetGenerator(nn.Module):
    """G(lr [N, img_channels, lr_resolution, lr_resolution] in [-1, 1]) -> hr [N, img_channels,
    img_resolution, img_resolution] in (-1, 1); img_resolution = scale * lr_resolution.
    The layer plan is in the module docstring."""

    img2img = "sr"
    z_dim = 0
    c_dim = 0

    def __init__(self, img_resolution: int = 96, scale: int = 4, img_channels: int = 3, ngf: int = 64,
                 n_blocks: int = 16):
        super().__init__()
        who = type(self).__name__
        self.scale = check_scale(who, scale)
        self.img_resolution = check_sr_resolution(who, img_resolution, scale)
        self.lr_resolution = img_resolution // scale
        self.img_channels = self.in_channels = check_positive_int(who, "channels", img_channels)
        self.ngf = check_positive_int(who, "ngf", ngf)
        self.n_blocks = check_positive_int(who, "n_blocks", n_blocks)
        self.head = nn.Sequential(nn.Conv2d(img_channels, ngf, 9, padding=4), nn.PReLU(ngf))
        self.body = nn.Sequential(*[ResidualBlock(ngf) for _ in range(n_blocks)],
                                  nn.Conv2d(ngf, ngf, 3, padding=1, bias=False),
                                  BatchNormAct2d(ngf, act="linear"))
        self.upsample = nn.Sequential(*[UpsampleBlock(ngf) for _ in range(scale.bit_length() - 1)])
        self.tail = nn.Sequential(nn.Conv2d(ngf, img_channels, 9, padding=4, bias=False),
                                  BiasAct(img_channels, act="tanh"))

    def forward(self, lr: torch.Tensor) -> torch.Tensor:
        if (not isinstance(lr, torch.Tensor) or lr.ndim != 4 or lr.shape[1] != self.in_channels
                or tuple(lr.shape[2:]) != (self.lr_resolution, self.lr_resolution)):
            got = list(lr.shape) if isinstance(lr, torch.Tensor) else type(lr).__name__
            raise ValueError(f"{type(self).__name__}: lr must be [N, {self.in_channels}, {self.lr_resolution}, "
                             f"{self.lr_resolution}], got {got}")
        head = self.head(lr)                          # [N, ngf, r, r]
        x = self.upsample(head + self.body(head))     # [N, ngf, R, R]
        return self.tail(x)                           # [N, C, R, R]

    def extra_repr(self) -> str:
        return (f"img2img={self.img2img!r}, scale={self.scale}, lr_resolution={self.lr_resolution}, "
                f"img_resolution={self.img_resolution}, img_channels={self.img_channels}, ngf={self.ngf}, "
                f"n_blocks={self.n_blocks}")


class SRGANDiscriminator(nn.Module):
    """D(hr [N, img_channels, R, R]) -> logits [N]. The layer plan is in the module docstring;
    sn=True spectrally normalizes every conv and dense weight."""

    c_dim = 0

    def __init__(self, img_resolution: int = 96, img_channels: int = 3, ndf: int = 64, d_dense: int = 1024,
                 sn: bool = False):
        super().__init__()
        who = type(self).__name__
        self.img_resolution = check_positive_int(who, "resolution", img_resolution)
        self.img_channels = check_positive_int(who, "channels", img_channels)
        self.ndf = check_positive_int(who, "ndf", ndf)
        self.d_dense = check_positive_int(who, "d_dense", d_dense)
        if not isinstance(sn, bool):
            raise ValueError(f"{who}: sn must be a bool, got {sn!r}")
        self.sn = sn
        conv, linear = (SNConv2d, SNLinear) if sn else (nn.Conv2d, nn.Linear)
        layers = [conv(img_channels, ndf, 3, padding=1, bias=False),
                  BiasAct(ndf, act="lrelu", alpha=LRELU_SLOPE, gain=1.0)]
        c_in = ndf
        for c_out, stride in zip(discriminator_channels(ndf), D_STRIDES):
            layers += [conv(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                       BatchNormAct2d(c_out, act="lrelu", alpha=LRELU_SLOPE)]
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.feature_side = discriminator_side(img_resolution)
        self.classifier = nn.Sequential(
            nn.Flatten(),                                                   # [N, 8 ndf * side^2]
            linear(c_in * self.feature_side ** 2, d_dense, bias=False),
            BiasAct(d_dense, act="lrelu", alpha=LRELU_SLOPE, gain=1.0),
            linear(d_dense, 1),
        )

    def forward(self, hr: torch.Tensor) -> torch.Tensor:
        check_images(type(self).__name__, hr, self.img_channels, self.img_resolution)
        return self.classifier(self.features(hr))[:, 0]   # [N]

    def extra_repr(self) -> str:
        return (f"img_resolution={self.img_resolution}, img_channels={self.img_channels}, ndf={self.ndf}, "
                f"d_dense={self.d_dense}, sn={self.sn}, feature_side={self.feature_side}")


def build_srgan(resolution: int = 96, scale: int = 4, channels: int = 3, ngf: int = 64, n_blocks: int = 16,
                ndf: int = 64, d_dense: int = 1024, sn: bool = False) -> tuple[nn.Module, nn.Module]:
    """(G, D) of SRGAN. resolution: the HR side (divisible by scale); scale: a power of two >= 2;
    channels: image channels (G's input and output, D's input)."""
    return (SRResNetGenerator(resolution, scale, channels, ngf, n_blocks),
            SRGANDiscriminator(resolution, channels, ndf, d_dense, sn))


# ---------------------------------------------------------------- content losses

CONTENT_KINDS = ("mse", "classifier", "vgg")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VGG_HELP = ("pass weights=PATH: a TorchScript file whose module maps ImageNet-normalized RGB images "
            "[N, 3, H, W] (torchvision's convention) to a feature map [N, F, h, w], e.g. "
            "torch.jit.script(torchvision.models.vgg19(weights=...).features[:36]).save(PATH) for VGG19's "
            "phi_5,4; see ganfast.models.srgan.ContentLoss")


def classifier_geometry(images: torch.Tensor) -> torch.Tensor:
    """[N, 1 or 3, H, H] in [-1, 1] -> [N, 1, 32, 32]: ganfast.metrics.classifier.prepare_classifier_input's
    mapping (luma, 28 -> 32 padded with -1, other sides resized bilinearly with antialias) without
    its validation, which reads the values on the host (a synchronization in every training step),
    casts to float32 and clamps."""
    # imported here: the ganfast.metrics package pulls in the whole metric stack (numpy, ...),
    # which building a model does not need
    from ganfast.metrics.classifier import INPUT_RESOLUTION
    from ganfast.metrics.images import rgb_to_gray

    x = rgb_to_gray(images)
    side = x.shape[-1]
    if side == 28:
        return F.pad(x, (2, 2, 2, 2), value=-1.0)
    if side != INPUT_RESOLUTION:
        x = F.interpolate(x, size=(INPUT_RESOLUTION, INPUT_RESOLUTION), mode="bilinear", align_corners=False,
                          antialias=True)
    return x


def classifier_feature_extractor(weights: Optional[Union[str, os.PathLike]]) -> nn.Sequential:
    """A private copy of the Fashion-MNIST classifier's trunk up to the third conv block's ReLU:
    [N, 1, 32, 32] in [-1, 1] -> [N, 128, 8, 8]. The deepest map before the last max pooling,
    as VGG's phi_5,4 is, at a resolution that still locates edges (4x4 after the pooling would not)."""
    from ganfast.metrics.classifier import load_fmnist_classifier

    # the loader shares one instance per path (the metrics use it): copy before .to() / .double()
    trunk = copy.deepcopy(load_fmnist_classifier(weights).trunk)
    block3 = trunk[2]                                   # conv, BN, ReLU, max pool
    return nn.Sequential(*trunk[:2], *block3[:3])


def load_vgg_features(weights) -> torch.jit.ScriptModule:
    """The user's TorchScript feature network (see VGG_HELP), loaded on the CPU."""
    if not isinstance(weights, (str, os.PathLike)):
        raise ValueError(f"weights: kind 'vgg' needs the path of a TorchScript file, got {type(weights).__name__}; "
                         f"{VGG_HELP}")
    resolved = Path(weights).expanduser().resolve()
    if not resolved.is_file():
        raise FileNotFoundError(f"weights: no file at {resolved}; {VGG_HELP}")
    try:
        with warnings.catch_warnings():
            # torch marks TorchScript deprecated; it is the one format that carries the network with its weights
            warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*torch.jit.load.*")
            return torch.jit.load(str(resolved), map_location="cpu")
    except RuntimeError as error:
        raise ValueError(f"weights: {resolved} is not a TorchScript file ({error}); {VGG_HELP}") from error


class ContentLoss(nn.Module):
    """SRGAN's content loss: loss = ContentLoss(kind, weights)(sr, hr) -> scalar [].

    sr, hr: [N, C, H, W] of the same shape, images in [-1, 1]; sr is G's output (the gradient
    flows to it), hr the real image (the target: no gradient is taken through it).

    kind:
      "mse":        mean((sr - hr)^2) over every element (SRResNet-MSE). weights: None.
      "classifier": mean((phi(sr) - phi(hr))^2), phi the shipped Fashion-MNIST classifier
                    (ganfast.metrics.classifier) up to its third conv block's ReLU, [N, 128, 8, 8]
                    at its 32x32 input; images go through its preprocessing (RGB -> BT.601 luma,
                    28 px padded, other sides resized to 32). C must be 1 or 3.
                    weights: None (the shipped file) or the path of other classifier weights.
      "vgg":        mean((phi(sr) / 12.75 - phi(hr) / 12.75)^2), the paper's VGG54 loss, phi the
                    module in the TorchScript file `weights` (required; see VGG_HELP). This class
                    maps [-1, 1] to [0, 1] and applies the ImageNet mean / std normalization, so
                    phi receives what torchvision's VGG expects; gray images (C = 1) are repeated
                    to RGB. C must be 1 or 3.

    The feature network is this module's frozen private copy (requires_grad False, always in
    eval mode, whatever .train() says: its batch norms keep their running statistics); it is
    no part of G, so G's parameters and optimizer are untouched. Move it with .to(device);
    .double() makes it compute in float64 (inputs are cast to the network's dtype).
    """

    def __init__(self, kind: str = "mse", weights: Optional[Union[str, os.PathLike]] = None):
        super().__init__()
        if kind not in CONTENT_KINDS:
            raise ValueError(f"kind: expected one of {CONTENT_KINDS}, got {kind!r}")
        self.kind = kind
        self.feature_scale = 1.0
        self.extractor: Optional[nn.Module] = None
        if kind == "mse":
            if weights is not None:
                raise ValueError(f"weights: kind 'mse' takes no weights, got {weights!r}")
        elif kind == "classifier":
            if weights is not None and not isinstance(weights, (str, os.PathLike)):
                raise ValueError(f"weights: kind 'classifier' takes None (the shipped classifier) or a path, "
                                 f"got {type(weights).__name__}")
            try:
                self.extractor = classifier_feature_extractor(weights)
            except FileNotFoundError as error:   # the loader names its argument `path`
                raise FileNotFoundError(f"weights: {str(error).removeprefix('path: ')}") from error
        else:
            if weights is None:
                raise ValueError(f"weights: kind 'vgg' needs weights; {VGG_HELP}")
            self.extractor = load_vgg_features(weights)
            self.feature_scale = VGG_FEATURE_SCALE
            self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        if self.extractor is not None:
            for p in self.extractor.parameters():   # ScriptModules have no requires_grad_()
                p.requires_grad_(False)
            self.extractor.eval()

    def train(self, mode: bool = True) -> "ContentLoss":
        super().train(mode)
        if self.extractor is not None:
            self.extractor.eval()   # frozen: batch norms on their running statistics
        return self

    def _dtype(self, x: torch.Tensor) -> torch.dtype:
        p = next(iter(self.extractor.parameters()), None)
        return x.dtype if p is None else p.dtype

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """The feature map phi(images) times feature_scale ("classifier" / "vgg"): [N, F, h, w]."""
        x = images.to(self._dtype(images))
        if self.kind == "classifier":
            x = classifier_geometry(x)
        else:
            if x.shape[1] == 1:
                x = x.expand(-1, 3, -1, -1)
            x = ((x + 1) * 0.5 - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        phi = self.extractor(x)
        if not isinstance(phi, torch.Tensor) or phi.ndim < 2 or phi.shape[0] != images.shape[0]:
            got = list(phi.shape) if isinstance(phi, torch.Tensor) else type(phi).__name__
            raise ValueError(f"weights: the feature network returned {got} for {images.shape[0]} images, "
                             f"expected a feature map [{images.shape[0]}, F, h, w]")
        return phi * self.feature_scale if self.feature_scale != 1.0 else phi

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        for name, x in (("sr", sr), ("hr", hr)):
            if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
                got = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise ValueError(f"ContentLoss: {name} must be a floating [N, C, H, W] tensor, got {got}")
        if sr.shape != hr.shape:
            raise ValueError(f"ContentLoss: sr and hr must have the same shape, got {list(sr.shape)} and "
                             f"{list(hr.shape)}")
        if self.kind == "mse":
            return F.mse_loss(sr, hr.detach())
        if sr.shape[1] not in (1, 3):
            raise ValueError(f"ContentLoss: sr must have 1 (gray) or 3 (RGB) channels for kind {self.kind!r}, "
                             f"got {sr.shape[1]}")
        with torch.no_grad():
            target = self.features(hr)
        return F.mse_loss(self.features(sr), target)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, feature_scale={self.feature_scale:.6g}"


# ---------------------------------------------------------------- presets

register_preset(
    "srgan-96", "srgan", build_srgan,
    description="SRGAN (Ledig et al. 2017) as published: 24 -> 96 px RGB (4x), SRResNet G with 16 residual "
                "blocks of 64 filters, D 64..512 filters with a 1024-unit dense layer on the flattened 6x6 "
                "map; G 1,548,547, D 23,563,649 parameters",
    published="",
    resolution=96, scale=4, channels=3, ngf=64, n_blocks=16, ndf=64, d_dense=1024, sn=False)

register_preset(
    "srgan-32", "srgan", build_srgan,
    description="SRGAN scaled down for Fashion-MNIST: 16 -> 32 px gray (2x), SRResNet G with 8 residual blocks "
                "of 32 filters, D 32..256 filters with a 512-unit dense layer on the flattened 2x2 map "
                "(a training step at batch 16, classifier content loss included: ~0.14 s on 2 CPU threads); "
                "G 200,289, D 1,697,921 parameters",
    published="",
    resolution=32, scale=2, channels=1, ngf=32, n_blocks=8, ndf=32, d_dense=512, sn=False)
