"""An independent, functional plain-torch model of the rosinality StyleGAN2 port's state-dict
layout and forward (stylegan2-pytorch, model.py), written from its documented behaviour to test
ganfast.models.convert. Nothing here uses ganfast.

    sd = make_generator_state_dict(32, style_dim=64, n_mlp=2, channel_multiplier=1, channel_divisor=16)
    img = generate(sd, latents)            # latents [N, n_latent, style_dim] (the port's w+)
    img = generate(sd, mapping(sd, z))     # z through the port's style network
    logits = discriminate(sd_d, img)       # [N, 1]
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

BLUR_TAPS = (1, 3, 3, 1)
LR_MLP = 0.01


def rosinality_channels(channel_multiplier: int = 2, channel_divisor: int = 1) -> dict[int, int]:
    """The port's widths {res: channels}, optionally divided by channel_divisor (small tests)."""
    cm = channel_multiplier
    widths = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * cm, 128: 128 * cm, 256: 64 * cm, 512: 32 * cm,
              1024: 16 * cm}
    return {res: c // channel_divisor for res, c in widths.items()}


def make_kernel(taps=BLUR_TAPS) -> torch.Tensor:
    k = torch.tensor(taps, dtype=torch.float32)
    k = torch.outer(k, k)
    return k / k.sum()


# ---- random state dicts in the port's exact key layout ----

def _resolutions(size: int) -> list[int]:
    return [2 ** i for i in range(3, int(math.log2(size)) + 1)]


def make_generator_state_dict(size: int, style_dim: int = 64, n_mlp: int = 2, channel_multiplier: int = 2,
                              channel_divisor: int = 1, channels: Optional[dict[int, int]] = None,
                              seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights (nonzero biases and noise strengths, modulation biases around 1)."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return torch.randn(*shape, generator=g) * scale

    ch = channels or rosinality_channels(channel_multiplier, channel_divisor)
    sd: dict[str, torch.Tensor] = {}
    for i in range(1, n_mlp + 1):
        # EqualLinear(lr_mul=0.01) stores weight / lr_mul and bias / lr_mul
        sd[f"style.{i}.weight"] = randn(style_dim, style_dim) / LR_MLP
        sd[f"style.{i}.bias"] = randn(style_dim, scale=0.2) / LR_MLP
    sd["input.input"] = randn(1, ch[4], 4, 4)

    def styled_conv(prefix, cin, cout, upsample):
        sd[f"{prefix}.conv.weight"] = randn(1, cout, cin, 3, 3)
        sd[f"{prefix}.conv.modulation.weight"] = randn(cin, style_dim)
        sd[f"{prefix}.conv.modulation.bias"] = 1 + randn(cin, scale=0.2)
        if upsample:
            sd[f"{prefix}.conv.blur.kernel"] = make_kernel() * 4
        sd[f"{prefix}.noise.weight"] = randn(1, scale=0.5)
        sd[f"{prefix}.activate.bias"] = randn(cout, scale=0.2)

    def to_rgb(prefix, cin, upsample):
        sd[f"{prefix}.conv.weight"] = randn(1, 3, cin, 1, 1)
        sd[f"{prefix}.conv.modulation.weight"] = randn(cin, style_dim)
        sd[f"{prefix}.conv.modulation.bias"] = 1 + randn(cin, scale=0.2)
        sd[f"{prefix}.bias"] = randn(1, 3, 1, 1, scale=0.2)
        if upsample:
            sd[f"{prefix}.upsample.kernel"] = make_kernel() * 4

    styled_conv("conv1", ch[4], ch[4], False)
    to_rgb("to_rgb1", ch[4], False)
    cin = ch[4]
    for j, res in enumerate(_resolutions(size)):
        styled_conv(f"convs.{2 * j}", cin, ch[res], True)
        styled_conv(f"convs.{2 * j + 1}", ch[res], ch[res], False)
        to_rgb(f"to_rgbs.{j}", ch[res], True)
        cin = ch[res]
    sd["noises.noise_0"] = randn(1, 1, 4, 4)
    for j, res in enumerate(_resolutions(size)):
        sd[f"noises.noise_{2 * j + 1}"] = randn(1, 1, res, res)
        sd[f"noises.noise_{2 * j + 2}"] = randn(1, 1, res, res)
    return sd


def make_discriminator_state_dict(size: int, channel_multiplier: int = 2, channel_divisor: int = 1,
                                  seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return torch.randn(*shape, generator=g) * scale

    ch = rosinality_channels(channel_multiplier, channel_divisor)
    sd = {"convs.0.0.weight": randn(ch[size], 3, 1, 1), "convs.0.1.bias": randn(ch[size], scale=0.2)}
    for k, res in enumerate(reversed(_resolutions(size)), start=1):
        cin, cout = ch[res], ch[res // 2]
        sd[f"convs.{k}.conv1.0.weight"] = randn(cin, cin, 3, 3)
        sd[f"convs.{k}.conv1.1.bias"] = randn(cin, scale=0.2)
        sd[f"convs.{k}.conv2.0.kernel"] = make_kernel()
        sd[f"convs.{k}.conv2.1.weight"] = randn(cout, cin, 3, 3)
        sd[f"convs.{k}.conv2.2.bias"] = randn(cout, scale=0.2)
        sd[f"convs.{k}.skip.0.kernel"] = make_kernel()
        sd[f"convs.{k}.skip.1.weight"] = randn(cout, cin, 1, 1)
    c4 = ch[4]
    sd["final_conv.0.weight"] = randn(c4, c4 + 1, 3, 3)
    sd["final_conv.1.bias"] = randn(c4, scale=0.2)
    sd["final_linear.0.weight"] = randn(c4, c4 * 16)
    sd["final_linear.0.bias"] = randn(c4, scale=0.2)
    sd["final_linear.1.weight"] = randn(1, c4)
    sd["final_linear.1.bias"] = randn(1, scale=0.2)
    return sd


BUFFER_SUFFIXES = (".kernel",)


def is_buffer(key: str) -> bool:
    """The port's buffers (blur kernels and noise maps); every other entry is a parameter."""
    return key.endswith(BUFFER_SUFFIXES) or key.startswith("noises.")


# ---- the port's forward ----

def upfirdn2d(x: torch.Tensor, kernel: torch.Tensor, up: int = 1, down: int = 1, pad=(0, 0)) -> torch.Tensor:
    """Zero insertion (each sample followed by up - 1 zeros), pad (pad0, pad1) on both axes, true
    convolution with kernel [kh, kw], keep every down-th pixel. x: [N, C, H, W]."""
    n, c, h, w = x.shape
    if up > 1:
        y = x.new_zeros(n, c, h * up, w * up)
        y[:, :, ::up, ::up] = x
        x = y
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    # every channel as its own image: one single-channel conv (a grouped one is slow in float64)
    y = F.conv2d(x.reshape(n * c, 1, *x.shape[2:]), kernel.flip([0, 1]).to(x)[None, None])
    return y.reshape(n, c, *y.shape[2:])[:, :, ::down, ::down]


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x + bias.reshape(1, -1, *[1] * (x.ndim - 2)), 0.2) * math.sqrt(2)


def equal_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, lr_mul: float = 1.0,
                 activate: bool = False) -> torch.Tensor:
    out = F.linear(x, weight * (lr_mul / math.sqrt(weight.shape[1])))
    return fused_leaky_relu(out, bias * lr_mul) if activate else out + bias * lr_mul


def mapping(sd: dict, z: torch.Tensor, lr_mlp: float = LR_MLP) -> torch.Tensor:
    """PixelNorm then the style MLP (Generator(lr_mlp=...)): z [N, style_dim] -> w [N, style_dim]."""
    x = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + 1e-8)
    i = 1
    while f"style.{i}.weight" in sd:
        x = equal_linear(x, sd[f"style.{i}.weight"], sd[f"style.{i}.bias"], lr_mlp, activate=True)
        i += 1
    return x


def modulated_conv(sd: dict, prefix: str, x: torch.Tensor, style: torch.Tensor, demodulate: bool = True,
                   upsample: bool = False) -> torch.Tensor:
    """x [N, in, H, W], style [N, style_dim] -> [N, out, H', W'] (grouped per-sample weights)."""
    weight = sd[f"{prefix}.weight"]                                    # [1, out, in, k, k]
    _, cout, cin, k, _ = weight.shape
    n, _, h, w = x.shape
    s = equal_linear(style, sd[f"{prefix}.modulation.weight"], sd[f"{prefix}.modulation.bias"])
    wt = weight / math.sqrt(cin * k * k) * s.reshape(n, 1, cin, 1, 1)   # [N, out, in, k, k]
    if demodulate:
        wt = wt * torch.rsqrt(wt.square().sum(dim=[2, 3, 4]) + 1e-8).reshape(n, cout, 1, 1, 1)
    x = x.reshape(1, n * cin, h, w)
    if upsample:
        wt = wt.transpose(1, 2).reshape(n * cin, cout, k, k)
        out = F.conv_transpose2d(x, wt, stride=2, padding=0, groups=n)
        out = out.reshape(n, cout, *out.shape[2:])
        return upfirdn2d(out, sd[f"{prefix}.blur.kernel"], pad=(1, 1))
    out = F.conv2d(x, wt.reshape(n * cout, cin, k, k), padding=k // 2, groups=n)
    return out.reshape(n, cout, h, w)


def styled_conv(sd: dict, prefix: str, x, style, noise, upsample=False):
    out = modulated_conv(sd, f"{prefix}.conv", x, style, upsample=upsample)
    out = out + sd[f"{prefix}.noise.weight"] * noise
    return fused_leaky_relu(out, sd[f"{prefix}.activate.bias"])


def to_rgb(sd: dict, prefix: str, x, style, skip=None):
    out = modulated_conv(sd, f"{prefix}.conv", x, style, demodulate=False) + sd[f"{prefix}.bias"]
    if skip is not None:
        out = out + upfirdn2d(skip, sd[f"{prefix}.upsample.kernel"], up=2, pad=(2, 1))
    return out


def num_up_blocks(sd: dict) -> int:
    j = 0
    while f"to_rgbs.{j}.bias" in sd:
        j += 1
    return j


def generate(sd: dict, latents: torch.Tensor, truncation: float = 1.0,
             truncation_latent: Optional[torch.Tensor] = None) -> torch.Tensor:
    """latents [N, n_latent, style_dim] (n_latent = 2 log2(size) - 2) -> images [N, 3, size, size],
    with the stored noise maps (the port's randomize_noise=False)."""
    if truncation != 1:
        latents = truncation_latent + truncation * (latents - truncation_latent)
    n = latents.shape[0]
    x = sd["input.input"].repeat(n, 1, 1, 1)
    x = styled_conv(sd, "conv1", x, latents[:, 0], sd["noises.noise_0"])
    skip = to_rgb(sd, "to_rgb1", x, latents[:, 1])
    for j in range(num_up_blocks(sd)):
        i = 2 * j + 1
        x = styled_conv(sd, f"convs.{2 * j}", x, latents[:, i], sd[f"noises.noise_{i}"], upsample=True)
        x = styled_conv(sd, f"convs.{2 * j + 1}", x, latents[:, i + 1], sd[f"noises.noise_{i + 1}"])
        skip = to_rgb(sd, f"to_rgbs.{j}", x, latents[:, i + 2], skip)
    return skip


def n_latent(sd: dict) -> int:
    return 2 * (num_up_blocks(sd) + 2) - 2


def generate_from_z(sd: dict, z: torch.Tensor, lr_mlp: float = LR_MLP, **truncation) -> torch.Tensor:
    w = mapping(sd, z, lr_mlp)
    return generate(sd, w.unsqueeze(1).repeat(1, n_latent(sd), 1), **truncation)


def conv_layer(sd: dict, prefix: str, x: torch.Tensor, downsample: bool = False,
               activate: bool = True) -> torch.Tensor:
    """The port's ConvLayer: [Blur,] EqualConv2d, [FusedLeakyReLU] as a Sequential under prefix."""
    index = 0
    weight = sd[f"{prefix}.{1 if downsample else 0}.weight"]           # [out, in, k, k]
    k = weight.shape[-1]
    if downsample:
        p = (len(BLUR_TAPS) - 2) + (k - 1)
        x = upfirdn2d(x, sd[f"{prefix}.0.kernel"], pad=((p + 1) // 2, p // 2))
        index = 1
    scale = 1 / math.sqrt(weight.shape[1] * k * k)
    x = F.conv2d(x, weight * scale, stride=2 if downsample else 1, padding=0 if downsample else k // 2)
    return fused_leaky_relu(x, sd[f"{prefix}.{index + 1}.bias"]) if activate else x


def discriminate(sd: dict, img: torch.Tensor) -> torch.Tensor:
    """img [N, 3, size, size] -> logits [N, 1]."""
    x = conv_layer(sd, "convs.0", img)
    k = 1
    while f"convs.{k}.conv1.0.weight" in sd:
        out = conv_layer(sd, f"convs.{k}.conv2", conv_layer(sd, f"convs.{k}.conv1", x), downsample=True)
        skip = conv_layer(sd, f"convs.{k}.skip", x, downsample=True, activate=False)
        x = (out + skip) / math.sqrt(2)
        k += 1
    n, c, h, w = x.shape
    group = min(n, 4)
    stddev = x.reshape(group, -1, 1, c, h, w)
    stddev = torch.sqrt(stddev.var(0, unbiased=False) + 1e-8)
    stddev = stddev.mean([2, 3, 4], keepdim=True).squeeze(2)           # [N / group, 1, 1, 1]
    x = torch.cat([x, stddev.repeat(group, 1, h, w)], dim=1)
    x = conv_layer(sd, "final_conv", x).reshape(n, -1)
    x = equal_linear(x, sd["final_linear.0.weight"], sd["final_linear.0.bias"], activate=True)
    return equal_linear(x, sd["final_linear.1.weight"], sd["final_linear.1.bias"])
