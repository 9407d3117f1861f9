"""adain_noise: StyleGAN's synthesis-layer epilogue (noise, bias, activation, instance norm,
AdaIN) fused into one forward pass and one backward pass, on every backend.

Autograd pattern (as bias_act):
  ganfast::adain_noise           (x, s, t, noise, ns, b) -> (out, stats)
  ganfast::adain_noise_backward  (g, x, s, noise, ns, b, stats) -> (dx, ds, dt, sdz, sdzn)
each with register_fake and register_autograd, plus the same two as autograd.Functions for eager
mode (torch.library's autograd wrapper costs ~50 us a call). The backward's own gradient (the
double backward that path-length regularization takes) is a math path: a vjp through the
reference backward, in float32 for fp16/bf16, taken automatically, correct to any order. stats
(mean and rstd per plane, 8 bytes each) is all the forward saves besides its inputs; seeded noise
is regenerated, never stored.

Parameter tensors are cast to the accumulation dtype (float32; float64 for float64 x) before the
kernels and a scalar noise strength is broadcast to [C] outside the autograd Functions, so autograd
itself casts and sums their gradients back.
"""
from __future__ import annotations

import numbers
from typing import Optional, Union

import torch

from ganfast import backends
from ganfast.ops._autograd import vjp as autograd_vjp
from ganfast.ops._layout import is_eager, layout_of
from ganfast.ops.adain_noise import reference
from ganfast.ops.adain_noise.reference import adain_noise_ref, draw_noise
from ganfast.ops.bias_act.reference import ACTIVATIONS

__all__ = ["adain_noise", "draw_noise"]

OP = "adain_noise"
backends.register_op(OP, backends.FUSED_OP_DTYPES, grad_orders={"cpu": None, "triton": None, "cuda": None})  # the double backward is a math path: any order


def _impl(name: str):
    """The module implementing the kernel contract (forward/backward, see reference.py)."""
    return backends.kernel_module(OP, name)


def _kernel_layout(x: torch.Tensor) -> torch.Tensor:
    """x when contiguous or channels_last (the layouts the kernels walk), else a contiguous copy."""
    if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last):
        return x
    return x.contiguous()


def _forward(x, s, t, noise, ns, b, act, alpha, gain, eps, seed, backend):
    x = _kernel_layout(x)
    name = backends.select(OP, (x, s, t, noise, ns, b), backend or None)
    return _impl(name).forward(x, s, t, noise, ns, b, act, alpha, gain, eps, seed)


def _backward(g, x, s, noise, ns, b, stats, act, alpha, gain, eps, seed, backend):
    x = _kernel_layout(x)
    g = layout_of(g, x)
    name = backends.select(OP, (x, g, s, noise, ns, b), backend or None)
    dx, ds, dt, sdz, sdzn = _impl(name).backward(g, x, s, noise, ns, b, stats, act, alpha, gain, eps, seed)
    return layout_of(dx, x), ds, dt, sdz, sdzn


# ---- custom ops ----

@torch.library.custom_op("ganfast::adain_noise", mutates_args=())
def _adain_noise_op(x: torch.Tensor, s: torch.Tensor, t: torch.Tensor, noise: Optional[torch.Tensor],
                    ns: Optional[torch.Tensor], b: Optional[torch.Tensor], act: str, alpha: float,
                    gain: float, eps: float, seed: int, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    return _forward(x, s, t, noise, ns, b, act, alpha, gain, eps, seed, backend)


@torch.library.custom_op("ganfast::adain_noise_backward", mutates_args=())
def _adain_noise_backward_op(g: torch.Tensor, x: torch.Tensor, s: torch.Tensor, noise: Optional[torch.Tensor],
                             ns: Optional[torch.Tensor], b: Optional[torch.Tensor], stats: torch.Tensor,
                             act: str, alpha: float, gain: float, eps: float, seed: int,
                             backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return _backward(g, x, s, noise, ns, b, stats, act, alpha, gain, eps, seed, backend)


@_adain_noise_op.register_fake
def _(x, s, t, noise, ns, b, act, alpha, gain, eps, seed, backend):
    return torch.empty_like(x), s.new_empty(x.shape[0], x.shape[1], 2)


@_adain_noise_backward_op.register_fake
def _(g, x, s, noise, ns, b, stats, act, alpha, gain, eps, seed, backend):
    return (torch.empty_like(x),) + tuple(s.new_empty(x.shape[0], x.shape[1]) for _ in range(4))


def _setup_forward(ctx, inputs, output):
    x, s, t, noise, ns, b, act, alpha, gain, eps, seed, backend = inputs
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(x, s, noise, ns, b, output[1])
    ctx.args = (act, alpha, gain, eps, seed, backend)


def _backward_of_forward(ctx, dout, dstats, backward_op=None):
    backward_op = backward_op or torch.ops.ganfast.adain_noise_backward
    x, s, noise, ns, b, stats = ctx.saved_tensors
    if dout is None:
        return (None,) * 12
    if backward_op == _AdainNoiseBackwardFn.apply and not torch.is_grad_enabled():
        # No graph of the gradient is being built (backward without create_graph): skip the
        # autograd.Function wrapper that only the double backward needs.
        dx, ds, dt, sdz, sdzn = _backward(dout, x, s, noise, ns, b, stats, *ctx.args)
    else:
        # (on the eager graph path dx comes in the accumulation dtype: see _AdainNoiseBackwardFn)
        dx, ds, dt, sdz, sdzn = backward_op(dout, x, s, noise, ns, b, stats, *ctx.args)
    need = ctx.needs_input_grad
    d_noise = None
    if noise is not None and need[3]:
        strength = ns.reshape(1, -1, 1, 1) if ns is not None else 1.0
        d_noise = (dx.to(s.dtype) * strength).sum(dim=1, keepdim=True)
        if noise.shape[0] == 1:
            d_noise = d_noise.sum(dim=0, keepdim=True)
        d_noise = d_noise.to(noise.dtype)
    d_ns = sdzn.sum(0) if ns is not None and need[4] else None  # sdzn is 0 without noise
    d_b = sdz.sum(0) if b is not None and need[5] else None
    return (dx.to(x.dtype), ds if need[1] else None, dt if need[2] else None, d_noise, d_ns, d_b) + (None,) * 6


def _setup_backward(ctx, inputs, output):
    g, x, s, noise, ns, b, stats, act, alpha, gain, eps, seed, backend = inputs
    ctx.save_for_backward(g, x, s, noise, ns, b)
    ctx.args = (act, alpha, gain, eps, seed)


def _backward_of_backward(ctx, gdx, gds, gdt, gsdz, gsdzn):
    """The double backward: vjp through the reference backward (same contract, any order)."""
    g, x, s, noise, ns, b = ctx.saved_tensors
    act, alpha, gain, eps, seed = ctx.args
    names = ("g", "x", "s", "noise", "ns", "b")
    present = [k for k, v in zip(names, (g, x, s, noise, ns, b)) if v is not None]
    values = dict(zip(names, (g, x, s, noise, ns, b)))

    def first(*args):
        v = dict(values, **dict(zip(present, args)))
        return reference.backward(v["g"], v["x"], v["s"], v["noise"], v["ns"], v["b"], None,
                                  act, alpha, gain, eps, seed, dx_acc=True)

    outs, vjp = autograd_vjp(first, *(values[k] for k in present))
    cot = tuple(c.to(o.dtype) if c is not None else torch.zeros_like(o)
                for c, o in zip((gdx, gds, gdt, gsdz, gsdzn), outs))
    cot = (layout_of(cot[0], outs[0]),) + cot[1:]
    grads = dict(zip(present, vjp(cot)))
    return tuple(grads.get(k) for k in names) + (None,) * 7


_adain_noise_op.register_autograd(_backward_of_forward, setup_context=_setup_forward)
_adain_noise_backward_op.register_autograd(_backward_of_backward, setup_context=_setup_backward)


# ---- the same two ops as autograd.Functions, for eager mode ----

class _AdainNoiseFn(torch.autograd.Function):
    # the scalar arguments travel as one tuple: apply() walks its arguments in Python, ~1 us each
    @staticmethod
    def forward(ctx, x, s, t, noise, ns, b, args):
        out = _forward(x, s, t, noise, ns, b, *args)
        _setup_forward(ctx, (x, s, t, noise, ns, b) + args, out)
        return out

    @staticmethod
    def backward(ctx, dout, dstats):
        return _backward_of_forward(ctx, dout, dstats, backward_op=_AdainNoiseBackwardFn.apply)[:6] + (None,)


class _AdainNoiseBackwardFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g, x, s, noise, ns, b, stats, act, alpha, gain, eps, seed, backend):
        if x.dtype in (torch.float16, torch.bfloat16) and ctx.needs_input_grad[3]:
            # A noise input that takes gradients (rare: StyleGAN's noise is a random input) on
            # fp16 / bf16: its gradient, sum_c dx * strength_c, is computed from dx outside this
            # Function, so its own gradient (in strength, x, ...) would differentiate a dx the
            # kernel rounded to x's dtype; the reference keeps that dx in fp32 (fuzzing found a
            # bf16 second-order gradient 1.5x over the rule). Here only, the fp32 math path.
            out = reference.backward(g, x, s, noise, ns, b, stats, act, alpha, gain, eps, seed, dx_acc=True)
        else:
            out = _backward(g, x, s, noise, ns, b, stats, act, alpha, gain, eps, seed, backend)
        _setup_backward(ctx, (g, x, s, noise, ns, b, stats, act, alpha, gain, eps, seed, backend), out)
        # dx in the accumulation dtype (s's): the noise gradient is computed from it outside this
        # Function, and its cotangent must reach the double backward unrounded, summed in fp32
        # with dx's own (an fp16 / bf16 dx would round that sum: fuzzing found a bf16
        # second-order style gradient 1.15x over the rule).
        return (out[0].to(s.dtype),) + tuple(out[1:])

    @staticmethod
    def backward(ctx, *grads):
        return _backward_of_backward(ctx, *grads)


# ---- public API ----

def _check_param(v, name: str, shape: tuple, x: torch.Tensor) -> None:
    if not isinstance(v, torch.Tensor):
        raise TypeError(f"adain_noise: {name} must be a torch.Tensor, got {type(v).__name__}")
    if tuple(v.shape) != shape:
        raise ValueError(f"adain_noise: {name} must have shape {list(shape)}, got {list(v.shape)}")
    if not v.is_floating_point():
        raise TypeError(f"adain_noise: {name} must be a floating-point tensor, got dtype {v.dtype}")
    if v.device != x.device:
        raise ValueError(f"adain_noise: {name} must be on x's device {x.device}, got {v.device}")


def _noise_arg(noise: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """noise as [Nn, 1, H, W] (Nn = N or 1) in x's dtype; [H, W] and [1, 1, H, W] are shared planes."""
    n_, _, h, w = x.shape
    if not isinstance(noise, torch.Tensor):
        raise TypeError(f"adain_noise: noise must be a torch.Tensor or None, got {type(noise).__name__}")
    shape = tuple(noise.shape)
    if shape == (h, w):
        noise = noise.reshape(1, 1, h, w)
    elif not (noise.ndim == 4 and shape[0] in (1, n_) and shape[1:] == (1, h, w)):
        raise ValueError(f"adain_noise: noise must have shape [{n_}, 1, {h}, {w}], [1, 1, {h}, {w}] "
                         f"or [{h}, {w}] for x of shape {list(x.shape)}, got {list(shape)}")
    if noise.device != x.device:
        raise ValueError(f"adain_noise: noise must be on x's device {x.device}, got {noise.device}")
    return noise.to(x.dtype).contiguous()


def adain_noise(x: torch.Tensor, style_scale: torch.Tensor, style_bias: torch.Tensor,
                noise: Optional[torch.Tensor] = None,
                noise_strength: Union[torch.Tensor, float, None] = None,
                bias: Optional[torch.Tensor] = None, act: str = "lrelu", alpha: float = 0.2,
                gain: float = 1.0, eps: float = 1e-8, seed: Optional[int] = None,
                backend: Optional[str] = None) -> torch.Tensor:
    """Noise injection + bias + activation + instance norm + AdaIN, fused.

        y   = act(x + noise_strength * noise + bias, alpha) * gain
        out = (y - mean_hw(y)) * rsqrt(var_hw(y) + eps) * style_scale + style_bias

    Args:
        x: [N, C, H, W] floating (fp16, bf16, fp32; fp64 on cpu and reference), any layout
            (contiguous and channels_last run natively; others are copied to contiguous).
        style_scale, style_bias: [N, C] (any floating dtype; computed in float32).
        noise: [N, 1, H, W], [1, 1, H, W] or [H, W] (one plane for the whole batch), or None.
        noise_strength: [C], a 0-d/1-element tensor or a float; None means 1 when noise is drawn
            or given. Without noise or seed, it is ignored.
        bias: [C] or None.
        act: a bias_act activation ('lrelu' default; 'linear', 'relu', 'tanh', ...).
        alpha: the lrelu slope (or elu alpha). gain: multiplier after the activation.
        eps: added to the biased variance.
        seed: with noise=None, draw standard-normal noise (one value per sample and pixel, shared
            by the channels) from this seed with ganfast's counter-based generator; the backward
            regenerates it. Same seed, same noise (reference.draw_noise shows it).
        backend: 'reference', 'cpu', 'triton', 'cuda' or None (automatic; see ganfast.backends).

    Returns: [N, C, H, W] in x's dtype and layout. Gradients for x, style_scale, style_bias,
    noise_strength, bias and noise; gradients of gradients (any order) through the math path.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        got = f"shape {list(x.shape)} dtype {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"adain_noise: x must be a floating [N, C, H, W] tensor, got {got}")
    if act not in ACTIVATIONS:
        raise ValueError(f"adain_noise: act must be one of {list(ACTIVATIONS)}, got {act!r}")
    if not eps > 0:
        raise ValueError(f"adain_noise: eps must be > 0, got {eps}")
    n_, c_, h, w = x.shape
    _check_param(style_scale, "style_scale", (n_, c_), x)
    _check_param(style_bias, "style_bias", (n_, c_), x)
    if bias is not None:
        _check_param(bias, "bias", (c_,), x)
    if seed is not None:
        if noise is not None:
            raise ValueError("adain_noise: pass noise or seed, not both")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2 ** 63:
            raise ValueError(f"adain_noise: seed must be an int in [0, 2**63) or None, got {seed!r}")
        seed = int(seed)
    if noise is not None:
        noise = _noise_arg(noise, x)
    has_noise = noise is not None or seed is not None
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    ns = None
    if noise_strength is not None and has_noise:
        if isinstance(noise_strength, numbers.Real):
            ns = torch.full((c_,), float(noise_strength), dtype=acc, device=x.device)
        else:
            if not isinstance(noise_strength, torch.Tensor) or noise_strength.numel() not in (1, c_) \
                    or noise_strength.ndim > 1 or (noise_strength.ndim == 1 and noise_strength.shape[0] not in (1, c_)):
                got = list(noise_strength.shape) if isinstance(noise_strength, torch.Tensor) else type(noise_strength).__name__
                raise ValueError(f"adain_noise: noise_strength must be a float, a 0-d or [1] tensor, or [{c_}], got {got}")
            ns = noise_strength.to(acc)
            if tuple(ns.shape) != (c_,):
                ns = ns.reshape(-1).expand(c_)  # a scalar: autograd sums its gradient back
            ns = ns.contiguous()   # the kernels read [C] densely (a strided [C] view used to reach them)
    s = style_scale.to(acc).contiguous()
    t = style_bias.to(acc).contiguous()
    b = bias.to(acc).contiguous() if bias is not None else None
    alpha, gain, eps = float(alpha), float(gain), float(eps)
    name = backends.requested_backend(backend)
    if name == "reference":
        nz = noise if seed is None else draw_noise(seed, n_, h, w, device=x.device, dtype=x.dtype)
        return adain_noise_ref(x, s, t, nz, ns, b, act, alpha, gain, eps, upcast=True)
    seed_arg = -1 if seed is None else seed
    if is_eager(x, s, t, noise, ns, b):
        if torch.is_grad_enabled() and any(v is not None and v.requires_grad for v in (x, s, t, noise, ns, b)):
            return _AdainNoiseFn.apply(x, s, t, noise, ns, b, (act, alpha, gain, eps, seed_arg, name or ""))[0]
        # nothing to differentiate: the kernel alone, without autograd's bookkeeping
        return _forward(x, s, t, noise, ns, b, act, alpha, gain, eps, seed_arg, name or "")[0]
    return torch.ops.ganfast.adain_noise(x, s, t, noise, ns, b, act, alpha, gain, eps, seed_arg, name or "")[0]
