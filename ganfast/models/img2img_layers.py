"""Building blocks shared by the image-to-image families (pix2pix, CycleGAN, UNIT).

  conv_norm_act(...)       a convolution followed by a normalization and an activation, with the
                           convolution's bias placed where a fused op can absorb it (see below)
  NormAct2d                instance norm (no affine, no running statistics) + activation
  ResnetBlock              x + [conv3x3, norm, ReLU, (dropout), conv3x3, norm]   (CycleGAN, UNIT)
  PatchDiscriminator       PatchGAN (Isola et al. 2017): "patch" (n_layers strided 4x4 convs, a
                           70x70 receptive field at n_layers=3), "pixel" (1x1 convs, a 1x1 field)
                           and "image" (strided convs down to one logit for the whole image)
  TwoDomainDiscriminator   .D_A, .D_B and D(x, domain) (CycleGAN, UNIT)
  init_normal / init_kaiming   the reference initializations (spectral norms handled)

Normalizations: norm="batch" (torch's BatchNorm2d: affine, running statistics), "instance"
(InstanceNorm2d(affine=False, track_running_stats=False), CycleGAN's choice) or "none" (D only).
Convolutions followed by a norm have a bias exactly when the norm is not batch norm, as in the
reference implementations, so parameter counts equal theirs (a bias before an affine-free
instance norm is cancelled by it, but it is a parameter all the same).

Fused ops (each replaces an exact plain-torch sequence; the parameters are the same tensors with
the same shapes, only their owner module differs):
  - conv -> BatchNorm2d -> ReLU / LeakyReLU(0.2): the conv (bias-free) then
    ganfast.nn.BatchNormAct2d (ganfast.ops.conditional_batch_norm with ReLU fused; LeakyReLU as a
    ganfast.ops.bias_act after it);
  - conv (bias) -> LeakyReLU / ReLU / tanh with no norm: a bias-free conv, then ganfast.nn.BiasAct
    (ganfast.ops.bias_act: bias + activation in one pass, gain 1.0, not bias_act's sqrt(2) default);
  - conv (bias) -> InstanceNorm2d -> act: the conv keeps its bias, then NormAct2d, which is plain
    torch (instance_norm, relu / leaky_relu): no ganfast op was faster here (see NormAct2d);
  - an activation with no bias before it (the U-Net's outermost LReLU and innermost ReLU with
    batch norm) is torch's nn.ReLU / nn.LeakyReLU: bias_act without a bias fuses nothing,
    and measured at one thread, batch 16, it was 7-30% slower than torch's relu at 8x8-32x32 maps.
set_backend(model, "reference") turns every one of them into plain PyTorch.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ganfast.models.common import check_images
from ganfast.models.dcgan import check_positive_int
from ganfast.nn.batch_norm_act import BatchNormAct2d
from ganfast.nn.bias_act import BiasAct
from ganfast.nn.spectral_norm import SNConv2d, reconverge_spectral_norms

__all__ = ["NORMS", "LRELU_SLOPE", "INIT_STD", "check_norm", "check_choice", "check_nonneg_int", "check_bool",
           "check_domain", "check_direction", "conv2d", "conv_norm_act", "NormAct2d", "ResnetBlock",
           "PatchDiscriminator", "TwoDomainDiscriminator", "TwoDomainGenerator", "receptive_field",
           "init_normal", "init_kaiming", "D_KINDS"]

NORMS = ("batch", "instance", "none")
D_KINDS = ("patch", "pixel", "image")
ACTS = ("linear", "relu", "lrelu")
LRELU_SLOPE = 0.2      # every LeakyReLU of the reference networks
INIT_STD = 0.02        # pix2pix / CycleGAN init: N(0, 0.02) weights, BN gamma N(1, 0.02)
DOMAINS = ("A", "B")
DIRECTIONS = ("AB", "BA")


# ---------------------------------------------------------------- argument checks

def check_choice(who: str, name: str, value, choices: tuple) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{who}: {name} must be one of {choices}, got {value!r}")
    return value


def check_norm(who: str, norm, allowed: tuple = NORMS, name: str = "norm") -> str:
    return check_choice(who, name, norm, allowed)


def check_nonneg_int(who: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{who}: {name} must be a non-negative int, got {value!r}")
    return value


def check_bool(who: str, name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{who}: {name} must be True or False, got {value!r}")
    return value


def check_domain(who: str, domain) -> str:
    return check_choice(who, "domain", domain, DOMAINS)


def check_direction(who: str, direction) -> str:
    return check_choice(who, "direction", direction, DIRECTIONS)


def check_channels(who: str, x: torch.Tensor, channels: int, name: str = "x") -> None:
    """x must be a floating [N, channels, H, W] tensor."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != channels or not x.is_floating_point():
        got = f"{list(x.shape)} {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{who}: {name} must be a floating [N, {channels}, H, W] tensor, got {got}")


# ---------------------------------------------------------------- layers

class NormAct2d(nn.Module):
    """Instance norm (per sample and channel over H, W; no affine, no running statistics:
    torch's InstanceNorm2d(affine=False, track_running_stats=False), eps 1e-5) followed by act in
    {'linear', 'relu', 'lrelu'} (slope 0.2, gain 1). x: [N, C, H, W] -> [N, C, H, W]; H * W > 1.

    Plain torch: instance_norm, then relu / leaky_relu. ganfast.ops.adain_noise (act='linear',
    unit scale, zero shift, the conv bias fused) computes the same instance norm. Measured at one
    thread on this project's 2-core CPU, batch 16, forward + backward with the ReLU, adain_noise vs
    torch: 2.2 vs 2.5 ms at [32, 32x32], but 1.24 vs 1.02 ms at [64, 16x16],
    0.67 vs 0.54 ms at [128, 8x8] and 1.15 vs 0.98 ms at [256, 8x8] (its forward alone is about 2x
    faster). Most instance norms of these generators run at 8x8 and 16x16 (CycleGAN's and UNIT's
    residual blocks), so torch's instance_norm is used; and no ganfast op fuses a norm followed
    by an activation without a per-sample affine, so the activation is torch's too.
    """

    def __init__(self, num_features: int, act: str = "relu", eps: float = 1e-5):
        super().__init__()
        self.num_features = check_positive_int("NormAct2d", "num_features", num_features)
        self.act = check_choice("NormAct2d", "act", act, ACTS)
        self.eps = float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.instance_norm(x, eps=self.eps)
        if self.act == "relu":
            return F.relu(y)
        return F.leaky_relu(y, LRELU_SLOPE) if self.act == "lrelu" else y

    def extra_repr(self) -> str:
        return f"{self.num_features}, act={self.act!r}, eps={self.eps}"


def conv2d(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
           bias: bool = True, sn: bool = False, padding_mode: str = "zeros") -> nn.Conv2d:
    """nn.Conv2d, or ganfast.nn.SNConv2d (spectral norm, sigma folded into the output) when sn."""
    cls = SNConv2d if sn else nn.Conv2d
    return cls(in_channels, out_channels, kernel_size, stride, padding, bias=bias, padding_mode=padding_mode)


def conv_norm_act(in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int, norm: str,
                  act: str, sn: bool = False, padding_mode: str = "zeros", transposed: bool = False,
                  output_padding: int = 0) -> list[nn.Module]:
    """[conv, norm + act] with the parameters of the reference's conv(bias = norm != 'batch'),
    norm, act: a bias-free conv + BatchNormAct2d (batch); conv with bias + NormAct2d (instance);
    a bias-free conv + BiasAct (the conv's bias fused with the activation; none).
    transposed: ConvTranspose2d (zero padding only, no spectral norm)."""
    bias_in_conv = norm == "instance"
    if transposed:
        if sn or padding_mode != "zeros":
            raise ValueError("conv_norm_act: a transposed conv takes neither sn nor padding_mode")
        conv = nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride, padding, output_padding,
                                  bias=bias_in_conv)
    else:
        conv = conv2d(in_channels, out_channels, kernel_size, stride, padding, bias_in_conv, sn, padding_mode)
    if norm == "batch":
        return [conv, BatchNormAct2d(out_channels, act=act)]
    if norm == "instance":
        return [conv, NormAct2d(out_channels, act=act)]
    return [conv, bias_activation(out_channels, act, bias=True)]


def bias_activation(channels: int, act: str, bias: bool) -> nn.Module:
    """A conv's bias (when `bias`) and the activation act in {'linear', 'relu', 'lrelu', 'tanh'}
    with the reference's constants (lrelu slope 0.2, gain 1): ganfast.nn.BiasAct (bias and
    activation fused) with a bias, torch's activation module without one (nothing to fuse)."""
    if bias:
        return BiasAct(channels, act=act, bias=True, alpha=LRELU_SLOPE if act == "lrelu" else None, gain=1.0)
    return {"linear": nn.Identity, "relu": nn.ReLU, "lrelu": lambda: nn.LeakyReLU(LRELU_SLOPE),
            "tanh": nn.Tanh}[act]()


class ResnetBlock(nn.Module):
    """x + [conv3x3, norm, ReLU, (Dropout(0.5)), conv3x3, norm](x), reflection padding (CycleGAN's
    ResnetBlock; UNIT's ResBlock is the same without dropout). x: [N, C, H, W] -> same shape."""

    def __init__(self, channels: int, norm: str = "instance", dropout: bool = False, padding_mode: str = "reflect"):
        super().__init__()
        self.channels = check_positive_int("ResnetBlock", "channels", channels)
        check_norm("ResnetBlock", norm, ("batch", "instance"))
        layers = conv_norm_act(channels, channels, 3, 1, 1, norm, "relu", padding_mode=padding_mode)
        if dropout:
            layers.append(nn.Dropout(0.5))
        layers += conv_norm_act(channels, channels, 3, 1, 1, norm, "linear", padding_mode=padding_mode)
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)

    def extra_repr(self) -> str:
        return f"{self.channels}"


# ---------------------------------------------------------------- discriminators

def receptive_field(layers: list[tuple[int, int]]) -> int:
    """The receptive field (px) of one output of a chain of convolutions [(kernel, stride), ...]."""
    rf = 1
    for k, s in reversed(layers):
        rf = (rf - 1) * s + k
    return rf


class PatchDiscriminator(nn.Module):
    """D(img [N, in_channels, H, W]) -> logits [N, 1, h, w], one per image patch (no sigmoid).

    kind 'patch' (PatchGAN, the reference's "basic" D at n_layers=3): conv4x4 s2 (bias) + LReLU;
    n_layers - 1 x [conv4x4 s2, norm, LReLU] (channels ndf * min(2^n, 8)); conv4x4 s1 p1, norm,
    LReLU; conv4x4 s1 p1 -> 1 channel (bias). Receptive field 70 px at n_layers=3 (h = H/8 - 2).
    kind 'pixel' (PixelGAN): conv1x1 (bias) + LReLU, conv1x1 -> 2 ndf, norm, LReLU, conv1x1 -> 1:
    one logit per pixel, receptive field 1.
    kind 'image' (ImageGAN): conv4x4 s2 (bias) + LReLU, then [conv4x4 s2, norm, LReLU] down to
    4x4 (channels capped at 8 ndf), then a 4x4 valid conv -> [N, 1, 1, 1]: one logit for the whole
    image; needs `resolution` (a power of two >= 8); n_layers is not used.
    norm: 'batch' | 'instance' | 'none'; convs followed by a norm have a bias unless it is batch
    norm (the reference's use_bias). sn: every conv spectrally normalized (ganfast.nn.SNConv2d).
    Fused: see the module docstring (BiasAct for conv + LReLU, BatchNormAct2d for BN + LReLU).
    """

    def __init__(self, in_channels: int, ndf: int = 64, n_layers: int = 3, kind: str = "patch",
                 norm: str = "batch", sn: bool = False, resolution: Optional[int] = None):
        super().__init__()
        who = "PatchDiscriminator"
        self.in_channels = check_positive_int(who, "in_channels", in_channels)
        self.ndf = check_positive_int(who, "ndf", ndf)
        self.kind = check_choice(who, "kind", kind, D_KINDS)
        self.norm = check_norm(who, norm)
        self.sn = check_bool(who, "sn", sn)
        self.n_layers = check_positive_int(who, "n_layers", n_layers)
        self.resolution = resolution
        if kind == "image":
            if (isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 8
                    or resolution & (resolution - 1)):
                raise ValueError(f"{who}: kind='image' needs resolution, a power of two >= 8, got {resolution!r}")
        last_bias = True
        if kind == "pixel":
            layers = [conv2d(in_channels, ndf, 1, sn=sn, bias=False), bias_activation(ndf, "lrelu", bias=True)]
            layers += conv_norm_act(ndf, 2 * ndf, 1, 1, 0, norm, "lrelu", sn)
            geometry = [(1, 1)] * 3
            prev, last_bias = 2 * ndf, norm != "batch"     # the reference's PixelDiscriminator: use_bias
            head = conv2d(prev, 1, 1, bias=last_bias, sn=sn)
        else:
            strided = n_layers if kind == "patch" else int(math.log2(resolution)) - 2   # image: down to 4x4
            layers = [conv2d(in_channels, ndf, 4, 2, 1, bias=False, sn=sn), bias_activation(ndf, "lrelu", bias=True)]
            prev = ndf
            for n in range(1, strided):
                cur = ndf * min(2 ** n, 8)
                layers += conv_norm_act(prev, cur, 4, 2, 1, norm, "lrelu", sn)
                prev = cur
            geometry = [(4, 2)] * strided
            if kind == "patch":
                cur = ndf * min(2 ** n_layers, 8)
                layers += conv_norm_act(prev, cur, 4, 1, 1, norm, "lrelu", sn)
                prev = cur
                geometry += [(4, 1), (4, 1)]
                head = conv2d(prev, 1, 4, 1, 1, bias=True, sn=sn)
            else:
                geometry += [(4, 1)]
                head = conv2d(prev, 1, 4, 1, 0, bias=True, sn=sn)
        self.net = nn.Sequential(*layers, head)
        self.receptive_field = receptive_field(geometry)
        init_normal(self)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if self.kind == "image":
            check_images(type(self).__name__, img, self.in_channels, self.resolution)
        else:
            check_channels(type(self).__name__, img, self.in_channels, "img")
        return self.net(img)

    def extra_repr(self) -> str:
        s = f"in_channels={self.in_channels}, ndf={self.ndf}, kind={self.kind!r}, norm={self.norm!r}"
        if self.kind == "patch":
            s += f", n_layers={self.n_layers}"
        return s + f", receptive_field={self.receptive_field}, sn={self.sn}"


class TwoDomainDiscriminator(nn.Module):
    """.D_A (judges domain-A images) and .D_B; D(x, domain="A"|"B") -> that D's logits [N, 1, h, w]."""

    c_dim = 0

    def __init__(self, D_A: nn.Module, D_B: nn.Module):
        super().__init__()
        self.D_A, self.D_B = D_A, D_B

    @property
    def receptive_field(self) -> int:
        return self.D_A.receptive_field

    def forward(self, x: torch.Tensor, domain: str = "A") -> torch.Tensor:
        return (self.D_A if check_domain(type(self).__name__, domain) == "A" else self.D_B)(x)


class TwoDomainGenerator(nn.Module):
    """The shared part of the unpaired generators: channels_A, channels_B, the contract's
    attributes (img_channels: channels_B, the output of the default direction "AB") and the
    direction check. Subclasses define translate(x, direction)."""

    z_dim = 0
    c_dim = 0

    def __init__(self, img2img: str, resolution: int, channels_A: int, channels_B: int):
        super().__init__()
        who = type(self).__name__
        self.img2img = img2img
        self.img_resolution = check_positive_int(who, "resolution", resolution)
        self.channels_A = check_positive_int(who, "channels_A", channels_A)
        self.channels_B = check_positive_int(who, "channels_B", channels_B)
        self.img_channels = channels_B

    def input_channels(self, direction: str) -> int:
        return self.channels_A if check_direction(type(self).__name__, direction) == "AB" else self.channels_B

    def forward(self, x: torch.Tensor, direction: str = "AB") -> torch.Tensor:
        """x [N, channels of the source domain, R, R] -> [N, channels of the target domain, R, R] in (-1, 1)."""
        check_images(type(self).__name__, x, self.input_channels(direction), self.img_resolution)
        return self.translate(x, direction)

    def translate(self, x: torch.Tensor, direction: str) -> torch.Tensor:
        """x (checked) -> its translation; what a subclass defines (CycleGANGenerator, UNITGenerator)."""
        raise NotImplementedError(f"{type(self).__name__}: a TwoDomainGenerator subclass must define "
                                  f"translate(x, direction)")


# ---------------------------------------------------------------- initialization

def _weights(module: nn.Module):
    """(layer, weight tensor to initialize) for every conv / transposed conv / linear layer; a
    spectrally normalized layer's stored (un-normalized) weight."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            params = getattr(m, "parametrizations", None)
            yield m, (params["weight"].original if params is not None and "weight" in params else m.weight)


@torch.no_grad()
def init_normal(module: nn.Module, std: float = INIT_STD) -> nn.Module:
    """The pix2pix / CycleGAN init ("normal", gain 0.02): conv weights N(0, std), biases 0 (also
    BiasAct's), batch-norm gamma N(1, std), beta 0. Spectral norms are re-converged. Returns module."""
    for m, w in _weights(module):
        nn.init.normal_(w, 0.0, std)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, std)
            nn.init.zeros_(m.bias)
        elif isinstance(m, BiasAct) and m.bias is not None:
            nn.init.zeros_(m.bias)
    return reconverge_spectral_norms(module)


@torch.no_grad()
def init_kaiming(module: nn.Module) -> nn.Module:
    """UNIT's generator init ("kaiming"): conv weights kaiming_normal (fan_in, a=0), biases 0.
    Returns module."""
    for m, w in _weights(module):
        nn.init.kaiming_normal_(w, a=0, mode="fan_in")
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    for m in module.modules():
        if isinstance(m, BiasAct) and m.bias is not None:
            nn.init.zeros_(m.bias)
    return reconverge_spectral_norms(module)
