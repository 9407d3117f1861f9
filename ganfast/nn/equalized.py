"""Equalized-learning-rate layers (ProGAN / StyleGAN): weights stored N(0, 1 / lr_multiplier) and
scaled by lr_multiplier / sqrt(fan_in) at use, so every layer learns at the same speed under Adam.

EqualizedLinear (StyleGAN2's FullyConnectedLayer), EqualizedConv2d (its Conv2dLayer, with up/down
resampling through upfirdn2d), MinibatchStd (ProGAN's minibatch standard deviation) and
normalize_2nd_moment (pixel norm of the latents). The bias and activation run through the fused
ganfast.ops.bias_act; the resampling through ganfast.ops.upfirdn2d.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from ganfast.ops.bias_act import bias_act
from ganfast.ops.bias_act.reference import ACTIVATIONS
from ganfast.ops.modulated_conv2d import conv2d_resample
from ganfast.ops.upfirdn2d import setup_filter


def _check_positive(cls: str, **kwargs) -> None:
    for name, v in kwargs.items():
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"{cls}: {name} must be a positive int, got {v!r}")


def _check_act(cls: str, act: str) -> None:
    if act not in ACTIVATIONS:
        raise ValueError(f"{cls}: act must be one of {list(ACTIVATIONS)}, got {act!r}")


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """x / sqrt(mean(x^2 over dim) + eps): StyleGAN's pixel norm of z (and of the label embedding)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def _scaled_bias(bias: torch.Tensor, lr_multiplier: float, dtype: torch.dtype) -> torch.Tensor:
    """bias * lr_multiplier in dtype, without the multiply when the multiplier is 1 (every layer but
    the mapping network's): one op and one autograd node less per call."""
    b = bias.to(dtype)
    return b if lr_multiplier == 1 else b * lr_multiplier


class EqualizedLinear(torch.nn.Module):
    """y = act(x @ (W * lr_multiplier / sqrt(in))^T + b * lr_multiplier) through fused bias_act.

    x: [N, in_features] -> [N, out_features]. bias_init sets the effective initial bias.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, act: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0, backend: Optional[str] = None):
        super().__init__()
        _check_positive("EqualizedLinear", in_features=in_features, out_features=out_features)
        _check_act("EqualizedLinear", act)
        if lr_multiplier <= 0:
            raise ValueError(f"EqualizedLinear: lr_multiplier must be > 0, got {lr_multiplier}")
        self.in_features, self.out_features, self.act = in_features, out_features, act
        self.lr_multiplier, self.backend = lr_multiplier, backend
        self.weight = torch.nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = torch.nn.Parameter(torch.full([out_features], float(bias_init) / lr_multiplier)) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"EqualizedLinear: x must have shape [N, {self.in_features}], got {list(x.shape)}")
        w = self.weight.to(x.dtype) * self.weight_gain
        b = None if self.bias is None else _scaled_bias(self.bias, self.lr_multiplier, x.dtype)
        if self.act == "linear":
            return F.linear(x, w, b)   # one addmm; nothing for bias_act to fuse
        y = F.linear(x, w)             # under autocast y may be bf16 / fp16 while x is fp32
        return bias_act(y, None if b is None else b.to(y.dtype), act=self.act, backend=self.backend)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"act={self.act!r}, lr_multiplier={self.lr_multiplier}")


class EqualizedConv2d(torch.nn.Module):
    """StyleGAN2's Conv2dLayer: conv2d_resample with an equalized weight, then fused bias_act.

    x: [N, in_channels, H, W] -> [N, out_channels, H * up / down, W * up / down]; padding k // 2.
    act gain (sqrt(2) for lrelu) times forward's `gain`; conv_clamp (times gain) clamps the output.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 act: str = "linear", up: int = 1, down: int = 1, resample_filter: Sequence[float] = (1, 3, 3, 1),
                 conv_clamp: Optional[float] = None, lr_multiplier: float = 1.0, backend: Optional[str] = None):
        super().__init__()
        _check_positive("EqualizedConv2d", in_channels=in_channels, out_channels=out_channels,
                        kernel_size=kernel_size, up=up, down=down)
        _check_act("EqualizedConv2d", act)
        if conv_clamp is not None and conv_clamp < 0:
            raise ValueError(f"EqualizedConv2d: conv_clamp must be None or >= 0, got {conv_clamp}")
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.act, self.up, self.down, self.conv_clamp, self.backend = act, up, down, conv_clamp, backend
        self.lr_multiplier = lr_multiplier
        self.weight = torch.nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size) / lr_multiplier)
        self.bias = torch.nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        self.weight_gain = lr_multiplier / math.sqrt(in_channels * kernel_size ** 2)

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"EqualizedConv2d: x must have shape [N, {self.in_channels}, H, W], got {list(x.shape)}")
        w = self.weight.to(x.dtype) * self.weight_gain
        b = None if self.bias is None else _scaled_bias(self.bias, self.lr_multiplier, x.dtype)
        y = conv2d_resample(x, w, self.resample_filter, self.up, self.down, self.kernel_size // 2,
                            flip_weight=self.up == 1, backend=self.backend)
        act_gain = ACTIVATIONS[self.act].def_gain * gain
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        b = None if b is None else b.to(y.dtype)      # autocast may have made y bf16 / fp16
        return bias_act(y, b, act=self.act, gain=act_gain, clamp=clamp, backend=self.backend)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, bias={self.bias is not None}, "
                f"act={self.act!r}, up={self.up}, down={self.down}, conv_clamp={self.conv_clamp}")


class MinibatchStd(torch.nn.Module):
    """ProGAN's minibatch standard deviation: appends num_channels feature maps holding the
    standard deviation of the features over groups of group_size samples (averaged over
    channels and pixels), so D can see a lack of variety. x [N, C, H, W] -> [N, C + num_channels, H, W].
    N must be divisible by min(group_size, N)."""

    def __init__(self, group_size: Optional[int] = 4, num_channels: int = 1):
        super().__init__()
        if group_size is not None:
            _check_positive("MinibatchStd", group_size=group_size)
        _check_positive("MinibatchStd", num_channels=num_channels)
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n) if self.group_size is not None else n
        f = self.num_channels
        if n % g or c % f:
            raise ValueError(f"MinibatchStd: the batch ({n}) must be divisible by the group size ({g}) "
                             f"and the channels ({c}) by num_channels ({f})")
        y = x.reshape(g, n // g, f, c // f, h, w)          # [G, M, F, c, H, W]: sample n is (n // M, n % M)
        y = y - y.mean(dim=0)
        y = (y.square().mean(dim=0) + 1e-8).sqrt()          # [M, F, c, H, W]
        y = y.mean(dim=[2, 3, 4])                           # [M, F]
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)       # [N, F, H, W]
        return torch.cat([x, y.to(x.dtype)], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels}"
