"""The plain-PyTorch references as they were before issue 28 (ganfast a7c7a57), for the ops whose
reference was rewritten into a faster formulation of the same computation.

Each function is the old reference verbatim (self-contained: it does not call the rewritten
module). tests/ops/test_<op>.py pin the new reference equal to these in float64 (values, first
and second derivatives); bench/reference_formulations.py times them as the "before".
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def activation_v0(z: torch.Tensor, act: str, alpha: float) -> torch.Tensor:
    if act == "linear":
        return z
    if act == "relu":
        return F.relu(z)
    if act == "lrelu":
        return F.leaky_relu(z, alpha)
    if act == "tanh":
        return torch.tanh(z)
    if act == "sigmoid":
        return torch.sigmoid(z)
    if act == "elu":
        return F.elu(z, alpha)
    if act == "selu":
        return F.selu(z)
    if act == "softplus":
        return F.softplus(z)
    if act == "swish":
        return z * torch.sigmoid(z)
    raise ValueError(f"unknown act {act!r}")


def bias_act_ref_v0(x: torch.Tensor, b: Optional[torch.Tensor], dim: int, act: str, alpha: float,
                    gain: float, clamp: float, upcast: bool = False) -> torch.Tensor:
    """NVIDIA's _bias_act_ref order: x + b, act, * gain, clamp; each step a new tensor."""
    out_dtype = x.dtype
    if upcast and x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
        b = b.float() if b is not None else None
    z = x if b is None else x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    y = activation_v0(z, act, alpha)
    if gain != 1:
        y = y * gain
    if clamp >= 0:
        y = y.clamp(-clamp, clamp)
    return y.to(out_dtype)


def adain_noise_ref_v0(x: torch.Tensor, style_scale: torch.Tensor, style_bias: torch.Tensor,
                       noise: Optional[torch.Tensor] = None, noise_strength: Optional[torch.Tensor] = None,
                       bias: Optional[torch.Tensor] = None, act: str = "lrelu", alpha: float = 0.2,
                       gain: float = 1.0, eps: float = 1e-8, upcast: bool = False) -> torch.Tensor:
    """Noise, bias, act, gain, then the instance norm written out (mean, centred square's mean, rsqrt)."""
    out_dtype = x.dtype
    cdt = torch.float32 if upcast and x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    n_, c_ = x.shape[0], x.shape[1]
    z = x.to(cdt)
    if noise is not None:
        nz = noise.to(cdt)
        if noise_strength is not None:
            nz = nz * noise_strength.to(cdt).reshape(1, c_, 1, 1)
        z = z + nz
    if bias is not None:
        z = z + bias.to(cdt).reshape(1, c_, 1, 1)
    y = activation_v0(z, act, alpha)
    if gain != 1:
        y = y * gain
    mean = y.mean(dim=(2, 3), keepdim=True)
    yc = y - mean
    var = (yc * yc).mean(dim=(2, 3), keepdim=True)
    out = yc * torch.rsqrt(var + eps)
    out = out * style_scale.to(cdt).reshape(n_, c_, 1, 1) + style_bias.to(cdt).reshape(n_, c_, 1, 1)
    return out.to(out_dtype)


def conditional_batch_norm_ref_v0(x: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor,
                                  running_mean: Optional[torch.Tensor] = None,
                                  running_var: Optional[torch.Tensor] = None, training: bool = True,
                                  momentum: float = 0.1, eps: float = 1e-5, act: Optional[str] = None,
                                  upcast: bool = False) -> torch.Tensor:
    """Single process: var_mean statistics, running statistics by lerp, the normalization written out."""
    acc = torch.float64 if upcast or x.dtype == torch.float64 else torch.float32
    xa = x.to(acc)
    if training:
        var, mean = torch.var_mean(xa, dim=(0, 2, 3), correction=0)
        count = torch.tensor(float(x.shape[0] * x.shape[2] * x.shape[3]), dtype=acc, device=x.device)
        with torch.no_grad():
            if running_mean is not None:
                running_mean.lerp_(mean.detach().to(running_mean.dtype), momentum)
            if running_var is not None:
                unbiased = var.detach() * (count / (count - 1).clamp_min(1))
                running_var.lerp_(unbiased.to(running_var.dtype), momentum)
    else:
        mean, var = running_mean.to(acc), running_var.to(acc)
    c = x.shape[1]
    xhat = (xa - mean.reshape(1, c, 1, 1)) * torch.rsqrt(var + eps).reshape(1, c, 1, 1)
    z = xhat * gain.to(acc)[:, :, None, None] + bias.to(acc)[:, :, None, None]
    if act == "relu":
        z = torch.relu(z)
    return z.to(x.dtype)


def self_attention2d_ref_v0(x: torch.Tensor, w_theta: torch.Tensor, w_phi: torch.Tensor, w_g: torch.Tensor,
                            w_o: torch.Tensor, gamma: torch.Tensor, pool: int = 2) -> torch.Tensor:
    """Projections by einsum, softmax(q k^T) v by matmul, output by matmul, then x + gamma * o."""
    b, c, h, w = x.shape
    wt, wp, wg, wo = (t.flatten(1) for t in (w_theta, w_phi, w_g, w_o))
    theta = torch.einsum("oc,bchw->bohw", wt, x)
    phi, g = torch.einsum("oc,bchw->bohw", wp, x), torch.einsum("oc,bchw->bohw", wg, x)
    if pool > 1:
        phi, g = F.max_pool2d(phi, pool), F.max_pool2d(g, pool)
    q, k, v = theta.flatten(2).transpose(1, 2), phi.flatten(2).transpose(1, 2), g.flatten(2).transpose(1, 2)
    o = torch.matmul(torch.softmax(torch.matmul(q, k.transpose(1, 2)), dim=-1), v)    # [B, N, Cv]
    o = torch.matmul(wo, o.transpose(1, 2)).reshape(b, c, h, w)
    return x + gamma * o


def upfirdn2d_v0(x, f, up, down, pad, flip_filter=False, gain=1.0):
    """Zero insertion by reshape and pad, then every channel as its own image, [N*C, 1, H, W],
    through a single-channel convolution, then slicing."""
    (upx, upy), (downx, downy), (px0, px1, py0, py1) = up, down, pad
    if f is None:
        f = torch.ones(1, 1, dtype=x.dtype)
    n, c, h, w = x.shape
    x = F.pad(x.reshape(n, c, h, 1, w, 1), [0, upx - 1, 0, 0, 0, upy - 1]).reshape(n, c, h * upy, w * upx)
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0):x.shape[2] - max(-py1, 0), max(-px0, 0):x.shape[3] - max(-px1, 0)]
    if f.numel() == 1:
        return (x * (f.reshape([]) ** (3 - f.ndim) * gain))[:, :, ::downy, ::downx]
    f = f.to(x.dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    xr = x.reshape(n * c, 1, x.shape[2], x.shape[3])
    if f.ndim == 2:
        xr = F.conv2d(xr, f[None, None])
    else:
        xr = F.conv2d(F.conv2d(xr, f[None, None, None, :]), f[None, None, :, None])
    return xr.reshape(n, c, xr.shape[2], xr.shape[3])[:, :, ::downy, ::downx]
