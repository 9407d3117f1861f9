"""adain_noise in plain PyTorch: the specification and the universal fallback.

For each sample n and channel c, over the H*W plane:
    z   = x + noise_strength[c] * noise[n, 0] + bias[c]
    y   = act(z, alpha) * gain
    out = (y - mean(y)) * rsqrt(var(y) + eps) * style_scale[n, c] + style_bias[n, c]
with the biased variance (divide by H*W), as in StyleGAN's instance norm + AdaIN.

Seeded noise (`draw_noise`) is a counter-based generator: one standard-normal value per
(sample, pixel), a pure function of (seed, n, pixel), so kernels regenerate it in the backward
instead of storing it. csrc/common/noise_rng.h documents the same bits in C++; this file is the
spec. Never imports Triton or the extensions.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F

from ganfast.ops.bias_act.reference import activation

_MASK = 0xFFFFFFFF


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """32-bit xor-shift-multiply finalizer on int64 tensors holding uint32 values."""
    x = x ^ (x >> 16)
    x = (x * 0x21F0AAAD) & _MASK   # < 2^62: exact in int64
    x = x ^ (x >> 15)
    x = (x * 0x735A2D97) & _MASK
    return x ^ (x >> 15)


def noise_keys(seed: int, n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two uint32 stream keys of samples n (int64 tensor) for a 64-bit seed."""
    lo, hi = seed & _MASK, (seed >> 32) & _MASK
    k0 = _mix32(_mix32(lo ^ _mix32((2 * n) & _MASK)) ^ hi)
    k1 = _mix32(_mix32(lo ^ _mix32((2 * n + 1) & _MASK)) ^ hi)
    return k0, k1


def draw_noise(seed: int, batch: int, height: int, width: int, device=None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The seeded noise every backend draws: [batch, 1, height, width], standard normal.

    Computed in float64 from exact uniforms (the kernels use fp32 math on the same bits, so
    they agree to float32 rounding).
    """
    if not isinstance(seed, int) or not 0 <= seed < 2 ** 63:
        raise ValueError(f"seed must be an int in [0, 2**63), got {seed!r}")
    n = torch.arange(batch, dtype=torch.int64, device=device).view(batch, 1)
    p = torch.arange(height * width, dtype=torch.int64, device=device).view(1, -1)
    k0, k1 = noise_keys(seed, n)
    q = _mix32(p)
    h0, h1 = _mix32(k0 ^ q), _mix32(k1 ^ q)
    u1 = ((h0 >> 8) + 1).to(torch.float64) * 2.0 ** -24   # (0, 1]
    u2 = (h1 >> 8).to(torch.float64) * 2.0 ** -24         # [0, 1)
    z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)
    return z.view(batch, 1, height, width).to(dtype)


def adain_noise_ref(x: torch.Tensor, style_scale: torch.Tensor, style_bias: torch.Tensor,
                    noise: Optional[torch.Tensor] = None, noise_strength: Optional[torch.Tensor] = None,
                    bias: Optional[torch.Tensor] = None, act: str = "lrelu", alpha: float = 0.2,
                    gain: float = 1.0, eps: float = 1e-8, upcast: bool = False) -> torch.Tensor:
    """Reference adain_noise with explicit noise (draw_noise for seeded noise).

    x: [N, C, H, W]; style_scale, style_bias: [N, C]; noise: broadcastable to [N, 1, H, W] or
    None; noise_strength: [C] or None (1 when noise is given); bias: [C] or None.
    upcast=True computes in float32 for fp16/bf16 x. Returns x's dtype.
    """
    out_dtype = x.dtype
    cdt = torch.float32 if upcast and x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    n_, c_, h, w = x.shape
    z = x.to(cdt)
    owned = z is not x                        # z is ours to overwrite (never the caller's x)
    if noise is not None:
        nz = noise.to(cdt)
        z = z + nz if noise_strength is None else torch.addcmul(z, nz, noise_strength.to(cdt).reshape(1, c_, 1, 1))
        owned = True
    if bias is not None:
        b = bias.to(cdt).reshape(1, c_, 1, 1)
        z = z.add_(b) if owned else z + b
        owned = True
    y = activation(z, act, alpha, inplace=owned)
    if gain != 1:
        y = y * gain
    # The instance norm is a layer norm over each (n, c) plane [H, W]: torch's fused kernel, which
    # centres before it scales (a constant plane gives exactly style_bias, as the definition; F's
    # instance_norm / batch_norm compute y * k + (t - mean * k), off by ~rstd ulps there). Then the
    # per-sample style in one pass.
    yn = F.layer_norm(y, (h, w), eps=eps)
    out = torch.addcmul(style_bias.to(cdt).reshape(n_, c_, 1, 1), yn, style_scale.to(cdt).reshape(n_, c_, 1, 1))
    return out.to(out_dtype)


# ---- the kernel contract every backend implements ----
#
# forward(x, s, t, noise, ns, b, act, alpha, gain, eps, seed) -> (out, stats)
#   x      [N, C, H, W] contiguous or channels_last, dtype D (fp16/bf16/fp32/fp64)
#   A      the accumulation dtype: float32, or float64 when D is float64
#   s, t   [N, C] dtype A contiguous (style scale and bias)
#   noise  [Nn, 1, H, W] contiguous, dtype D, Nn in {1, N}; or None
#   ns, b  [C] dtype A contiguous (noise strength, bias); or None
#   seed   -1, or >= 0: draw the noise (noise is then None)
#   out    like x (same strides and dtype); stats [N, C, 2] dtype A: mean(y), rsqrt(var(y) + eps)
# backward(g, x, s, noise, ns, b, stats, act, alpha, gain, eps, seed) -> (dx, ds, dt, sdz, sdzn)
#   g      dL/dout, with x's strides; dx like x
#   ds, dt [N, C] dtype A: dL/ds = sum_hw g * yhat, dL/dt = sum_hw g
#   sdz    [N, C] dtype A: sum_hw dx (the bias gradient, before summing over n)
#   sdzn   [N, C] dtype A: sum_hw dx * noise (the noise-strength gradient, before summing over
#          n); zeros without noise


def _noise_for(x: torch.Tensor, noise: Optional[torch.Tensor], seed: int) -> Optional[torch.Tensor]:
    if seed >= 0:
        return draw_noise(seed, x.shape[0], x.shape[2], x.shape[3], device=x.device, dtype=x.dtype)
    return noise


def _acc(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _into(out: Optional[torch.Tensor], value: torch.Tensor) -> torch.Tensor:
    return value if out is None else out.copy_(value)


def forward(x, s, t, noise, ns, b, act, alpha, gain, eps, seed, out=None):
    nz = _noise_for(x, noise, seed)
    y = adain_noise_ref(x, s, t, nz, ns, b, act, alpha, gain, eps, upcast=True)
    if out is None and y.stride() != x.stride():   # the reference's layer norm writes NCHW; out is like x
        out = torch.empty_like(x)
    return _into(out, y), _stats(x, nz, ns, b, act, alpha, gain, eps)


def _stats(x, nz, ns, b, act, alpha, gain, eps):
    acc = _acc(x)
    z = x.to(acc)
    c_ = x.shape[1]
    if nz is not None:
        z = z + nz.to(acc) * (ns.to(acc).reshape(1, c_, 1, 1) if ns is not None else 1.0)
    if b is not None:
        z = z + b.to(acc).reshape(1, c_, 1, 1)
    y = activation(z, act, alpha) * gain
    var, mean = torch.var_mean(y, dim=(2, 3), correction=0)
    return torch.stack([mean, torch.rsqrt(var + eps)], dim=-1)


def backward(g, x, s, noise, ns, b, stats, act, alpha, gain, eps, seed, out=None, dx_acc=False):
    """The gradient contract, by torch.func.vjp through adain_noise_ref (no second copy of the math).
    dx_acc: dx in the accumulation dtype, not x's (the double backward differentiates it)."""
    nz = _noise_for(x, noise, seed)
    acc = _acc(x)
    t0 = torch.zeros_like(s)

    # torch.func, not torch.autograd: this runs inside a custom op, below the autograd keys.
    # x enters in the accumulation dtype, so dx stays fp32 until the end for fp16 / bf16: the
    # bias and noise-strength sums take unrounded terms (as the kernels' do), and in the double
    # backward (a vjp through this function) the cotangent of dx is not rounded to x's dtype
    # before it reaches the fp32 math (fuzzing found a cpu bf16 second-order style gradient 1.15x
    # over the rule from that rounding).
    def f(x_, s_, t_):
        return adain_noise_ref(x_, s_, t_, nz, ns, b, act, alpha, gain, eps, upcast=True)

    dxa, ds, dt = torch.func.vjp(f, x.to(acc), s, t0)[1](g.to(acc))
    dx = dxa if dx_acc else dxa.to(x.dtype)
    sdz = dxa.sum(dim=(2, 3))
    sdzn = (dxa * nz.to(acc)).sum(dim=(2, 3)) if nz is not None else torch.zeros_like(sdz)
    return _into(out, dx), ds.to(acc), dt.to(acc), sdz, sdzn
