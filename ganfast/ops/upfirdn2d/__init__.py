"""upfirdn2d: upsample, pad, FIR-filter and downsample a batch of images (StyleGAN2's resampling).

Status: the reference (plain PyTorch, any gradient order) behind the public API, so models and
modulated_conv2d can use it now; the fused cpu / triton / cuda kernels are the rest of issue 4.
Asking for a fused backend explicitly raises ganfast.BackendNotSupported naming why; the
automatic choice runs the reference without a fallback warning (there is nothing to fall back
from yet).
"""
from __future__ import annotations

from typing import Optional

import torch

from ganfast import backends
from ganfast.ops.upfirdn2d.reference import (IntPair, filter_size, output_size, parse_padding, parse_scaling,
                                             setup_filter, upfirdn2d_ref)

__all__ = ["upfirdn2d", "setup_filter", "output_size", "gradient_args"]

OP = "upfirdn2d"
backends.register_op(OP, {"reference": (torch.float16, torch.bfloat16, torch.float32, torch.float64)})


def gradient_args(in_h: int, in_w: int, f: Optional[torch.Tensor], up: IntPair = 1, down: IntPair = 1,
                  padding: IntPair = 0, flip_filter: bool = False) -> dict:
    """The upfirdn2d arguments whose output is the gradient of upfirdn2d(x, f, up, down, padding,
    flip_filter, gain) with respect to x [.., in_h, in_w], given the output gradient: the same
    filter flipped the other way, up and down swapped, and the padding that lands every tap on
    its input pixel. (gain is unchanged.) A fused kernel's backward is this call."""
    upx, upy = parse_scaling(up, "up")
    downx, downy = parse_scaling(down, "down")
    px0, px1, py0, py1 = parse_padding(padding)
    fw, fh = filter_size(f)
    out_h, out_w = output_size(in_h, in_w, f, (upx, upy), (downx, downy), (px0, px1, py0, py1))
    return dict(up=[downx, downy], down=[upx, upy], flip_filter=not flip_filter,
                padding=[fw - px0 - 1, in_w * upx - out_w * downx + px0 - upx + 1,
                         fh - py0 - 1, in_h * upy - out_h * downy + py0 - upy + 1])


def upfirdn2d(x: torch.Tensor, f: Optional[torch.Tensor], up: IntPair = 1, down: IntPair = 1,
              padding: IntPair = 0, flip_filter: bool = False, gain: float = 1,
              backend: Optional[str] = None) -> torch.Tensor:
    """Upsample (zero insertion), pad (negative crops), convolve with FIR filter f, downsample.

    Drop-in for the StyleGAN2/StyleGAN3 upfirdn2d (same names, order and defaults).

    Args:
        x: [N, C, H, W] floating tensor.
        f: [fh, fw] (non-separable), [taps] (separable) or None (identity); see setup_filter.
        up, down: int or [x, y] factors >= 1.
        padding: int, [x, y] or [x0, x1, y0, y1]; negative values crop.
        flip_filter: False = convolution, True = correlation.
        gain: overall scale of the result.
        backend: None or 'reference' (the fused backends are not built yet for this op).

    Returns: [N, C, out_h, out_w] with out = (in * up + pad0 + pad1 - taps + down) // down per axis.
    Differentiable to any order.
    """
    requested = backends.requested_backend(backend)
    if requested is not None and requested != "reference":
        backends.select(OP, (x, f), requested)  # raises BackendNotSupported with the reasons
    if f is not None and isinstance(f, torch.Tensor) and isinstance(x, torch.Tensor) and f.device != x.device:
        raise ValueError(f"upfirdn2d: f must be on x's device {x.device}, got {f.device}")
    return upfirdn2d_ref(x, f, up, down, padding, flip_filter, gain)
