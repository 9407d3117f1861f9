"""upfirdn2d: upsample, pad, FIR-filter and downsample a batch of images (StyleGAN2's resampling).

Autograd: one torch custom op, ganfast::upfirdn2d (register_fake + register_autograd), whose
backward is the same op with gradient_args() (up and down swapped, the filter flipped, adjusted
padding). The gradient is therefore again a fused upfirdn2d, differentiable in turn: gradients of
any order on every backend. Eager calls use an autograd.Function twin of the custom op (the
torch.library wrapper costs ~50 us a call). The kernels take the filter as a constant: a gradient
with respect to f (f.requires_grad) is computed by the reference only.
"""
from __future__ import annotations

from typing import Optional

import torch

from ganfast import backends
from ganfast.ops._layout import is_eager
from ganfast.ops.upfirdn2d.cpu import prefers_onednn as _cpu_prefers_onednn
from ganfast.ops.upfirdn2d.reference import (IntPair, filter_size, output_size, parse_padding, parse_scaling,
                                             resolve_args, setup_filter, upfirdn2d_ref)

__all__ = ["upfirdn2d", "setup_filter", "output_size", "gradient_args"]

OP = "upfirdn2d"
backends.register_op(OP, backends.FUSED_OP_DTYPES, grad_orders={"cpu": None, "triton": None, "cuda": None})


def _gradient_padding(in_h: int, in_w: int, out_h: int, out_w: int, fh: int, fw: int, upx: int, upy: int,
                      downx: int, downy: int, px0: int, py0: int) -> tuple[int, int, int, int]:
    return (fw - px0 - 1, in_w * upx - out_w * downx + px0 - upx + 1,
            fh - py0 - 1, in_h * upy - out_h * downy + py0 - upy + 1)


def gradient_args(in_h: int, in_w: int, f: Optional[torch.Tensor], up: IntPair = 1, down: IntPair = 1,
                  padding: IntPair = 0, flip_filter: bool = False) -> dict:
    """The upfirdn2d arguments whose output is the gradient of upfirdn2d(x, f, up, down, padding,
    flip_filter, gain) with respect to x [.., in_h, in_w], given the output gradient: the same
    filter flipped the other way, up and down swapped, and the padding that lands every tap on
    its input pixel. (gain is unchanged.) The fused backends' backward is this call."""
    upx, upy = parse_scaling(up, "up")
    downx, downy = parse_scaling(down, "down")
    px0, px1, py0, py1 = parse_padding(padding)
    fw, fh = filter_size(f)
    out_h, out_w = output_size(in_h, in_w, f, (upx, upy), (downx, downy), (px0, px1, py0, py1))
    return dict(up=[downx, downy], down=[upx, upy], flip_filter=not flip_filter,
                padding=list(_gradient_padding(in_h, in_w, out_h, out_w, fh, fw, upx, upy, downx, downy, px0, py0)))


def _impl(name: str):
    """The module implementing the kernel contract `run` (see reference.run)."""
    return backends.kernel_module(OP, name)


def _run(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip_filter, gain, backend):
    return _impl(backend).run(x.contiguous(), f, upx, upy, downx, downy, px0, px1, py0, py1, flip_filter, gain)


# ---- custom op ----

@torch.library.custom_op("ganfast::upfirdn2d", mutates_args=())
def _upfirdn2d_op(x: torch.Tensor, f: torch.Tensor, upx: int, upy: int, downx: int, downy: int, px0: int,
                  px1: int, py0: int, py1: int, flip_filter: bool, gain: float, backend: str) -> torch.Tensor:
    return _run(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip_filter, gain, backend)


@_upfirdn2d_op.register_fake
def _(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip_filter, gain, backend):
    # plain arithmetic (output_size's checks want ints; under torch.compile these may be SymInts)
    out_h = (x.shape[2] * upy + py0 + py1 - f.shape[0] + downy) // downy
    out_w = (x.shape[3] * upx + px0 + px1 - f.shape[1] + downx) // downx
    return x.new_empty(x.shape[0], x.shape[1], out_h, out_w)


def _setup(ctx, inputs, output):
    x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip_filter, gain, backend = inputs
    ctx.save_for_backward(f)
    ctx.args = (x.shape[2], x.shape[3], output.shape[2], output.shape[3], upx, upy, downx, downy, px0, py0,
                flip_filter, gain, backend)


def _backward(ctx, dy, op=None):
    op = op or torch.ops.ganfast.upfirdn2d
    (f,) = ctx.saved_tensors
    in_h, in_w, out_h, out_w, upx, upy, downx, downy, px0, py0, flip_filter, gain, backend = ctx.args
    gx0, gx1, gy0, gy1 = _gradient_padding(in_h, in_w, out_h, out_w, f.shape[0], f.shape[1], upx, upy,
                                           downx, downy, px0, py0)
    dx = op(dy, f, downx, downy, upx, upy, gx0, gx1, gy0, gy1, not flip_filter, gain, backend)
    return (dx,) + (None,) * 12


_upfirdn2d_op.register_autograd(_backward, setup_context=_setup)


class _UpFirDn2dFn(torch.autograd.Function):
    """The custom op as an autograd.Function for eager calls; its backward is itself, so any order.
    The scalar arguments travel as one tuple: apply() walks its arguments in Python, ~1 us each."""

    @staticmethod
    def forward(ctx, x, f, args):
        out = _run(x, f, *args)
        _setup(ctx, (x, f) + args, out)
        return out

    @staticmethod
    def backward(ctx, dy):
        return _backward(ctx, dy, op=_eager_call)[0], None, None


def _eager_call(x, f, *args):
    """upfirdn2d on a fused backend in eager mode: the Function where a graph is recorded, else the
    kernel alone (a first-order backward, or a call under no_grad / on tensors without grad)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _UpFirDn2dFn.apply(x, f, args)
    return _run(x, f, *args)


def kernel_filter(f: Optional[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """f as the kernels take it: a contiguous 2-D [fh, fw] filter (a separable [taps] filter as
    its outer product, None as [[1]]) in float32 (float64 for float64 x) on x's device."""
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    if f is None:
        return torch.ones(1, 1, dtype=dtype, device=x.device)
    if f.ndim == 2 and f.dtype == dtype and not f.requires_grad and f.is_contiguous():
        return f     # the usual call (setup_filter's buffer): nothing to convert
    f = f.detach().to(dtype)
    return (torch.outer(f, f) if f.ndim == 1 else f).contiguous()


def upfirdn2d(x: torch.Tensor, f: Optional[torch.Tensor], up: IntPair = 1, down: IntPair = 1,
              padding: IntPair = 0, flip_filter: bool = False, gain: float = 1,
              backend: Optional[str] = None) -> torch.Tensor:
    """Upsample (zero insertion), pad (negative crops), convolve with FIR filter f, downsample.

    Drop-in for the StyleGAN2/StyleGAN3 upfirdn2d (same names, order and defaults).

    Args:
        x: [N, C, H, W] floating tensor (any layout; the kernels read it as contiguous NCHW).
        f: [fh, fw] (non-separable), [taps] (separable) or None (identity); see setup_filter.
        up, down: int or [x, y] factors >= 1.
        padding: int, [x, y] or [x0, x1, y0, y1]; negative values crop.
        flip_filter: False = convolution, True = correlation.
        gain: overall scale of the result.
        backend: None (automatic), 'reference', 'cpu', 'triton' or 'cuda'.

    Returns: [N, C, out_h, out_w] with out = (in * up + pad0 + pad1 - taps + down) // down per axis,
    contiguous. Differentiable to any order in x on every backend; in f on the reference only.
    """
    upx, upy, downx, downy, px0, px1, py0, py1, _, _ = resolve_args(x, f, up, down, padding)
    requested = backends.requested_backend(backend)
    f_grad = f is not None and f.requires_grad and torch.is_grad_enabled()
    if requested is not None and requested != "reference" and f_grad:
        raise backends.BackendNotSupported(
            f"ganfast.ops.upfirdn2d: backend '{requested}' takes the filter as a constant; "
            "a gradient with respect to f needs backend='reference' (or f.requires_grad_(False))")
    name = "reference" if requested == "reference" or f_grad else backends.select(OP, (x,), requested)
    if name == "reference" or (name == "cpu" and _cpu_prefers_onednn(x, upx, upy)):
        # (cpu: oneDNN's depthwise convolution and its autograd backward beat the C++ kernel on
        # small planes without upsampling; see cpu.prefers_onednn)
        return upfirdn2d_ref(x, f, (upx, upy), (downx, downy), (px0, px1, py0, py1), flip_filter, gain)
    args = (x, kernel_filter(f, x), upx, upy, downx, downy, px0, px1, py0, py1, bool(flip_filter), float(gain), name)
    if is_eager(x):
        return _eager_call(*args)
    return torch.ops.ganfast.upfirdn2d(*args)
