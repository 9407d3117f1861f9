"""AdaINNoise: StyleGAN's (v1) synthesis-layer epilogue as a module over ganfast.ops.adain_noise."""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from ganfast.ops.adain_noise import adain_noise
from ganfast.ops.bias_act.reference import ACTIVATIONS

NOISE_MODES = ("random", "const", "none")


class AdaINNoise(torch.nn.Module):
    """Noise injection, bias, activation, instance norm and the style's scale and shift.

    out = instance_norm(act(x + noise_strength * noise + bias) * gain) * scale + shift, with
    (scale, shift) = affine(w): a Linear from w [N, w_dim] to 2 * channels with the equalized
    learning rate of StyleGAN (weights stored N(0, 1), scaled by lr_multiplier / sqrt(w_dim) at
    use), its scale half's bias initialized to 1 and its shift half's to 0, so a fresh layer
    starts near plain instance norm. noise_strength is per channel and starts at 0.

    noise_mode: 'random' draws fresh noise per call (from a seed taken from torch's global RNG,
    so torch.manual_seed reproduces it; the kernels regenerate it in the backward instead of
    storing it), 'const' uses a fixed buffer noise_const [1, 1, resolution, resolution] drawn at
    construction (needs `resolution`), 'none' adds no noise. forward(..., noise_mode=) overrides.
    """

    def __init__(self, channels: int, w_dim: int, resolution: Optional[int] = None,
                 noise_mode: str = "random", act: str = "lrelu", alpha: float = 0.2,
                 gain: float = 1.0, eps: float = 1e-8, lr_multiplier: float = 1.0,
                 backend: Optional[str] = None):
        super().__init__()
        for name, v in (("channels", channels), ("w_dim", w_dim)):
            if not isinstance(v, int) or v <= 0:
                raise ValueError(f"AdaINNoise: {name} must be a positive int, got {v!r}")
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"AdaINNoise: noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if act not in ACTIVATIONS:
            raise ValueError(f"AdaINNoise: act must be one of {list(ACTIVATIONS)}, got {act!r}")
        if resolution is not None and (not isinstance(resolution, int) or resolution <= 0):
            raise ValueError(f"AdaINNoise: resolution must be a positive int or None, got {resolution!r}")
        if noise_mode == "const" and resolution is None:
            raise ValueError("AdaINNoise: noise_mode='const' needs resolution (the noise_const buffer's size)")
        self.channels, self.w_dim, self.resolution = channels, w_dim, resolution
        self.noise_mode, self.act, self.alpha, self.gain, self.eps = noise_mode, act, alpha, gain, eps
        self.lr_multiplier, self.backend = lr_multiplier, backend
        self.affine_weight = torch.nn.Parameter(torch.randn(2 * channels, w_dim) / lr_multiplier)
        self.affine_bias = torch.nn.Parameter(torch.cat([torch.ones(channels), torch.zeros(channels)]) / lr_multiplier)
        self.noise_strength = torch.nn.Parameter(torch.zeros(channels))
        self.bias = torch.nn.Parameter(torch.zeros(channels))
        if resolution is not None:
            self.register_buffer("noise_const", torch.randn(1, 1, resolution, resolution))
        else:
            self.noise_const = None

    def styles(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift), each [N, channels], from w [N, w_dim]."""
        if w.ndim != 2 or w.shape[1] != self.w_dim:
            raise ValueError(f"AdaINNoise: w must have shape [N, {self.w_dim}], got {list(w.shape)}")
        weight = self.affine_weight * (self.lr_multiplier / math.sqrt(self.w_dim))
        st = F.linear(w, weight.to(w.dtype), (self.affine_bias * self.lr_multiplier).to(w.dtype))
        return st[:, :self.channels], st[:, self.channels:]

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: Optional[str] = None) -> torch.Tensor:
        """x: [N, channels, H, W]; w: [N, w_dim]. Returns x's shape, dtype and layout."""
        mode = self.noise_mode if noise_mode is None else noise_mode
        if mode not in NOISE_MODES:
            raise ValueError(f"AdaINNoise: noise_mode must be one of {NOISE_MODES}, got {mode!r}")
        if x.ndim != 4 or x.shape[1] != self.channels:
            raise ValueError(f"AdaINNoise: x must have shape [N, {self.channels}, H, W], got {list(x.shape)}")
        if w.shape[0] != x.shape[0]:
            raise ValueError(f"AdaINNoise: w's batch {w.shape[0]} != x's batch {x.shape[0]}")
        scale, shift = self.styles(w)
        noise = seed = None
        if mode == "random":
            seed = int(torch.randint(0, 2 ** 62, ()).item())
        elif mode == "const":
            if self.noise_const is None or tuple(self.noise_const.shape[2:]) != tuple(x.shape[2:]):
                have = None if self.noise_const is None else list(self.noise_const.shape[2:])
                raise ValueError(f"AdaINNoise: noise_mode='const' needs a noise_const of x's size "
                                 f"{list(x.shape[2:])}, have {have}")
            noise = self.noise_const
        return adain_noise(x, scale, shift, noise=noise,
                           noise_strength=self.noise_strength if mode != "none" else None,
                           bias=self.bias, act=self.act, alpha=self.alpha, gain=self.gain,
                           eps=self.eps, seed=seed, backend=self.backend)

    def extra_repr(self) -> str:
        s = f"{self.channels}, w_dim={self.w_dim}, noise_mode={self.noise_mode!r}, act={self.act!r}"
        if self.resolution is not None:
            s += f", resolution={self.resolution}"
        if self.lr_multiplier != 1:
            s += f", lr_multiplier={self.lr_multiplier}"
        if self.backend is not None:
            s += f", backend={self.backend!r}"
        return s
