"""Conditional batch norm (BigGAN's ccbn), with optional cross-replica statistics.

Two passes forward (statistics, then normalize + per-sample affine + ReLU in one write), two
backward (per-plane sums, then dx), whatever the backend; the kernels are in cpu.py / triton.py /
cuda.py (contract at the end of reference.py). Between the passes, [C]-sized work in torch: the
combination of statistics, across processes when a process group is given (an all-gather of
(count, mean, M2) forward, an all-reduce of two [C] sums backward), and the running statistics.

Autograd: two torch custom ops, ganfast::cbn_forward and ganfast::cbn_backward (register_fake +
register_autograd), with autograd.Function twins for eager calls. The backward op's own gradient
(the double backward) is a vjp through the reference's gradient, so every backend gives gradients
of any order. With a process group the autograd.Function path is taken (a process group is not a
custom-op argument type) and the double backward differentiates the reference through
torch.distributed.nn's differentiable all-gather.
"""
from __future__ import annotations

from typing import Optional

import torch

from ganfast import _ext, backends
from ganfast.ops._autograd import vjp as autograd_vjp
from ganfast.ops._layout import is_eager
from ganfast.ops.conditional_batch_norm import reference
from ganfast.ops.conditional_batch_norm.reference import (ACTIVATIONS, acc_dtype, combine_stats,
                                                          conditional_batch_norm_ref, update_running_stats)

__all__ = ["batch_norm", "conditional_batch_norm", "conditional_batch_norm_ref"]

OP = "conditional_batch_norm"
backends.register_op(OP, backends.FUSED_OP_DTYPES, grad_orders={"cpu": None, "triton": None, "cuda": None})


def _impl(name: str):
    return reference if name == "reference" else backends.kernel_module(OP, name)


def _count(x: torch.Tensor) -> int:
    return x.shape[0] * x.shape[2] * x.shape[3]


def _global_stats(st: torch.Tensor, count: int, group) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total count [], mean [C], biased var [C]) from this process's channel_stats [C, 2]."""
    mean, m2 = st[:, 0].contiguous(), st[:, 1].contiguous()   # [C] each, own storage
    cnt = torch.full((), float(count), dtype=st.dtype, device=st.device)   # a fill, not a host-to-device copy
    if group is not None:
        import torch.distributed as dist
        part = torch.cat([cnt.reshape(1), mean, m2]).unsqueeze(0)
        parts = part.new_empty(dist.get_world_size(group), part.shape[1])
        dist.all_gather_into_tensor(parts, part, group=group)
        c = mean.shape[0]
        cnt, mean, m2 = combine_stats(parts[:, 0], parts[:, 1:1 + c], parts[:, 1 + c:])
    return cnt, mean, m2 / cnt


def _forward(x, gain, bias, run_mean, run_var, training, eps, relu, backend, group=None):
    """(y, mean [C], var [C], count []) on `backend`; x NCHW-contiguous, gain/bias [N, C] in acc dtype."""
    impl = _impl(backend)
    acc = acc_dtype(x)
    if training:
        cnt, mean, var = _global_stats(impl.channel_stats(x), _count(x), group)
    else:
        mean, var = run_mean.to(acc, copy=True), run_var.to(acc, copy=True)   # outputs never alias inputs
        cnt = torch.full((), float(_count(x)), dtype=acc, device=x.device)
    rstd = torch.rsqrt(var + eps)
    return impl.forward_apply(x, mean, rstd, gain, bias, relu), mean, var, cnt


def _backward(dy, x, gain, bias, mean, var, cnt, training, eps, relu, backend, group=None):
    """(dx, dgain [N, C], dbias [N, C]) in acc dtype (dx in x's dtype)."""
    impl = _impl(backend)
    dy = dy.contiguous()
    rstd = torch.rsqrt(var + eps)
    sums = impl.backward_sums(dy, x, mean, rstd, gain, bias, relu)
    dbias, dgain = sums[..., 0].contiguous(), sums[..., 1].contiguous()   # own storage: custom-op outputs never alias
    if training:
        ab = torch.stack([(gain * dbias).sum(0), (gain * dgain).sum(0)])   # [2, C]
        if group is not None:
            import torch.distributed as dist
            dist.all_reduce(ab, group=group)
        c1, c2 = ab[0] / cnt, ab[1] / cnt
    else:
        c1 = c2 = torch.zeros_like(mean)
    return impl.backward_dx(dy, x, mean, rstd, gain, bias, relu, c1, c2), dgain, dbias


# ---- custom ops ----

@torch.library.custom_op("ganfast::cbn_forward", mutates_args=())
def _cbn_forward_op(x: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor, run_mean: Optional[torch.Tensor],
                    run_var: Optional[torch.Tensor], training: bool, eps: float, relu: bool,
                    backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return _forward(x, gain, bias, run_mean, run_var, training, eps, relu, backend)


@_cbn_forward_op.register_fake
def _(x, gain, bias, run_mean, run_var, training, eps, relu, backend):
    c = x.shape[1]
    return torch.empty_like(x), gain.new_empty(c), gain.new_empty(c), gain.new_empty(())


@torch.library.custom_op("ganfast::cbn_backward", mutates_args=())
def _cbn_backward_op(dy: torch.Tensor, x: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor, mean: torch.Tensor,
                     var: torch.Tensor, cnt: torch.Tensor, run_mean: Optional[torch.Tensor],
                     run_var: Optional[torch.Tensor], training: bool, eps: float, relu: bool,
                     backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _backward(dy, x, gain, bias, mean, var, cnt, training, eps, relu, backend)


@_cbn_backward_op.register_fake
def _(dy, x, gain, bias, mean, var, cnt, run_mean, run_var, training, eps, relu, backend):
    return torch.empty_like(x), torch.empty_like(gain), torch.empty_like(gain)


def _setup_forward(ctx, inputs, output, group=None):
    x, gain, bias, run_mean, run_var, training, eps, relu, backend = inputs
    _, mean, var, cnt = output
    ctx.mark_non_differentiable(mean, var, cnt)
    # eval: the running statistics are saved for the double backward's reference (training
    # updates them in place right after this, and does not need them)
    if training:
        run_mean = run_var = None
    ctx.save_for_backward(x, gain, bias, mean, var, cnt, run_mean, run_var)
    ctx.args = (training, eps, relu, backend)
    ctx.group = group


def _backward_of_forward(ctx, dy, dmean, dvar, dcnt, backward_fn=None):
    x, gain, bias, mean, var, cnt, run_mean, run_var = ctx.saved_tensors
    training, eps, relu, backend = ctx.args
    if dy is None:
        return (None,) * 9
    if backward_fn is None:
        dx, dgain, dbias = torch.ops.ganfast.cbn_backward(dy, x, gain, bias, mean, var, cnt, run_mean, run_var,
                                                          training, eps, relu, backend)
    elif not torch.is_grad_enabled():
        # no graph of the gradient is being built: skip the Function only the double backward needs
        dx, dgain, dbias = _backward(dy, x, gain, bias, mean, var, cnt, training, eps, relu, backend, ctx.group)
    else:
        dx, dgain, dbias = backward_fn(dy, x, gain, bias, mean, var, cnt, run_mean, run_var, training, eps, relu,
                                       backend, ctx.group)
    need = ctx.needs_input_grad
    return (dx if need[0] else None, dgain if need[1] else None, dbias if need[2] else None) + (None,) * 6


def _setup_backward(ctx, inputs, output, group=None):
    dy, x, gain, bias, mean, var, cnt, run_mean, run_var, training, eps, relu, backend = inputs[:13]
    ctx.save_for_backward(dy, x, gain, bias, run_mean, run_var)
    ctx.args = (training, eps, relu)
    ctx.group = group


def _reference_grads(dy, x, gain, bias, run_mean, run_var, training, eps, relu, group):
    """(dx, dgain, dbias) of the reference, as a differentiable function of its arguments."""
    act = "relu" if relu else None
    if training:
        run_mean = run_var = None   # batch statistics; nothing to update
    if group is None:
        def f(x_, g_, b_):
            return conditional_batch_norm_ref(x_, g_, b_, run_mean, run_var, training, 0.0, eps, act)
        return torch.func.vjp(f, x, gain, bias)[1](dy)
    # torch.func does not compose with torch.distributed.nn's autograd.Functions: plain autograd
    with torch.enable_grad():
        ins = [t if t.requires_grad else t.detach().requires_grad_() for t in (x, gain, bias)]
        y = conditional_batch_norm_ref(*ins, run_mean, run_var, training, 0.0, eps, act, process_group=group)
        return torch.autograd.grad(y, ins, dy, create_graph=True)


def _backward_of_backward(ctx, gdx, gdgain, gdbias):
    """The double backward: vjp through the reference's gradient (any order)."""
    dy, x, gain, bias, run_mean, run_var = ctx.saved_tensors
    training, eps, relu = ctx.args
    cot = tuple(c if c is not None else torch.zeros_like(t) for c, t in ((gdx, x), (gdgain, gain), (gdbias, bias)))
    if ctx.group is None:
        def first(dy_, x_, g_, b_):
            return _reference_grads(dy_, x_, g_, b_, run_mean, run_var, training, eps, relu, None)
        grads = autograd_vjp(first, dy, x, gain, bias)[1](cot)
    else:
        with torch.enable_grad():
            ins = [t if t.requires_grad else t.detach().requires_grad_() for t in (dy, x, gain, bias)]
            outs = _reference_grads(*ins, run_mean, run_var, training, eps, relu, ctx.group)
            grads = torch.autograd.grad(outs, ins, cot, allow_unused=True, create_graph=torch.is_grad_enabled())
    return tuple(grads) + (None,) * 9


_cbn_forward_op.register_autograd(_backward_of_forward, setup_context=_setup_forward)
_cbn_backward_op.register_autograd(_backward_of_backward, setup_context=_setup_backward)


# ---- the same two ops as autograd.Functions: eager calls and process groups ----

class _CbnFn(torch.autograd.Function):
    # the scalar arguments travel as one tuple: apply() walks its arguments in Python, ~1 us each
    @staticmethod
    def forward(ctx, x, gain, bias, run_mean, run_var, args):
        training, eps, relu, backend, group = args
        out = _forward(x, gain, bias, run_mean, run_var, training, eps, relu, backend, group)
        _setup_forward(ctx, (x, gain, bias, run_mean, run_var, training, eps, relu, backend), out, group)
        return out

    @staticmethod
    def backward(ctx, dy, dmean, dvar, dcnt):
        return _backward_of_forward(ctx, dy, dmean, dvar, dcnt, backward_fn=_CbnBackwardFn.apply)[:5] + (None,)


class _CbnBackwardFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dy, x, gain, bias, mean, var, cnt, run_mean, run_var, training, eps, relu, backend, group):
        out = _backward(dy, x, gain, bias, mean, var, cnt, training, eps, relu, backend, group)
        _setup_backward(ctx, (dy, x, gain, bias, mean, var, cnt, run_mean, run_var, training, eps, relu, backend),
                        out, group)
        return out

    @staticmethod
    def backward(ctx, gdx, gdgain, gdbias):
        return _backward_of_backward(ctx, gdx, gdgain, gdbias) + (None,)


class _CbnStepFn(torch.autograd.Function):
    """The eager path on the C++ backends without a process group: the whole forward, and a
    first-order backward, each in one extension call (cbn_forward_step / cbn_backward_step: the
    same passes and [C]-sized ops as _forward / _backward). A backward that builds a graph (R1)
    goes through _CbnBackwardFn, whose own backward is the reference's vjp.

    gain, bias: [N, C], or [C] (batch_norm: one per channel, which the extension expands over N
    without a copy and whose gradients it sums over N, as autograd's expand would)."""

    @staticmethod
    def forward(ctx, x, gain, bias, run_mean, run_var, args):
        training, momentum, eps, relu, backend = args
        y, mean, var = _ext.extension(backend).cbn_forward_step(x, gain, bias, run_mean, run_var, training, momentum,
                                                                eps, relu)
        if training:
            run_mean = run_var = None   # batch statistics: the backward does not need them
        ctx.save_for_backward(x, gain, bias, mean, var, run_mean, run_var)
        ctx.args = (training, eps, relu, backend)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, gain, bias, mean, var, run_mean, run_var = ctx.saved_tensors
        training, eps, relu, backend = ctx.args
        if torch.is_grad_enabled():
            cnt = torch.full((), float(_count(x)), dtype=mean.dtype, device=x.device)
            n = x.shape[0]
            g = gain if gain.ndim == 2 else gain.expand(n, -1).contiguous()   # [C] -> [N, C], differentiably
            b = bias if bias.ndim == 2 else bias.expand(n, -1).contiguous()
            dx, dgain, dbias = _CbnBackwardFn.apply(dy, x, g, b, mean, var, cnt, run_mean, run_var, training,
                                                    eps, relu, backend, None)
            dgain, dbias = dgain.sum_to_size(gain.shape), dbias.sum_to_size(bias.shape)   # no-ops for [N, C]
        else:
            dx, dgain, dbias = _ext.extension(backend).cbn_backward_step(dy, x, gain, bias, mean, var, training, eps,
                                                                         relu)
        need = ctx.needs_input_grad
        return dx if need[0] else None, dgain if need[1] else None, dbias if need[2] else None, None, None, None


# ---- public API ----

def _check(x, gain, bias, running_mean, running_var, training, momentum, eps, act) -> None:
    who = "ganfast.ops.conditional_batch_norm"
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        got = f"shape {list(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{who}: x must be [N, C, H, W], got {got}")
    if not x.is_floating_point():
        raise ValueError(f"{who}: x must be a floating tensor, got {x.dtype}")
    n, c = x.shape[:2]
    for name, t in (("gain", gain), ("bias", bias)):
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != (n, c):
            got = f"shape {list(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{who}: {name} must be [N, C] = [{n}, {c}] (one value per sample and channel), got {got}")
        if t.device != x.device:
            raise ValueError(f"{who}: {name} must be on x's device {x.device}, got {t.device}")
        if not t.is_floating_point():
            raise ValueError(f"{who}: {name} must be a floating tensor, got {t.dtype}")
    for name, t in (("running_mean", running_mean), ("running_var", running_var)):
        if t is not None and (not isinstance(t, torch.Tensor) or tuple(t.shape) != (c,) or t.device != x.device):
            got = f"shape {list(t.shape)} on {t.device}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{who}: {name} must be a [C] = [{c}] tensor on {x.device}, got {got}")
        if t is not None and not t.is_floating_point():
            raise ValueError(f"{who}: {name} must be a floating tensor, got {t.dtype}")
    if not training and (running_mean is None or running_var is None):
        raise ValueError(f"{who}: training=False normalizes with the running statistics: running_mean and "
                         "running_var must be given")
    if training and x.shape[0] * x.shape[2] * x.shape[3] < 2 and running_var is not None:
        raise ValueError(f"{who}: expected more than 1 value per channel when training, got x of shape {list(x.shape)}")
    if not (isinstance(momentum, (int, float)) and 0 <= momentum <= 1):
        raise ValueError(f"{who}: momentum must be a number in [0, 1], got {momentum!r}")
    if not eps > 0:
        raise ValueError(f"{who}: eps must be > 0, got {eps!r}")
    if act not in ACTIVATIONS:
        raise ValueError(f"{who}: act must be one of {ACTIVATIONS}, got {act!r}")


def conditional_batch_norm(x: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor,
                           running_mean: Optional[torch.Tensor] = None, running_var: Optional[torch.Tensor] = None,
                           training: bool = True, momentum: float = 0.1, eps: float = 1e-5, act: Optional[str] = None,
                           process_group=None, backend: Optional[str] = None) -> torch.Tensor:
    """Class-conditional batch norm: (x - mean) * rsqrt(var + eps) * gain + bias, then `act`.

    Args:
        x: [N, C, H, W], fp16/bf16/fp32 (fp64 on cpu/reference). Kernels read contiguous NCHW
            (another layout is copied once).
        gain, bias: [N, C] per-sample scale and shift (BigGAN: 1 + linear(y), linear(y)).
        running_mean, running_var: [C] buffers (fp32), updated in place when training; used
            instead of the batch statistics when not training.
        training: batch statistics (True) or the running ones (False).
        momentum: running statistics move by this fraction (torch's BatchNorm rule; the module
            passes 1 / num_batches for a cumulative average, momentum=None there).
        eps: added to the variance.
        act: None or 'relu' (applied in the same pass).
        process_group: a torch.distributed process group: statistics over the whole group's
            batch (cross-replica / sync batch norm), forward and backward. gloo and NCCL.
        backend: None (automatic), 'reference', 'cpu', 'triton' or 'cuda'.

    Returns: [N, C, H, W] in x's dtype, contiguous. Statistics are fp32. Differentiable to any
    order in x, gain and bias on every backend.
    """
    _check(x, gain, bias, running_mean, running_var, training, momentum, eps, act)
    name = backends.select(OP, (x,), backend)
    # an empty x (N, C, H or W = 0): nothing for a kernel to do, and the extension's stride checks
    # would refuse the arbitrary strides of empty gains; the reference gives the empty results.
    # Training with one value a channel (no running statistics; x [1, C, 1, 1]): xhat = 0 and
    # dx = 0 exactly by the definition, which the fused backward leaves as a rounding residue
    # g dz - c1 (times rstd, up to 1 / sqrt(eps)); the reference's graph gives the exact 0.
    if name == "reference" or x.numel() == 0 or (training and _count(x) == 1):
        return conditional_batch_norm_ref(x, gain, bias, running_mean, running_var, training, momentum, eps, act,
                                          process_group)
    acc = acc_dtype(x)
    xk = x.contiguous()
    g, b = gain.to(acc).contiguous(), bias.to(acc).contiguous()
    relu = act == "relu"
    training, eps = bool(training), float(eps)
    if process_group is None and name in backends.EXTENSION_BACKENDS and is_eager(x, gain, bias):
        if torch.is_grad_enabled() and (x.requires_grad or gain.requires_grad or bias.requires_grad):
            return _CbnStepFn.apply(xk, g, b, running_mean, running_var, (training, float(momentum), eps, relu, name))
        # nothing to differentiate: one extension call, without autograd's bookkeeping
        return _ext.extension(name).cbn_forward_step(xk, g, b, running_mean, running_var, training, float(momentum),
                                                     eps, relu)[0]
    if process_group is not None or is_eager(x, gain, bias):
        if torch.is_grad_enabled() and (x.requires_grad or gain.requires_grad or bias.requires_grad):
            y, mean, var, cnt = _CbnFn.apply(xk, g, b, running_mean, running_var,
                                             (training, eps, relu, name, process_group))
        else:   # nothing to differentiate: the kernels alone, without autograd's bookkeeping
            y, mean, var, cnt = _forward(xk, g, b, running_mean, running_var, training, eps, relu, name, process_group)
    else:
        y, mean, var, cnt = torch.ops.ganfast.cbn_forward(xk, g, b, running_mean, running_var, training, eps, relu,
                                                          name)
    if training:
        update_running_stats(running_mean, running_var, momentum, cnt, mean, var)
    return y


def batch_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, running_mean: Optional[torch.Tensor],
               running_var: Optional[torch.Tensor], training: bool, momentum: float, eps: float,
               act: Optional[str] = None, process_group=None, backend: Optional[str] = None) -> torch.Tensor:
    """torch's batch norm with its per-channel affine, then `act`: conditional_batch_norm with
    gain = weight and bias = bias for every sample (ganfast.nn.BatchNormAct2d's op).

    Args:
        weight, bias: [C] (nn.BatchNorm2d's); the other arguments as conditional_batch_norm's.

    The same results, bit for bit, as conditional_batch_norm(x, weight.expand(N, -1),
    bias.expand(N, -1), ...). On the C++ backends' eager path without a process group, with
    weight and bias in the accumulation dtype (fp32; fp64 for fp64 x), the [C] tensors go to the
    extension as they are (its kernels read them with batch stride 0, and it sums their gradients
    over N as autograd's expand would), and the extension checks the arguments; every other call
    is that conditional_batch_norm call.
    """
    who = "ganfast.ops.conditional_batch_norm.batch_norm"
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        got = f"shape {list(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{who}: x must be [N, C, H, W], got {got}")
    c = x.shape[1]
    # named here as batch_norm's arguments (the generic op and the extension would say gain / bias)
    for arg, t in (("weight", weight), ("bias", bias)):
        if isinstance(t, torch.Tensor) and t.device != x.device:
            raise ValueError(f"{who}: {arg} must be on x's device {x.device}, got {t.device}")
        if isinstance(t, torch.Tensor) and not t.is_floating_point():
            raise ValueError(f"{who}: {arg} must be a floating tensor, got {t.dtype}")
    if (process_group is None and x.is_floating_point() and (act is None or act == "relu")
            and is_eager(x, weight, bias) and weight is not None and bias is not None
            and weight.shape == (c,) and bias.shape == (c,)):
        name = backends.select(OP, (x,), backend)
        acc = acc_dtype(x)
        stats_ok = _count(x) >= 2 if training else (running_mean is not None and running_var is not None)
        # anything else (another dtype, a value the generic checks reject): the generic call below
        if (name in backends.EXTENSION_BACKENDS and weight.dtype == acc and bias.dtype == acc and stats_ok
                and x.numel() > 0 and weight.is_contiguous() and bias.is_contiguous()
                and isinstance(momentum, (int, float)) and 0 <= momentum <= 1 and eps > 0):
            args = (bool(training), float(momentum), float(eps), act == "relu", name)
            if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad or bias.requires_grad):
                return _CbnStepFn.apply(x.contiguous(), weight, bias, running_mean, running_var, args)
            return _ext.extension(name).cbn_forward_step(x.contiguous(), weight, bias, running_mean, running_var,
                                                         *args[:4])[0]
    for arg, t in (("weight", weight), ("bias", bias)):
        if not isinstance(t, torch.Tensor) or t.shape != (c,):
            got = f"shape {list(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{who}: {arg} must be [C] = [{c}] (one value per channel), got {got}")
    n = x.shape[0]
    return conditional_batch_norm(x, weight.expand(n, -1), bias.expand(n, -1), running_mean, running_var, training,
                                  momentum, eps, act, process_group, backend)
