"""SAGAN / BigGAN self-attention: y = x + gamma * w_o (g softmax(theta^T phi)^T).

What runs where (backend cpu or triton; the reference backend is reference.self_attention2d_ref):
- Projections: w_phi and w_g are stacked into one [Cq + Cv, C] matrix (one GEMM, whose output is
  already the [B, Cq + Cv, H, W] map the max-pool takes, so keys and values are pooled together in
  one pass); theta is its own GEMM. (Stacking theta too reads x once less but makes the key/value
  part a strided slice that the pool must copy: measured, more memory and no faster.)
- Attention core: the custom op ganfast::sa_attention (q [B, N, Cq], k [B, M, Cq], v [B, M, Cv]
  -> o [B, N, Cv], lse [B, N]) on the backend's flash kernel (online softmax; the [N, M] matrix is
  never written): triton.py on CUDA tensors, PyTorch's CPU flash kernel (cpu.py) on CPU tensors.
  Its backward, ganfast::sa_attention_backward, recomputes the probabilities from the saved
  log-sum-exp.
- Output: gamma is folded into the small w_o and the product is accumulated onto x in the same
  GEMM (baddbmm: y = x + (gamma w_o) o^T), so x + gamma * o costs no pass of its own.

Gradients of any order: the backward op's own gradient (R1 through a discriminator with
attention) is a vjp through the reference's written-out attention gradient (math path,
materializing [N, M]), taken automatically whenever a graph of the gradient is being built.
There is no CUDA C++ kernel for this op: Triton is its GPU path (`ganfast info` says so).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ganfast import backends
from ganfast.ops._layout import is_eager
from ganfast.ops.self_attention import reference
from ganfast.ops.self_attention.reference import as_matrix, attention_backward_ref, self_attention2d_ref

__all__ = ["self_attention2d", "self_attention2d_ref", "attention"]

OP = "self_attention"
_DTYPES = {k: v for k, v in backends.FUSED_OP_DTYPES.items() if k != "cuda"}
backends.register_op(OP, _DTYPES, grad_orders={"reference": None, "cpu": None, "triton": None},
                     notes={"cuda": "no CUDA C++ kernel: Triton is this op's GPU path"})


def _impl(name: str):
    return reference if name == "reference" else backends.kernel_module(OP, name)


# ---- custom ops: the attention core and its backward ----

@torch.library.custom_op("ganfast::sa_attention", mutates_args=())
def _attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float,
                  backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    o, lse = _impl(backend).attention_forward(q, k, v, scale)
    return o, lse


@_attention_op.register_fake
def _(q, k, v, scale, backend):
    b, n, _ = q.shape
    lse_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    return q.new_empty(b, n, v.shape[-1]), q.new_empty(b, n, dtype=lse_dtype)


@torch.library.custom_op("ganfast::sa_attention_backward", mutates_args=())
def _attention_backward_op(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor,
                           lse: torch.Tensor, scale: float, backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dq, dk, dv = _impl(backend).attention_backward(do, q, k, v, o, lse, scale)
    return dq, dk, dv


@_attention_backward_op.register_fake
def _(do, q, k, v, o, lse, scale, backend):
    return torch.empty_like(q, memory_format=torch.contiguous_format), \
        torch.empty_like(k, memory_format=torch.contiguous_format), \
        torch.empty_like(v, memory_format=torch.contiguous_format)


def _setup_forward(ctx, inputs, output):
    q, k, v, scale, backend = inputs
    o, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(q, k, v, o, lse)
    ctx.args = (scale, backend)


def _backward_of_forward(ctx, do, dlse, backward_fn=None):
    q, k, v, o, lse = ctx.saved_tensors
    scale, backend = ctx.args
    if do is None:
        return (None,) * 5
    do = do.contiguous()
    if backward_fn is None:
        dq, dk, dv = torch.ops.ganfast.sa_attention_backward(do, q, k, v, o, lse, scale, backend)
    elif not torch.is_grad_enabled():
        # no graph of the gradient is being built: skip the Function only the double backward needs
        dq, dk, dv = _impl(backend).attention_backward(do, q, k, v, o, lse, scale)
    else:
        dq, dk, dv = backward_fn(do, q, k, v, o, lse, scale, backend)
    need = ctx.needs_input_grad
    return (dq if need[0] else None, dk if need[1] else None, dv if need[2] else None, None, None)


def _setup_backward(ctx, inputs, output):
    do, q, k, v, o, lse, scale, backend = inputs
    ctx.save_for_backward(do, q, k, v)
    ctx.scale = scale


def _backward_of_backward(ctx, gdq, gdk, gdv):
    """The double backward: vjp through the reference's attention gradient (any order)."""
    do, q, k, v = ctx.saved_tensors
    cot = tuple(c if c is not None else torch.zeros_like(t) for c, t in ((gdq, q), (gdk, k), (gdv, v)))
    grads = torch.func.vjp(lambda do_, q_, k_, v_: attention_backward_ref(do_, q_, k_, v_, ctx.scale),
                           do, q, k, v)[1](cot)
    # o and lse are functions of q, k, v whose influence the reference's recomputation carries
    return tuple(grads) + (None, None, None, None)


_attention_op.register_autograd(_backward_of_forward, setup_context=_setup_forward)
_attention_backward_op.register_autograd(_backward_of_backward, setup_context=_setup_backward)


class _AttentionFn(torch.autograd.Function):
    """The same op for eager calls (torch.library's autograd wrapper costs ~50 us a call)."""

    @staticmethod
    def forward(ctx, q, k, v, scale, backend):
        o, lse = _impl(backend).attention_forward(q, k, v, scale)
        _setup_forward(ctx, (q, k, v, scale, backend), (o, lse))
        return o, lse

    @staticmethod
    def backward(ctx, do, dlse):
        return _backward_of_forward(ctx, do, dlse, backward_fn=_AttentionBackwardFn.apply)


class _AttentionBackwardFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, do, q, k, v, o, lse, scale, backend):
        out = _impl(backend).attention_backward(do, q, k, v, o, lse, scale)
        _setup_backward(ctx, (do, q, k, v, o, lse, scale, backend), out)
        return out

    @staticmethod
    def backward(ctx, gdq, gdk, gdv):
        return _backward_of_backward(ctx, gdq, gdk, gdv)


# ---- public API ----

def _check_core(q, k, v) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.dim() != 3:
            raise ValueError(f"{name} must be a 3-D tensor [B, rows, width], got "
                             f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
    if q.shape[0] != k.shape[0] or k.shape[0] != v.shape[0]:
        raise ValueError(f"q, k and v must have one batch size, got {q.shape[0]}, {k.shape[0]}, {v.shape[0]}")
    if q.shape[2] != k.shape[2]:
        raise ValueError(f"q and k must have one width (query/key channels), got {q.shape[2]} and {k.shape[2]}")
    if k.shape[1] != v.shape[1]:
        raise ValueError(f"k and v must have one number of rows (keys), got {k.shape[1]} and {v.shape[1]}")
    if q.dtype != k.dtype or k.dtype != v.dtype:
        raise TypeError(f"q, k and v must have one dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if k.shape[1] == 0:
        raise ValueError("k and v must have at least one key (softmax over no keys is undefined)")


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float = 1.0,
              backend: Optional[str] = None) -> torch.Tensor:
    """softmax(scale * q k^T) v without the [N, M] matrix: q [B, N, D], k [B, M, D], v [B, M, Dv]
    -> [B, N, Dv]; D and Dv may differ. Any strides; gradients of any order."""
    _check_core(q, k, v)
    name = backends.select(OP, [q, k, v], backend)
    if name == "reference":
        return reference.attention_ref(q, k, v, scale)
    return _attend(q, k, v, float(scale), name)


def _attend(q, k, v, scale: float, name: str) -> torch.Tensor:
    """The attention core on fused backend `name`: o [B, N, Dv]."""
    if not is_eager(q, k, v):
        return torch.ops.ganfast.sa_attention(q, k, v, scale, name)[0]
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        return _AttentionFn.apply(q, k, v, scale, name)[0]
    return _impl(name).attention_forward(q, k, v, scale)[0]    # nothing to differentiate: the kernel alone


def _check(x, w_theta, w_phi, w_g, w_o, gamma, pool):
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a 4-D tensor [B, C, H, W], got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if isinstance(pool, bool) or not isinstance(pool, int) or pool < 1:
        raise ValueError(f"pool must be an int >= 1, got {pool!r}")
    b, c, h, w = x.shape
    if h < pool or w < pool:
        raise ValueError(f"x's spatial size {h}x{w} must be at least pool x pool = {pool}x{pool}")
    wt, wp, wg, wo = (as_matrix(t, n) for t, n in ((w_theta, "w_theta"), (w_phi, "w_phi"), (w_g, "w_g"), (w_o, "w_o")))
    for name, m in (("w_theta", wt), ("w_phi", wp), ("w_g", wg)):
        if m.shape[1] != c:
            raise ValueError(f"{name} must take x's {c} channels ([out, {c}]), got shape {tuple(m.shape)}")
    if wt.shape[0] != wp.shape[0]:
        raise ValueError(f"w_theta and w_phi must have one output width, got {wt.shape[0]} and {wp.shape[0]}")
    if tuple(wo.shape) != (c, wg.shape[0]):
        raise ValueError(f"w_o must map w_g's {wg.shape[0]} channels back to {c} ([{c}, {wg.shape[0]}]), "
                         f"got shape {tuple(wo.shape)}")
    if not isinstance(gamma, torch.Tensor) or gamma.numel() != 1:
        raise ValueError(f"gamma must be a one-element tensor, got "
                         f"{tuple(gamma.shape) if isinstance(gamma, torch.Tensor) else type(gamma).__name__}")
    return wt, wp, wg, wo


def self_attention2d(x: torch.Tensor, w_theta: torch.Tensor, w_phi: torch.Tensor, w_g: torch.Tensor,
                     w_o: torch.Tensor, gamma: torch.Tensor, pool: int = 2,
                     backend: Optional[str] = None) -> torch.Tensor:
    """SAGAN self-attention block, y = x + gamma * w_o (g softmax(theta^T phi)^T).

    x [B, C, H, W]; w_theta, w_phi [Cq, C, 1, 1] (or [Cq, C]); w_g [Cv, C, 1, 1]; w_o [C, Cv, 1, 1];
    gamma a one-element tensor; keys and values max-pooled by `pool` (floor, as F.max_pool2d).
    Returns y [B, C, H, W]. Gradients of any order on every backend. See reference.py for the
    formulas and this module's docstring for what is fused.
    """
    wt, wp, wg, wo = _check(x, w_theta, w_phi, w_g, w_o, gamma, pool)
    name = backends.select(OP, [x, wt, wp, wg, wo], backend)
    if name == "reference":
        return self_attention2d_ref(x, w_theta, w_phi, w_g, w_o, gamma, pool)
    b, c, h, w = x.shape
    cq, cv = wt.shape[0], wg.shape[0]
    xf = x.reshape(b, c, h * w)
    # bmm on weights expanded over the batch: torch.matmul([O, C], [B, C, N]) copies x transposed
    theta = torch.bmm(wt.expand(b, cq, c), xf)                             # [B, Cq, N]
    wkv = torch.cat([wp, wg])
    kv = torch.bmm(wkv.expand(b, cq + cv, c), xf).reshape(b, cq + cv, h, w)   # one GEMM, contiguous: no copy
    if pool > 1:
        kv = F.max_pool2d(kv, pool)                                        # keys and values in one pass
    kv = kv.flatten(2)
    q = theta.transpose(1, 2)                                              # [B, N, Cq] views
    k, v = kv[:, :cq].transpose(1, 2), kv[:, cq:].transpose(1, 2)          # [B, M, Cq], [B, M, Cv]
    o = _attend(q, k, v, 1.0, name)                                        # [B, N, Cv]
    wo_scaled = (gamma.reshape(()) * wo).to(o.dtype)
    if xf.dtype == o.dtype:
        y = torch.baddbmm(xf, wo_scaled.expand(b, c, cv), o.transpose(1, 2))   # x + (gamma w_o) o^T
    else:  # autocast: the attention ran in a lower precision than x; keep the residual in x's
        y = xf + torch.matmul(wo_scaled, o.transpose(1, 2)).to(xf.dtype)
    return y.reshape(b, c, h, w)
