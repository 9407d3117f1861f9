"""modulated_conv2d: StyleGAN2's weight-modulated, demodulated convolution with up/down-sampling
and the bias_act epilogue, on every backend.

How the fused backends split the op (kernel contracts at the end of reference.py):
  dcoef = demod_coefficients(weight, styles)        ganfast::modconv_demod       [N, Cout], fp32
  a     = conv2d_resample(x * styles, weight)       torch's convolution (oneDNN / cuDNN) + upfirdn2d
  out   = epilogue(a, dcoef, noise, bias)           ganfast::modconv_epilogue    one pass
The triton backend instead runs a, dcoef and the epilogue as one implicit-GEMM kernel
(ganfast::modconv_fused: the weights are modulated per sample inside the tile, never written)
when up = down = 1; resampling layers take the split path, whose transposed (up) or strided
(down) convolution at the low resolution does 1/4 of the multiply-adds of convolving at the high
one (StyleGAN2's own choice), with the Triton upfirdn2d and epilogue around cuDNN.

Autograd: every custom op has register_fake + register_autograd and an autograd.Function twin for
eager calls. The backward of the fused convolution is built from torch's convolution gradients
(cuDNN / oneDNN) and the fused epilogue backward (ganfast::modconv_epilogue_backward); the double
backward of that epilogue backward is a math path (a vjp through reference.epilogue_backward),
so gradients of any order work (path-length regularization) and are tested against the reference.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch
import torch.nn.functional as F

from ganfast import backends
from ganfast.ops._autograd import vjp as autograd_vjp
from ganfast.ops._layout import is_eager
from ganfast.ops.bias_act.reference import ACTIVATIONS
from ganfast.ops.modulated_conv2d import reference
from ganfast.ops.modulated_conv2d.reference import (conv2d_resample_ref, demod_coefficients, fp16_prenormalize,
                                                    modulated_conv2d_ref, resample_padding)
from ganfast.ops.upfirdn2d import upfirdn2d
from ganfast.ops.upfirdn2d.reference import IntPair, parse_padding

__all__ = ["modulated_conv2d", "conv2d_resample", "conv2d_resample_ref", "demod_coefficients", "fp16_prenormalize"]

OP = "modulated_conv2d"
backends.register_op(OP, backends.FUSED_OP_DTYPES, grad_orders={"cpu": None, "triton": None, "cuda": None})


def _impl(name: str):
    """The module implementing the kernel contracts (demod_coefficients, epilogue_forward,
    epilogue_backward; triton also forward) on backend `name`."""
    return backends.kernel_module(OP, name)


def _acc(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _opt(t: Optional[torch.Tensor], dtype: torch.dtype) -> Optional[torch.Tensor]:
    return None if t is None else t.to(dtype).contiguous()


def _noise_view(noise: Optional[torch.Tensor], a: torch.Tensor) -> Optional[torch.Tensor]:
    return None if noise is None else noise.to(a.dtype).expand(a.shape)


def _noise_grad(dz: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return dz.to(_acc(dz)).sum_to_size(noise.shape).to(noise.dtype)


def _dz_of(da: torch.Tensor, dcoef: Optional[torch.Tensor]) -> torch.Tensor:
    """dL/dz from dL/da = dz * dcoef (dcoef > 0: an rsqrt)."""
    return da if dcoef is None else da / dcoef.to(da.dtype)[:, :, None, None]


def _dz_graph(g, a, dcoef, noise, bias, act, alpha, gain, clamp) -> torch.Tensor:
    """dL/dz in the accumulation dtype as a differentiable expression of (g, a, dcoef, noise, bias):
    the noise gradient's source when a graph of the gradients is being built. da / dcoef has the
    same value, but its derivative in dcoef is two fp16 / bf16 terms (through da, and the
    division's own) that cancel only up to rounding, a spurious second-order gradient of styles
    and weight (issue 26: 0.002 in fp16 where float64 gives exactly 0). Costs a few elementwise
    passes, so it runs only there: fp16 / bf16 with a graph being built (path-length
    regularization; +5% on a 64-channel CPU step); the plain backward, and fp32, where the
    residue is fp32 rounding, keep da / dcoef."""
    acc = _acc(a)
    return reference.epilogue_backward(g, a.to(acc) * dcoef.to(acc)[:, :, None, None], None, noise, bias,
                                       act, alpha, gain, clamp)[0]


# ---- ganfast::modconv_demod: dcoef [N, Cout] ----

def _demod(weight, styles, backend):
    return _impl(backend).demod_coefficients(weight.contiguous(), styles.to(_acc(weight)).contiguous())


@torch.library.custom_op("ganfast::modconv_demod", mutates_args=())
def _demod_op(weight: torch.Tensor, styles: torch.Tensor, backend: str) -> torch.Tensor:
    return _demod(weight, styles, backend)


@_demod_op.register_fake
def _(weight, styles, backend):
    return weight.new_empty(styles.shape[0], weight.shape[0], dtype=_acc(weight))


def _demod_setup(ctx, inputs, output):
    weight, styles, backend = inputs
    ctx.save_for_backward(weight, styles, output)


def _demod_backward(ctx, dd):
    """dcoef = q^-1/2 with q = styles^2 @ wsq^T + 1e-8, wsq = sum_k weight^2: plain torch ops, so
    the double backward is autograd's."""
    weight, styles, d = ctx.saved_tensors
    dq = dd * d.pow(3) * -0.5                                  # [N, Cout]
    w = weight.to(d.dtype)
    s = styles.to(d.dtype)
    d_styles = d_weight = None
    if ctx.needs_input_grad[1]:
        d_styles = (2 * s * (dq @ w.square().sum(dim=[2, 3]))).to(styles.dtype)
    if ctx.needs_input_grad[0]:
        d_weight = (2 * w * (dq.t() @ s.square())[:, :, None, None]).to(weight.dtype)
    return d_weight, d_styles, None


_demod_op.register_autograd(_demod_backward, setup_context=_demod_setup)


class _DemodFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight, styles, backend):
        out = _demod(weight, styles, backend)
        _demod_setup(ctx, (weight, styles, backend), out)
        return out

    @staticmethod
    def backward(ctx, dd):
        return _demod_backward(ctx, dd)


# ---- ganfast::modconv_epilogue and its backward ----

def _epilogue_forward(a, dcoef, noise, bias, act, alpha, gain, clamp, backend):
    acc = _acc(a)
    a = a.contiguous()
    return _impl(backend).epilogue_forward(a, _opt(dcoef, acc), _noise_view(noise, a), _opt(bias, acc),
                                           act, alpha, gain, clamp)


def _epilogue_backward(g, a, dcoef, noise, bias, act, alpha, gain, clamp, backend):
    acc = _acc(a)
    a = a.contiguous()
    return _impl(backend).epilogue_backward(g.contiguous(), a, _opt(dcoef, acc), _noise_view(noise, a),
                                            _opt(bias, acc), act, alpha, gain, clamp)


@torch.library.custom_op("ganfast::modconv_epilogue", mutates_args=())
def _epilogue_op(a: torch.Tensor, dcoef: Optional[torch.Tensor], noise: Optional[torch.Tensor],
                 bias: Optional[torch.Tensor], act: str, alpha: float, gain: float, clamp: float,
                 backend: str) -> torch.Tensor:
    return _epilogue_forward(a, dcoef, noise, bias, act, alpha, gain, clamp, backend)


@torch.library.custom_op("ganfast::modconv_epilogue_backward", mutates_args=())
def _epilogue_backward_op(g: torch.Tensor, a: torch.Tensor, dcoef: Optional[torch.Tensor],
                          noise: Optional[torch.Tensor], bias: Optional[torch.Tensor], act: str, alpha: float,
                          gain: float, clamp: float, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    return _epilogue_backward(g, a, dcoef, noise, bias, act, alpha, gain, clamp, backend)


@_epilogue_op.register_fake
def _(a, dcoef, noise, bias, act, alpha, gain, clamp, backend):
    return torch.empty_like(a, memory_format=torch.contiguous_format)


@_epilogue_backward_op.register_fake
def _(g, a, dcoef, noise, bias, act, alpha, gain, clamp, backend):
    return (torch.empty_like(a, memory_format=torch.contiguous_format),
            a.new_empty(a.shape[0], a.shape[1], 2, dtype=_acc(a)))


def _epilogue_setup(ctx, inputs, output):
    a, dcoef, noise, bias, act, alpha, gain, clamp, backend = inputs
    ctx.save_for_backward(a, dcoef, noise, bias)
    ctx.args = (act, alpha, gain, clamp, backend)


def _epilogue_grads(need, g, da, sums, a, dcoef, noise, bias, args):
    """(d_a, d_dcoef, d_noise, d_bias) from the epilogue backward's (da, sums) of g = dL/dout;
    need: which of (a, dcoef, noise, bias) want a gradient; args: (act, alpha, gain, clamp, ...)."""
    d_dcoef = sums[..., 1].to(dcoef.dtype) if dcoef is not None and need[1] else None
    d_noise = None
    if noise is not None and need[2]:
        graph = dcoef is not None and torch.is_grad_enabled() and da.dtype in (torch.float16, torch.bfloat16)
        d_noise = _noise_grad(_dz_graph(g, a, dcoef, noise, bias, *args[:4]) if graph else _dz_of(da, dcoef), noise)
    d_bias = sums[..., 0].sum(0).to(bias.dtype) if bias is not None and need[3] else None
    return da if need[0] else None, d_dcoef, d_noise, d_bias


def _backward_op(eager: bool):
    """The epilogue backward to call from a backward: the Function twin in eager mode, skipped
    for the bare kernel when no graph of the gradient is being built (no double backward)."""
    if not eager:
        return torch.ops.ganfast.modconv_epilogue_backward
    return _EpilogueBackwardFn.apply if torch.is_grad_enabled() else _epilogue_backward


def _epilogue_backward_of_forward(ctx, dout, eager=False):
    a, dcoef, noise, bias = ctx.saved_tensors
    da, sums = _backward_op(eager)(dout, a, dcoef, noise, bias, *ctx.args)
    return _epilogue_grads(ctx.needs_input_grad, dout, da, sums, a, dcoef, noise, bias, ctx.args) + (None,) * 5


def _epilogue_backward_setup(ctx, inputs, output):
    g, a, dcoef, noise, bias, act, alpha, gain, clamp, backend = inputs
    ctx.save_for_backward(g, a, dcoef, noise, bias)
    ctx.args = (act, alpha, gain, clamp)


def _epilogue_backward_of_backward(ctx, gda, gsums):
    """The double backward: vjp through reference.epilogue_backward (same contract, any order)."""
    g, a, dcoef, noise, bias = ctx.saved_tensors
    names = ("g", "a", "dcoef", "noise", "bias")
    values = dict(zip(names, (g, a, dcoef, noise, bias)))
    present = [k for k in names if values[k] is not None]

    def first(*args):
        v = dict(values, **dict(zip(present, args)))
        return reference.epilogue_backward(v["g"], v["a"], v["dcoef"], v["noise"], v["bias"], *ctx.args)

    outs, vjp = autograd_vjp(first, *(values[k] for k in present))
    cot = tuple(c if c is not None else torch.zeros_like(o) for c, o in zip((gda, gsums), outs))
    grads = dict(zip(present, vjp(cot)))
    return tuple(grads.get(k) for k in names) + (None,) * 5


_epilogue_op.register_autograd(_epilogue_backward_of_forward, setup_context=_epilogue_setup)
_epilogue_backward_op.register_autograd(_epilogue_backward_of_backward, setup_context=_epilogue_backward_setup)


class _EpilogueFn(torch.autograd.Function):
    # the scalar arguments travel as one tuple: apply() walks its arguments in Python, ~1 us each
    @staticmethod
    def forward(ctx, a, dcoef, noise, bias, args):
        out = _epilogue_forward(a, dcoef, noise, bias, *args)
        _epilogue_setup(ctx, (a, dcoef, noise, bias) + args, out)
        return out

    @staticmethod
    def backward(ctx, dout):
        return _epilogue_backward_of_forward(ctx, dout, eager=True)[:4] + (None,)


class _EpilogueBackwardFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g, a, dcoef, noise, bias, act, alpha, gain, clamp, backend):
        out = _epilogue_backward(g, a, dcoef, noise, bias, act, alpha, gain, clamp, backend)
        _epilogue_backward_setup(ctx, (g, a, dcoef, noise, bias, act, alpha, gain, clamp, backend), out)
        return out

    @staticmethod
    def backward(ctx, gda, gsums):
        return _epilogue_backward_of_backward(ctx, gda, gsums)


# ---- ganfast::modconv_fused: the one-kernel convolution + epilogue (triton) ----

def _fused_out_shape(x, weight, px0, px1, py0, py1):
    return (x.shape[0], weight.shape[0], x.shape[2] + py0 + py1 - weight.shape[2] + 1,
            x.shape[3] + px0 + px1 - weight.shape[3] + 1)


def _fused_forward(x, weight, styles, dcoef, noise, bias, px0, px1, py0, py1, flip_weight, act, alpha, gain,
                   clamp, want_a, backend):
    shape = _fused_out_shape(x, weight, px0, px1, py0, py1)
    noise = None if noise is None else noise.to(x.dtype).expand(shape)
    acc = _acc(x)
    out, a = _impl(backend).forward(x.contiguous(), weight.contiguous(), styles.to(acc).contiguous(),
                                    _opt(dcoef, acc), noise, _opt(bias, acc),
                                    (px0, px1, py0, py1), flip_weight, act, alpha, gain, clamp, want_a)
    return out, (a if a is not None else out.new_empty(0))


@torch.library.custom_op("ganfast::modconv_fused", mutates_args=())
def _fused_op(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, dcoef: Optional[torch.Tensor],
              noise: Optional[torch.Tensor], bias: Optional[torch.Tensor], px0: int, px1: int, py0: int, py1: int,
              flip_weight: bool, act: str, alpha: float, gain: float, clamp: float, want_a: bool,
              backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    return _fused_forward(x, weight, styles, dcoef, noise, bias, px0, px1, py0, py1, flip_weight, act, alpha,
                          gain, clamp, want_a, backend)


@_fused_op.register_fake
def _(x, weight, styles, dcoef, noise, bias, px0, px1, py0, py1, flip_weight, act, alpha, gain, clamp, want_a, backend):
    shape = _fused_out_shape(x, weight, px0, px1, py0, py1)
    return x.new_empty(shape), x.new_empty(shape if want_a else (0,))


def _fused_setup(ctx, inputs, output):
    x, weight, styles, dcoef, noise, bias, px0, px1, py0, py1, flip_weight, act, alpha, gain, clamp, want_a, backend = inputs
    ctx.save_for_backward(x, weight, styles, dcoef, noise, bias, output[1])
    ctx.pad = (px0, px1, py0, py1)
    ctx.flip_weight = flip_weight
    ctx.args = (act, alpha, gain, clamp, backend)


def _fused_backward(ctx, dout, da_extra, eager=False):
    """Gradients of the fused forward: the epilogue backward (fused), then torch's convolution
    gradients (differentiable, so the double backward is autograd's through them)."""
    x, weight, styles, dcoef, noise, bias, a = ctx.saved_tensors
    if a.ndim != 4:   # the [0] placeholder (an empty batch's real a is [0, Cout, H', W'])
        raise RuntimeError("ganfast.ops.modulated_conv2d: the fused forward ran without saving its "
                           "pre-epilogue output (want_a=False) but a gradient was requested")
    da, sums = _backward_op(eager)(dout, a, dcoef, noise, bias, *ctx.args)
    need = ctx.needs_input_grad
    _, d_dcoef, d_noise, d_bias = _epilogue_grads((False,) + tuple(need[3:6]), dout, da, sums, a, dcoef, noise, bias,
                                                  ctx.args)
    if da_extra is not None and da_extra.numel():  # a is an output too (the double backward uses it)
        da = da + da_extra
    px0, px1, py0, py1 = ctx.pad
    d_x = d_weight = d_styles = None
    if need[0] or need[1] or need[2]:
        w = weight if ctx.flip_weight else weight.flip([2, 3])
        s = styles.to(x.dtype)[:, :, None, None]
        if need[0] or need[2]:
            padded = (x.shape[0], x.shape[1], x.shape[2] + py0 + py1, x.shape[3] + px0 + px1)
            dxs = torch.nn.grad.conv2d_input(padded, w, da)[:, :, py0:py0 + x.shape[2], px0:px0 + x.shape[3]]
            d_x = dxs * s if need[0] else None
            d_styles = (dxs.to(_acc(x)) * x.to(_acc(x))).sum(dim=[2, 3]).to(styles.dtype) if need[2] else None
        if need[1]:
            xs = F.pad(x * s, [px0, px1, py0, py1])
            d_weight = torch.nn.grad.conv2d_weight(xs, w.shape, da)
            d_weight = d_weight if ctx.flip_weight else d_weight.flip([2, 3])
    return (d_x, d_weight, d_styles, d_dcoef, d_noise, d_bias) + (None,) * 11


_fused_op.register_autograd(_fused_backward, setup_context=_fused_setup)


class _FusedFn(torch.autograd.Function):
    # args: (px0, px1, py0, py1, flip_weight, act, alpha, gain, clamp, want_a, backend), one tuple
    @staticmethod
    def forward(ctx, x, weight, styles, dcoef, noise, bias, args):
        inputs = (x, weight, styles, dcoef, noise, bias) + args
        out = _fused_forward(*inputs)
        _fused_setup(ctx, inputs, out)
        return out

    @staticmethod
    def backward(ctx, dout, da_extra):
        return _fused_backward(ctx, dout, da_extra, eager=True)[:6] + (None,)


# ---- the fused backends' composition ----

def _modulated_conv2d_fused(x, weight, styles, noise, up, down, padding, resample_filter, demodulate, flip_weight,
                            bias, act, alpha, gain, clamp, fp16_safeguard, backend):
    n, cin = x.shape[:2]
    weight = weight.to(x.dtype)
    styles = styles.to(x.dtype)
    if fp16_safeguard and demodulate:
        weight, styles = fp16_prenormalize(weight, styles)
    eager = is_eager(x, weight, styles, noise, bias, resample_filter)
    # eager and nothing to differentiate: the kernels alone, without autograd's bookkeeping
    grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, styles, noise, bias))
    dcoef = None
    if demodulate:
        if not eager:
            dcoef = torch.ops.ganfast.modconv_demod(weight, styles, backend)
        else:
            dcoef = _DemodFn.apply(weight, styles, backend) if grad else _demod(weight, styles, backend)
    pad = resample_padding(resample_filter, up, down, padding)
    if backend == "triton" and up == 1 and down == 1 and min(pad) >= 0:
        tensors = (x, weight, styles, dcoef, noise, bias)
        args = tuple(pad) + (bool(flip_weight), act, alpha, gain, clamp, grad, backend)
        if not eager:
            return torch.ops.ganfast.modconv_fused(*tensors, *args)[0]
        return (_FusedFn.apply(*tensors, args) if grad else _fused_forward(*tensors, *args))[0]
    # the convolution through torch (oneDNN / cuDNN; up and down as a transposed or strided
    # convolution at the low resolution), resampling through the fused upfirdn2d
    a = conv2d_resample_ref(x * styles.reshape(n, cin, 1, 1), weight, resample_filter, up, down, padding,
                            flip_weight=flip_weight, upfirdn2d=functools.partial(upfirdn2d, backend=backend))
    args = (act, alpha, gain, clamp, backend)
    if not eager:
        return torch.ops.ganfast.modconv_epilogue(a, dcoef, noise, bias, *args)
    return _EpilogueFn.apply(a, dcoef, noise, bias, args) if grad else _epilogue_forward(a, dcoef, noise, bias, *args)


# ---- public API ----

def conv2d_resample(x: torch.Tensor, w: torch.Tensor, f: Optional[torch.Tensor] = None, up: int = 1, down: int = 1,
                    padding: IntPair = 0, groups: int = 1, flip_weight: bool = True, flip_filter: bool = False,
                    backend: Optional[str] = None) -> torch.Tensor:
    """A plain (unmodulated) convolution with StyleGAN2's resampling: the layers of its
    discriminator and mapping-free convolutions.

    x [N, C, H, W], w [Cout, C / groups, kh, kw], f the resample filter (see setup_filter).
    Upsample by `up` through f (gain up^2), pad (`padding` relative to the upsampled image),
    convolve (flip_weight=True: correlation, as torch's conv2d), filter with f and keep every
    down-th pixel. The convolution is torch's (oneDNN / cuDNN; up and down as a transposed or
    strided convolution at the low resolution); the resampling is ganfast's upfirdn2d on
    `backend` (None: automatic), so backend='reference' gives the plain-PyTorch spec.
    Returns [N, Cout, H', W'] in x's dtype; differentiable to any order.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"conv2d_resample: x must be a floating [N, C, H, W] tensor, got {_shape(x)}")
    if not isinstance(w, torch.Tensor) or w.ndim != 4 or w.shape[1] * groups != x.shape[1]:
        raise ValueError(f"conv2d_resample: w must be [Cout, {x.shape[1] // max(groups, 1)}, kh, kw] "
                         f"(C / groups from x), got {_shape(w)}")
    return conv2d_resample_ref(x, w, f, up, down, padding, groups, flip_weight, flip_filter,
                               upfirdn2d=functools.partial(upfirdn2d, backend=backend))


def _shape(t) -> str:
    return str(list(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor,
                     noise: Optional[torch.Tensor] = None, up: int = 1, down: int = 1, padding: IntPair = 0,
                     resample_filter: Optional[torch.Tensor] = None, demodulate: bool = True,
                     flip_weight: bool = True, fused_modconv: Optional[bool] = None,
                     bias: Optional[torch.Tensor] = None,
                     act: str = "linear", alpha: Optional[float] = None, gain: float = 1.0,
                     clamp: Optional[float] = None, fp16_safeguard: Optional[bool] = None,
                     backend: Optional[str] = None) -> torch.Tensor:
    """Modulated (and demodulated) 2-D convolution with resampling and a fused epilogue.

    Args:
        x: [N, Cin, H, W]. weight: [Cout, Cin, kh, kw]. styles: [N, Cin].
        noise: broadcastable to the output [N, Cout, H', W'] (already scaled), or None.
        up, down: resampling factors (ints >= 1) through resample_filter (see setup_filter).
        padding: int, [x, y] or [x0, x1, y0, y1], relative to the upsampled image.
        demodulate: divide each (sample, output channel) by the norm of its modulated weights.
        flip_weight: True = correlation (torch's conv2d), False = true convolution.
        fused_modconv: the reference's formulation (grouped conv: True, scale-conv-scale: False,
            None: the faster for the shape, see reference.prefer_grouped); the same math, so the
            fused backends ignore it (they compute the scaled one). Only non-finite styles or
            weights tell them apart: grouped, a NaN style sits in the sample's weights and meets
            the zero padding (NaN * 0), so the whole sample is NaN; scaled, outputs whose window
            holds only padding stay finite. The triton backend's fused convolution (up = down
            = 1, no cropping) also multiplies the zero padding by styles * weight, so there a
            non-finite style or weight makes every output that touches padding NaN.
        bias, act, alpha, gain, clamp: the epilogue, as bias_act (gain default 1; clamp None: none).
        fp16_safeguard: pre-normalize weight and styles (StyleGAN2's fp16 recipe); None: when x is
            fp16 and demodulate.
        backend: None (automatic), 'reference', 'cpu', 'triton' or 'cuda'.

    Returns: [N, Cout, H', W'] in x's dtype (weight and styles are cast to it, as in StyleGAN2),
    differentiable to any order on every backend.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"modulated_conv2d: x must be a floating [N, Cin, H, W] tensor, got {_shape(x)}")
    n, cin = x.shape[:2]
    if not isinstance(weight, torch.Tensor) or weight.ndim != 4 or weight.shape[1] != cin:
        raise ValueError(f"modulated_conv2d: weight must be [Cout, {cin}, kh, kw] (Cin from x), got {_shape(weight)}")
    cout = weight.shape[0]
    if not isinstance(styles, torch.Tensor) or tuple(styles.shape) != (n, cin):
        raise ValueError(f"modulated_conv2d: styles must be [{n}, {cin}] ([N, Cin]), got {_shape(styles)}")
    if bias is not None and (not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (cout,)):
        raise ValueError(f"modulated_conv2d: bias must be [{cout}] ([Cout]), got {_shape(bias)}")
    if act not in ACTIVATIONS:
        raise ValueError(f"modulated_conv2d: act must be one of {list(ACTIVATIONS)}, got {act!r}")
    if clamp is not None and clamp != -1 and clamp < 0:
        raise ValueError(f"modulated_conv2d: clamp must be None or >= 0, got {clamp}")
    for t, name in ((weight, "weight"), (styles, "styles"), (bias, "bias"), (noise, "noise"), (resample_filter, "resample_filter")):
        if isinstance(t, torch.Tensor) and t.device != x.device:
            raise ValueError(f"modulated_conv2d: {name} must be on x's device {x.device}, got {t.device}")
    for v, name in ((up, "up"), (down, "down")):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"modulated_conv2d: {name} must be an int >= 1, got {v!r}")
    parse_padding(padding)
    requested = backends.requested_backend(backend)
    name = "reference" if requested == "reference" else backends.select(OP, (x,), requested)
    alpha = float(ACTIVATIONS[act].def_alpha if alpha is None else alpha)
    clamp = -1.0 if clamp is None else float(clamp)
    if fp16_safeguard is None:
        fp16_safeguard = x.dtype == torch.float16 and demodulate
    if name == "reference":
        return modulated_conv2d_ref(x, weight, styles, noise, up, down, padding, resample_filter, demodulate,
                                    flip_weight, fused_modconv, bias, act, alpha, float(gain), clamp, fp16_safeguard)
    return _modulated_conv2d_fused(x, weight, styles, noise, up, down, padding, resample_filter, demodulate,
                                   flip_weight, bias, act, alpha, float(gain), clamp, fp16_safeguard, name)
