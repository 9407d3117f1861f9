"""ModulatedConv2d and ToRGB: StyleGAN2's synthesis layers as modules over ganfast.ops.modulated_conv2d."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from ganfast.ops.bias_act.reference import ACTIVATIONS
from ganfast.ops.modulated_conv2d import modulated_conv2d
from ganfast.ops.upfirdn2d import setup_filter

NOISE_MODES = ("random", "const", "none")


class ModulatedConv2d(torch.nn.Module):
    """Style-modulated convolution with noise, bias, activation and clamp (StyleGAN2's SynthesisLayer).

    styles = affine(w): a Linear from w [N, w_dim] to in_channels with the equalized learning
    rate (weights stored N(0, 1), scaled by lr_multiplier / sqrt(w_dim) at use; bias initialized
    to 1, so a fresh layer starts unmodulated). The convolution weight [out, in, k, k] is stored
    N(0, 1): demodulation normalizes it; without demodulation the styles are scaled by
    1 / sqrt(in * k * k) instead (StyleGAN2's ToRGB). Noise: per-pixel Gaussian noise [N, 1, H, W]
    times a learned scalar strength (starts at 0); noise_mode 'random' (fresh each call), 'const'
    (a buffer drawn at construction, needs `resolution`) or 'none'. Then bias, act with gain
    (lrelu: sqrt(2)) times forward's `gain`, and conv_clamp (times gain; None: no clamp).
    up=2 upsamples through resample_filter, down=2 downsamples, padding k // 2.
    fused_modconv selects the reference's formulation (True: grouped, False: scaled, None: the
    faster for the shape); the fused backends compute both alike.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, w_dim: int, demodulate: bool = True,
                 up: int = 1, down: int = 1, resolution: Optional[int] = None, use_noise: bool = True,
                 noise_mode: str = "random", act: str = "lrelu", conv_clamp: Optional[float] = None,
                 resample_filter: Sequence[float] = (1, 3, 3, 1), lr_multiplier: float = 1.0,
                 fused_modconv: Optional[bool] = None, backend: Optional[str] = None):
        super().__init__()
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels), ("kernel_size", kernel_size),
                        ("w_dim", w_dim), ("up", up), ("down", down)):
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ValueError(f"ModulatedConv2d: {name} must be a positive int, got {v!r}")
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"ModulatedConv2d: noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if act not in ACTIVATIONS:
            raise ValueError(f"ModulatedConv2d: act must be one of {list(ACTIVATIONS)}, got {act!r}")
        if use_noise and noise_mode == "const" and resolution is None:
            raise ValueError("ModulatedConv2d: noise_mode='const' needs resolution (the noise_const buffer's size)")
        if conv_clamp is not None and conv_clamp < 0:
            raise ValueError(f"ModulatedConv2d: conv_clamp must be None or >= 0, got {conv_clamp}")
        self.in_channels, self.out_channels, self.kernel_size, self.w_dim = in_channels, out_channels, kernel_size, w_dim
        self.demodulate, self.up, self.down, self.resolution = demodulate, up, down, resolution
        self.use_noise, self.noise_mode, self.act, self.conv_clamp = use_noise, noise_mode, act, conv_clamp
        self.lr_multiplier, self.fused_modconv, self.backend = lr_multiplier, fused_modconv, backend
        self.affine_weight = torch.nn.Parameter(torch.randn(in_channels, w_dim) / lr_multiplier)
        self.affine_bias = torch.nn.Parameter(torch.ones(in_channels) / lr_multiplier)
        self.weight = torch.nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = torch.nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        if use_noise:
            self.noise_strength = torch.nn.Parameter(torch.zeros([]))
            if resolution is not None:
                self.register_buffer("noise_const", torch.randn(resolution, resolution))
            else:
                self.noise_const = None
        else:
            self.noise_strength = self.noise_const = None

    def styles(self, w: torch.Tensor) -> torch.Tensor:
        """The styles [N, in_channels] from w [N, w_dim] (scaled for ToRGB when not demodulating)."""
        if w.ndim != 2 or w.shape[1] != self.w_dim:
            raise ValueError(f"ModulatedConv2d: w must have shape [N, {self.w_dim}], got {list(w.shape)}")
        weight = self.affine_weight * (self.lr_multiplier / math.sqrt(self.w_dim))
        styles = F.linear(w, weight.to(w.dtype), (self.affine_bias * self.lr_multiplier).to(w.dtype))
        if not self.demodulate:
            styles = styles * (1 / math.sqrt(self.in_channels * self.kernel_size ** 2))
        return styles

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: Optional[str] = None,
                gain: float = 1.0) -> torch.Tensor:
        """x: [N, in_channels, H, W]; w: [N, w_dim]. Returns [N, out_channels, H * up / down, ...]."""
        mode = self.noise_mode if noise_mode is None else noise_mode
        if mode not in NOISE_MODES:
            raise ValueError(f"ModulatedConv2d: noise_mode must be one of {NOISE_MODES}, got {mode!r}")
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"ModulatedConv2d: x must have shape [N, {self.in_channels}, H, W], got {list(x.shape)}")
        if w.shape[0] != x.shape[0]:
            raise ValueError(f"ModulatedConv2d: w's batch {w.shape[0]} != x's batch {x.shape[0]}")
        out_h = x.shape[2] * self.up // self.down
        out_w = x.shape[3] * self.up // self.down
        noise = None
        if self.use_noise and mode == "random":
            noise = torch.randn(x.shape[0], 1, out_h, out_w, device=x.device, dtype=x.dtype) * self.noise_strength
        elif self.use_noise and mode == "const":
            if self.noise_const is None or tuple(self.noise_const.shape) != (out_h, out_w):
                raise ValueError(f"ModulatedConv2d: noise_mode='const' needs an output of "
                                 f"{self.resolution}x{self.resolution}, got {out_h}x{out_w}")
            noise = self.noise_const.to(x.dtype) * self.noise_strength
        act_gain = ACTIVATIONS[self.act].def_gain * gain
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return modulated_conv2d(x, self.weight, self.styles(w), noise, up=self.up, down=self.down,
                                padding=self.kernel_size // 2, resample_filter=self.resample_filter,
                                demodulate=self.demodulate, flip_weight=self.up == 1,
                                fused_modconv=self.fused_modconv, bias=self.bias, act=self.act,
                                gain=act_gain, clamp=clamp, backend=self.backend)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, w_dim={self.w_dim}, "
                f"demodulate={self.demodulate}, up={self.up}, down={self.down}, act={self.act!r}, "
                f"noise={self.noise_mode if self.use_noise else 'none'}, conv_clamp={self.conv_clamp}")


class ToRGB(ModulatedConv2d):
    """StyleGAN2's ToRGB: a 1x1 modulated convolution without demodulation, noise or activation."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1,
                 conv_clamp: Optional[float] = None, lr_multiplier: float = 1.0, fused_modconv: Optional[bool] = None,
                 backend: Optional[str] = None):
        super().__init__(in_channels, out_channels, kernel_size, w_dim, demodulate=False, use_noise=False,
                         act="linear", conv_clamp=conv_clamp, lr_multiplier=lr_multiplier,
                         fused_modconv=fused_modconv, backend=backend)
