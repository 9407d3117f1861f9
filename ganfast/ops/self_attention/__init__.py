"""SAGAN / BigGAN self-attention: y = x + gamma * w_o (g softmax(theta^T phi)^T).

What runs where (backend cpu or triton; the reference backend is reference.self_attention2d_ref):
- Projections: w_theta, w_phi and w_g are stacked into one [O, C] matrix (one GEMM) whose output
  the max-pool takes whole (keys and values pooled in one pass; q's rows pooled too and unused,
  which reads them once where pooling a strided slice would first copy it). Each backend gets
  q, k, v as views of the GEMM's and the pool's outputs in its own layout (_ROWS): the cpu kernel
  wants unit-stride rows of one width, which zero rows in the stacked weight provide without an
  activation-sized pad or copy.
- Attention core: the backend's flash kernel (online softmax; the [N, M] matrix is never
  written): triton.py on CUDA tensors, PyTorch's CPU flash kernel (cpu.py) on CPU tensors; as the
  custom op ganfast::sa_attention (q [B, N, Cq], k [B, M, Cq], v [B, M, Cv] -> o [B, N, Cv] and
  the backend's row statistics: lse [B, N] on cpu; on triton the row max and row sum, and for
  fp16 / bf16 o in fp32, [B, 2 (+ Cv), N])
  under torch.compile. Its backward recomputes the probabilities from them (cpu: exactly, per
  row, from the scores themselves).
- Output: gamma is folded into the small w_o and the product is accumulated onto x in the same
  GEMM (baddbmm: y = x + (gamma w_o) o^T), so x + gamma * o costs no pass of its own.

The host path (what an eager call costs at GAN layer sizes, STYLE.md): an eager call with
gradients is one autograd node, _BlockFn, whose first-order backward is written out in one
function (a graph of the composition holds two dozen nodes, each with the engine's cost, one of
them a Python node for the core); without gradients the same forward runs with no node at all.
Under torch.compile the op is the differentiable composition around the custom ops, traced
without graph breaks; under autocast with gradients it is that composition too (its ops take
autocast's dtypes).

Gradients of any order: a gradient of _BlockFn's gradient (create_graph: R1 through a
discriminator with attention) differentiates _BlockFn.backward's formulas, written as a graph over
the composition recomputed from the saved inputs (_block_grad_of_grad); there the core's output and
its gradient come from one node (_AttentionWithGradFn: the kernels' values), whose own gradient is
the vjp of the reference's attention (output and gradient together), written out
(_attention_double_backward: math path, materializing [N, M]; softmax's backward taken about each
row's most probable key, which keeps it accurate with large scores).
There is no CUDA C++ kernel for this op: Triton is its GPU path (`ganfast info` says so).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ganfast import backends
from ganfast.ops._layout import is_eager
from ganfast.ops.self_attention import reference
from ganfast.ops.self_attention.reference import self_attention2d_ref

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
    if backend == "triton":   # row max, row sum (and fp32 o for fp16 / bf16): triton.py, "Saved statistics"
        rows = 2 + v.shape[-1] if q.dtype != torch.float32 else 2
        return q.new_empty(b, n, v.shape[-1]), q.new_empty(b, rows, n, dtype=torch.float32)
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
    """The double backward: the vjp of the attention gradient (reference.attention_backward_ref),
    written out (_attention_double_backward); differentiable, so any order."""
    do, q, k, v = ctx.saved_tensors
    # fp16/bf16 in fp32 (the first-order kernels accumulate in fp32 too), results in the inputs' dtypes
    acc = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    cot = tuple(None if c is None else c.to(acc) for c in (gdq, gdk, gdv))
    grads = _attention_double_backward(do.to(acc), q.to(acc), k.to(acc), v.to(acc), *cot, ctx.scale)
    # o and lse are functions of q, k, v whose influence the recomputation from q, k, v carries
    return tuple(g.to(t.dtype) for g, t in zip(grads, (do, q, k, v))) + (None, None, None, None)


def _centered(p: torch.Tensor, x: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """x - rowsum(p * x) for probabilities p [B, N, M] (softmax's backward is p times it),
    evaluated as e - rowsum(p * e) with e = x - x at each row's most probable key (top [B, N, 1]):
    the same value (the rows of p sum to 1), but where a row of p is nearly one-hot (large
    scores) rowsum(p * x) is nearly x[top] and the direct form rounds at |x| what cancels to
    |x| (1 - p[top]); e[top] is exactly 0 and the rest of e is weighted by the small p."""
    e = x - x.gather(-1, top)
    return e - (p * e).sum(-1, keepdim=True)


def _attention_double_backward(do, q, k, v, gdq, gdk, gdv, scale: float, go=None):
    """(g_do, g_q, g_k, g_v): the vjp of (dq, dk, dv) = attention_backward_ref(do, q, k, v, scale)
    for the cotangents gdq [B, N, D], gdk [B, M, D], gdv [B, M, Dv] (None: zero), and with go
    [B, N, Dv] that of o = attention_ref(q, k, v, scale) too (g_P gains go V^T, g_v P^T go: one
    softmax backward for both, where their parts of g_S cancel), written out; differentiable.
    Materializes [B, N, M]. With P = softmax(S), S = scale q k^T, dP = dO V^T,
    T = dP - rowsum(P * dP), dS = P * T, and G = scale (gdq K^T + Q gdk^T) (the cotangent of dS):
        g_P  = G * T - rowsum(G * P) dP + dO gdv^T
        g_S  = P * (g_P - rowsum(P * g_P))        (softmax's backward)
        g_dP = P * (G - rowsum(P * G))
        g_q  = scale (g_S K + dS gdk),  g_k = scale (g_S^T Q + dS^T gdq)
        g_v  = g_dP^T dO,               g_do = P gdv + g_dP V
    Every x - rowsum(P * x) here is _centered: with large scores the term rowsum(G * P) dP of
    g_P is |G| |dP| where g_S's row sums are far smaller, and the direct form (autograd's vjp of
    the reference) rounds at that size. The issue-26 fp32 case (scores ~50, a block's R1 term):
    g_q's error 1.9e-3 -> 3.0e-4 (float64 math on the same inputs); the block's second-order
    gradient of x, over it and 11 nudged copies: 4.0e-3 (median) -> 4.8e-4, at most 1.1e-3 (the
    reference in fp32: 1.2e-3, at most 1.3e-3)."""
    p = torch.softmax(torch.matmul(q, k.mT) * scale, dim=-1)                # [B, N, M]
    top = p.argmax(-1, keepdim=True)                                        # [B, N, 1]
    dp = torch.matmul(do, v.mT)
    t = _centered(p, dp, top)
    ds = p * t
    g_do = g_v = None
    g_p = torch.matmul(do, gdv.mT) if gdv is not None else None             # [B, N, M]
    if go is not None:
        g_p = torch.matmul(go, v.mT) if g_p is None else g_p + torch.matmul(go, v.mT)
    if gdq is not None or gdk is not None:
        g = torch.matmul(gdq, k.mT) if gdq is not None else None
        if gdk is not None:
            g = torch.matmul(q, gdk.mT) if g is None else g + torch.matmul(q, gdk.mT)
        g = g * scale
        gt = g * t - (g * p).sum(-1, keepdim=True) * dp
        g_p = gt if g_p is None else g_p + gt
        g_dp = p * _centered(p, g, top)
        g_v, g_do = torch.matmul(g_dp.mT, do), torch.matmul(g_dp, v)
    g_s = p * _centered(p, g_p, top) if g_p is not None else torch.zeros_like(p)
    g_q, g_k = torch.matmul(g_s, k), torch.matmul(g_s.mT, q)
    if gdk is not None:
        g_q = g_q + torch.matmul(ds, gdk)
    if gdq is not None:
        g_k = g_k + torch.matmul(ds.mT, gdq)
    if gdv is not None:
        g_do = torch.matmul(p, gdv) if g_do is None else g_do + torch.matmul(p, gdv)
    if go is not None:
        g_v = torch.matmul(p.mT, go) if g_v is None else g_v + torch.matmul(p.mT, go)
    return (torch.zeros_like(do) if g_do is None else g_do, g_q * scale, g_k * scale,
            torch.zeros_like(v) if g_v is None else g_v)


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


class _AttentionWithGradFn(torch.autograd.Function):
    """(o, dq, dk, dv): the core's output and its gradient for do, as one node (the gradient of
    _BlockFn's gradient). The kernels compute both (the first-order values are the fast path's);
    the backward takes the cotangents of o and of dq, dk, dv together (_attention_double_backward
    with go): with them in two nodes each part of the score's cotangent went through softmax's
    backward alone, rounded at its own size, where their sum cancels (fp32, C = Cq = Cv = 1 and
    scores ~10: the block's second-order gradient of w_theta 5e-6, 10x the reference's error)."""

    @staticmethod
    def forward(ctx, q, k, v, do, scale, backend):
        impl = _impl(backend)
        do = do.contiguous()    # as _backward_of_forward hands it to the kernels (a no-op here)
        o, lse = impl.attention_forward(q, k, v, scale)
        dq, dk, dv = impl.attention_backward(do, q, k, v, o, lse, scale)
        ctx.save_for_backward(q, k, v, do)
        ctx.scale = scale
        return o, dq, dk, dv

    @staticmethod
    def backward(ctx, go, gdq, gdk, gdv):
        q, k, v, do = ctx.saved_tensors
        acc = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
        cot = tuple(None if c is None else c.to(acc) for c in (gdq, gdk, gdv))
        g_do, g_q, g_k, g_v = _attention_double_backward(do.to(acc), q.to(acc), k.to(acc), v.to(acc), *cot,
                                                         ctx.scale, go=None if go is None else go.to(acc))
        return g_q.to(q.dtype), g_k.to(k.dtype), g_v.to(v.dtype), g_do.to(do.dtype), None, None


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


def _matrix_shape(w, name: str) -> tuple[int, int]:
    """(out, in) of a 1x1 convolution weight [out, in, 1, 1] or a matrix [out, in]."""
    shape = w.shape if isinstance(w, torch.Tensor) else None
    if shape is not None and (len(shape) == 2 or (len(shape) == 4 and shape[2] == 1 and shape[3] == 1)):
        return shape[0], shape[1]
    raise ValueError(f"{name} must be a 1x1 convolution weight [out, in, 1, 1] or a matrix [out, in], got "
                     f"{tuple(shape) if shape is not None else type(w).__name__}")


def _check(x, w_theta, w_phi, w_g, w_o, gamma, pool) -> tuple[int, int]:
    """(Cq, Cv) of valid arguments, else a ValueError naming the argument. It runs on every call:
    integer comparisons only, no tensor ops."""
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a 4-D tensor [B, C, H, W], got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if type(pool) is not int or pool < 1:    # type(): a bool is not a pool size
        raise ValueError(f"pool must be an int >= 1, got {pool!r}")
    _, c, h, w = x.shape
    if h < pool or w < pool:
        raise ValueError(f"x's spatial size {h}x{w} must be at least pool x pool = {pool}x{pool}")
    st, sp, sg = _matrix_shape(w_theta, "w_theta"), _matrix_shape(w_phi, "w_phi"), _matrix_shape(w_g, "w_g")
    so = _matrix_shape(w_o, "w_o")
    for name, shape in (("w_theta", st), ("w_phi", sp), ("w_g", sg)):
        if shape[1] != c:
            raise ValueError(f"{name} must take x's {c} channels ([out, {c}]), got shape {tuple(shape)}")
    if st[0] != sp[0]:
        raise ValueError(f"w_theta and w_phi must have one output width, got {st[0]} and {sp[0]}")
    if so[0] != c or so[1] != sg[0]:
        raise ValueError(f"w_o must map w_g's {sg[0]} channels back to {c} ([{c}, {sg[0]}]), got shape {tuple(so)}")
    if not isinstance(gamma, torch.Tensor) or gamma.numel() != 1:
        raise ValueError(f"gamma must be a one-element tensor, got "
                         f"{tuple(gamma.shape) if isinstance(gamma, torch.Tensor) else type(gamma).__name__}")
    for name, width in (("x", c), ("w_theta", st[0]), ("w_g", sg[0])):
        if width == 0:   # no channels, queries/keys or values to attend with: nothing is defined
            raise ValueError(f"{name} must have at least one {'channel' if name == 'x' else 'output channel'}, "
                             f"got {width}")
    # one device, and (outside autocast, which casts each op's operands itself) one dtype
    mixed_ok = x.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(x.device.type)
    for name, t in (("w_theta", w_theta), ("w_phi", w_phi), ("w_g", w_g), ("w_o", w_o), ("gamma", gamma)):
        if t.device != x.device:
            raise ValueError(f"{name} must be on x's device {x.device}, got {t.device}")
        if t.dtype != x.dtype and not mixed_ok:
            raise ValueError(f"{name} must have x's dtype {str(x.dtype).replace('torch.', '')} (outside autocast), "
                             f"got {str(t.dtype).replace('torch.', '')}")
    return st[0], sg[0]


# ---- the block: one GEMM for the projections, the attention core, one GEMM for the output ----

# How each fused backend's kernel takes q, k, v (decided per backend, not per call):
# - rows (cpu): torch's CPU flash kernel takes [B, heads, rows, D] with unit-stride rows and one
#   head width D = max(Cq, Cv). The projection GEMM writes [B, N, O] rows, and q, k, v are
#   [B, 1, rows, D] views of its output and the pool's: no activation-sized pad or copy. The
#   stacked weight (_stacked_weights) makes the widths agree: k's columns past Cq are zero rows
#   of it, so every score q.k is exact whatever q holds there (its D columns run on into w_phi's
#   and the zero rows), and v's past Cv (when Cq > Cv) are zero rows too.
# - maps (triton): any strides and widths (D = Cq for q and k, Cv for v); q, k, v are transposed
#   views of [B, O, N] maps (the layout its kernels are tuned and compiled ahead of time for).
_ROWS = {"cpu": True, "triton": False}


def _widths(cq: int, cv: int, rows: bool) -> tuple[int, int]:
    """(D, Dv): the widths the kernel sees for q and k, and for v."""
    return (max(cq, cv),) * 2 if rows else (cq, cv)


def _stacked_weights(w_theta, w_phi, w_g, cq: int, cv: int, d: int, d_v: int) -> torch.Tensor:
    """[O, C] = [w_theta; w_phi; D - Cq zero rows; w_g; Dv - Cv zero rows], O = Cq + D + Dv: rows
    [0, D) are q, [Cq, Cq + D) k, [Cq + D, O) v. The zero rows' gradient is dropped (cat's
    backward; the split in _BlockFn.backward)."""
    ws = (w_theta, w_phi, w_g)
    if not w_theta.dim() == w_phi.dim() == w_g.dim():
        ws = tuple(w.flatten(1) for w in ws)
    tail = ws[0].shape[1:]
    if d > cq:
        ws = (ws[0], ws[1], w_theta.new_zeros((d - cq,) + tail), ws[2])
    if d_v > cv:
        ws = ws + (w_theta.new_zeros((d_v - cv,) + tail),)
    return torch.cat(ws).flatten(1)


def _qkv_rows(xf, wts, h: int, w: int, cq: int, d: int, pool: int, save: bool):
    """rows: q [B, 1, N, D], k, v [B, 1, M, D] (views), and with save the max-pool argmaxes of the
    k, v rows [B, M, O - Cq] (flat positions in the H x W map)."""
    b, c, n = xf.shape
    o_rows = wts.shape[0]
    m = (h // pool) * (w // pool)        # spelled out: a -1 cannot be inferred at batch 0
    p = torch.bmm(xf.mT, wts.t().expand(b, c, o_rows))                  # [B, N, O]
    q = p.view(b, 1, n, o_rows)[..., :d]
    idx = None
    if pool == 1:
        kv = p.view(b, 1, n, o_rows)
    else:
        # q's Cq rows are pooled too (and unused): that reads them once, where pooling the k, v
        # rows alone would first copy them out of the strided [B, O, N] (channels_last: the pool's fast path)
        maps = p.mT.view(b, o_rows, h, w)
        if save:
            pooled, idx = F.max_pool2d(maps, pool, return_indices=True)
            idx = idx.permute(0, 2, 3, 1).reshape(b, m, o_rows)[..., cq:]
        else:
            pooled = F.max_pool2d(maps, pool)
        kv = pooled.permute(0, 2, 3, 1).reshape(b, 1, m, o_rows)        # [B, 1, M, O]
    _, k, v = kv.split_with_sizes((cq, d, o_rows - cq - d), 3)
    return q, k, v, idx


def _qkv_maps(xf, wts, h: int, w: int, cq: int, d: int, pool: int, save: bool):
    """maps: q [B, N, Cq], k [B, M, Cq], v [B, M, Cv] (transposed views), and with save the max-pool
    argmaxes of the k, v rows [B, Cq + Cv, M] (flat positions in the H x W map)."""
    b, c, n = xf.shape
    o_rows = wts.shape[0]
    pt = torch.bmm(wts.expand(b, o_rows, c), xf)                        # [B, O, N]
    idx = None
    if pool == 1:
        kv = pt
    elif save:  # q's rows pooled too, as in _qkv_rows
        pooled, idx = F.max_pool2d(pt.view(b, o_rows, h, w), pool, return_indices=True)
        kv, idx = pooled.flatten(2), idx.flatten(2)[:, cq:]
    else:
        kv = F.max_pool2d(pt.view(b, o_rows, h, w), pool).flatten(2)    # [B, O, M]
    _, k, v = kv.split_with_sizes((cq, cq, o_rows - 2 * cq), 1)
    return pt[:, :cq].mT, k.mT, v.mT, idx


def _core_kernel(name: str):
    """The attention core as the kernel alone, (q, k, v) -> (o, lse), in the backend's layout."""
    impl = _impl(name)
    return impl.heads_forward if _ROWS[name] else impl.attention_forward


def _core_differentiable(name: str):
    """The attention core as a differentiable function of q, k, v in the backend's layout, (o, None)."""
    if _ROWS[name]:
        return lambda q, k, v: (_attend(q.squeeze(1), k.squeeze(1), v.squeeze(1), 1.0, name), None)
    return lambda q, k, v: (_attend(q, k, v, 1.0, name), None)


def _block(x, w_theta, w_phi, w_g, w_o, gamma, cq: int, cv: int, pool: int, name: str, core, save: bool = False):
    """y [B, C, H, W], and (save) what _BlockFn's backward reads. core: _core_kernel (no graph:
    no_grad calls and _BlockFn) or _core_differentiable (torch.compile, autocast, gradients of
    gradients)."""
    b, c, h, w = x.shape
    n = h * w
    rows = _ROWS[name]
    d, d_v = _widths(cq, cv, rows)
    wts = _stacked_weights(w_theta, w_phi, w_g, cq, cv, d, d_v)          # [O, C]
    xf = x.reshape(b, c, n)                                            # [B, C, N]
    q, k, v, idx = (_qkv_rows if rows else _qkv_maps)(xf, wts, h, w, cq, d, pool, save)
    o, lse = core(q, k, v)                                              # [B, (1,) N, d_v]
    ov = o.reshape(b, n, d_v) if rows else o
    if d_v > cv:
        ov = ov[..., :cv]
    wo = w_o.reshape(c, cv)
    wo_scaled = wo * gamma                                              # gamma folded into the small w_o
    if wo_scaled.dim() != 2:  # gamma [1, 1, 1], say
        wo_scaled = wo_scaled.view(c, cv)
    if xf.dtype == ov.dtype:
        y = torch.baddbmm(xf, wo_scaled.expand(b, c, cv), ov.mT)       # x + (gamma w_o) o^T
    else:  # autocast: the attention ran in a lower precision than x; keep the residual in x's
        y = xf + torch.matmul(wo_scaled.to(ov.dtype), ov.mT).to(xf.dtype)
    y = y.view(b, c, h, w)
    return y, ((q, k, v, o, lse, idx, wts, wo, wo_scaled, xf, ov) if save else None)


class _BlockFn(torch.autograd.Function):
    """The whole block as one autograd node for eager calls: the forward runs _block with no graph,
    and the first-order backward is written out (fewer ops than the composition's graph has nodes).
    A gradient of the gradient (create_graph, R1) differentiates the differentiable composition
    instead, recomputed from the saved inputs."""

    @staticmethod
    def forward(ctx, x, w_theta, w_phi, w_g, w_o, gamma, args):
        cq, cv, pool, name = args
        y, saved = _block(x, w_theta, w_phi, w_g, w_o, gamma, cq, cv, pool, name, _core_kernel(name), save=True)
        ctx.save_for_backward(x, w_theta, w_phi, w_g, w_o, gamma, *saved)   # freed after the backward
        ctx.args = args
        return y

    @staticmethod
    def backward(ctx, dy):
        x, w_theta, w_phi, w_g, w_o, gamma, q, k, v, o, lse, idx, wts, wo, wo_scaled, xf, ov = ctx.saved_tensors
        cq, cv, pool, name = ctx.args
        need = ctx.needs_input_grad
        if torch.is_grad_enabled():
            inputs = (x, w_theta, w_phi, w_g, w_o, gamma)
            return _block_grad_of_grad(inputs, need[:6], dy, cq, cv, pool, name) + (None,)
        b, c, h, w = x.shape
        n = h * w
        d, d_v = _widths(cq, cv, _ROWS[name])
        dyf = dy.reshape(b, c, n)                                      # [B, C, N]
        dx = dw_theta = dw_phi = dw_g = dw_o = dgamma = None
        if need[4] or need[5]:
            dwo_scaled = torch.bmm(dyf, ov).sum(0)                      # [C, Cv]: of gamma w_o
            if need[4]:
                dw_o = (dwo_scaled * gamma).view(w_o.shape)
            if need[5]:
                dgamma = (dwo_scaled * wo).sum()
                if gamma.dim():
                    dgamma = dgamma.view(gamma.shape)
        if not (need[0] or need[1] or need[2] or need[3]):
            return dx, dw_theta, dw_phi, dw_g, dw_o, dgamma, None
        do = torch.bmm(dyf.mT, wo_scaled.expand(b, c, cv))              # [B, N, Cv]
        if d_v > cv:
            do = F.pad(do, (0, d_v - cv))
        # The core's gradients (dq's columns past Cq are exactly 0: k is 0 there), then the
        # projections' (_projection_grads).
        if _ROWS[name]:
            # q and k at their own width Cq: the cpu backward takes any widths, and the zero
            # columns the forward kernel needs would make its score GEMM Dv/Cq times the work
            # (SAGAN: 4x; the block's backward 1.15-1.2x faster at C = 256, 32x32 and C = 64, 64x64,
            # batch 4, 2 threads)
            dq, dk, dv = _impl(name).heads_backward(do.view(b, 1, n, d_v), q[..., :cq], k[..., :cq], v, o, lse, 1.0)
            dq, dk, dv = dq.view(b, n, cq), dk.squeeze(1), dv.squeeze(1)
            if d > cq:   # the zero rows of the stacked weight get a zero gradient (dropped there)
                dk = F.pad(dk, (0, d - cq))
        else:
            dq, dk, dv = _impl(name).attention_backward(do, q, k, v, o, lse, 1.0)
        dx, dw_theta, dw_phi, dw_g = _projection_grads(dq, dk, dv, need, dyf, xf, wts, idx, x.shape, cq, cv, d, d_v,
                                                       pool, name, (w_theta, w_phi, w_g))
        return dx, dw_theta, dw_phi, dw_g, dw_o, dgamma, None


def _projection_grads(dq, dk, dv, need, dyf, xf, wts, idx, x_shape, cq: int, cv: int, d: int, d_v: int,
                      pool: int, name: str, weights):
    """(dx, dw_theta, dw_phi, dw_g) from the core's gradients dq [B, N, Cq], dk [B, M, d],
    dv [B, M, d_v] (None where need says no): the projections' gradient dP, rows [0, Cq) from dq,
    the rest from dk and dv through the max-pool's backward (each window's gradient goes to the
    position that won it; the windows do not overlap: a scatter), then dx = dy + W^T dP and
    dW = dP x^T. Shared by _BlockFn.backward and its differentiable form _block_grad_of_grad."""
    b, c, h, w = x_shape
    n, o_rows = h * w, wts.shape[0]
    if _ROWS[name]:
        dkv = torch.cat((dk, dv), 2)                                    # [B, M, O - Cq]
        if pool > 1:
            dkv = dkv.new_zeros(b, n, o_rows - cq).scatter_(1, idx, dkv)
        dpt = torch.cat((dq, dkv), 2).mT                                # [B, O, N]
    else:
        dkv = torch.cat((dk.mT, dv.mT), 1)                              # [B, O - Cq, M]
        if pool > 1:
            dkv = dkv.new_zeros(b, o_rows - cq, n).scatter_(2, idx, dkv)
        dpt = torch.cat((dq.mT, dkv), 1)                                # [B, O, N]
    dx = dw_theta = dw_phi = dw_g = None
    if need[0]:
        dx = torch.baddbmm(dyf, wts.t().expand(b, c, o_rows), dpt).view(b, c, h, w)
    if need[1] or need[2] or need[3]:
        dw = torch.bmm(dpt, xf.mT).sum(0)                               # [O, C]; the zero rows' part dropped
        parts = dw.split_with_sizes((cq, cq, d - cq, cv, d_v - cv))
        dw_theta, dw_phi, dw_g = (parts[i].reshape(t.shape) if need[j] else None
                                  for i, j, t in zip((0, 1, 3), (1, 2, 3), weights))
    return dx, dw_theta, dw_phi, dw_g


def _block_grad_of_grad(inputs, need, dy, cq, cv, pool, name):
    """_BlockFn's gradients as a graph (create_graph: R1): _BlockFn.backward's formulas as
    differentiable ops on the composition recomputed from the saved inputs, with the core's output
    and gradient from one node (_AttentionWithGradFn), so that a gradient of these gradients
    meets the cotangents of o and of dq, dk, dv in one softmax backward."""
    x, w_theta, w_phi, w_g, w_o, gamma = inputs
    b, c, h, w = x.shape
    n = h * w
    rows = _ROWS[name]
    d, d_v = _widths(cq, cv, rows)
    wts = _stacked_weights(w_theta, w_phi, w_g, cq, cv, d, d_v)          # [O, C]
    xf = x.reshape(b, c, n)
    q, k, v, idx = (_qkv_rows if rows else _qkv_maps)(xf, wts, h, w, cq, d, pool, True)
    if rows:
        q, k, v = q.squeeze(1), k.squeeze(1), v.squeeze(1)              # [B, rows, D]
    wo = w_o.reshape(c, cv)
    wo_scaled = wo * gamma
    if wo_scaled.dim() != 2:
        wo_scaled = wo_scaled.view(c, cv)
    dyf = dy.reshape(b, c, n)
    do = torch.bmm(dyf.mT, wo_scaled.expand(b, c, cv))                  # [B, N, Cv]
    if d_v > cv:
        do = F.pad(do, (0, d_v - cv))
    o, dq, dk, dv = _AttentionWithGradFn.apply(q, k, v, do, 1.0, name)
    dx = dw_theta = dw_phi = dw_g = dw_o = dgamma = None
    if need[4] or need[5]:
        ov = o[..., :cv] if d_v > cv else o
        dwo_scaled = torch.bmm(dyf, ov).sum(0)                          # [C, Cv]
        if need[4]:
            dw_o = (dwo_scaled * gamma).view(w_o.shape)
        if need[5]:
            dgamma = (dwo_scaled * wo).sum()
            if gamma.dim():
                dgamma = dgamma.view(gamma.shape)
    if need[0] or need[1] or need[2] or need[3]:
        if rows and d > cq:
            dq = dq[..., :cq]
        dx, dw_theta, dw_phi, dw_g = _projection_grads(dq, dk, dv, need, dyf, xf, wts, idx, x.shape, cq, cv, d, d_v,
                                                       pool, name, (w_theta, w_phi, w_g))
    return dx, dw_theta, dw_phi, dw_g, dw_o, dgamma


def self_attention2d(x: torch.Tensor, w_theta: torch.Tensor, w_phi: torch.Tensor, w_g: torch.Tensor,
                     w_o: torch.Tensor, gamma: torch.Tensor, pool: int = 2,
                     backend: Optional[str] = None) -> torch.Tensor:
    """SAGAN self-attention block, y = x + gamma * w_o (g softmax(theta^T phi)^T).

    x [B, C, H, W]; w_theta, w_phi [Cq, C, 1, 1] (or [Cq, C]); w_g [Cv, C, 1, 1]; w_o [C, Cv, 1, 1];
    gamma a one-element tensor; keys and values max-pooled by `pool` (floor, as F.max_pool2d).
    Every tensor on x's device and, outside autocast, in x's dtype; C, Cq, Cv >= 1 (B may be 0).

    Non-finite inputs: NaN propagates as in the reference. With +-inf in x (or the weights) the
    fused backends' pattern of non-finite outputs differs from the reference's: their online
    softmax gives a -inf score the weight 0 without multiplying its value, where the reference's
    softmax(S) V computes 0 * inf = NaN, and (cpu) positions the reference keeps finite can come out
    non-finite (seen by the fuzz tests' long profile; open). y stays non-finite where x is.
    Returns y [B, C, H, W]. Gradients of any order on every backend. See reference.py for the
    formulas and this module's docstring for what is fused.
    """
    cq, cv = _check(x, w_theta, w_phi, w_g, w_o, gamma, pool)
    name = backends.select(OP, (x, w_theta, w_phi, w_g, w_o), backend)
    if name == "reference":
        return self_attention2d_ref(x, w_theta, w_phi, w_g, w_o, gamma, pool)
    if not is_eager(x, w_theta, w_phi, w_g, w_o, gamma):
        return _block(x, w_theta, w_phi, w_g, w_o, gamma, cq, cv, pool, name, _core_differentiable(name))[0]
    if torch.is_grad_enabled() and (x.requires_grad or w_theta.requires_grad or w_phi.requires_grad or
                                    w_g.requires_grad or w_o.requires_grad or gamma.requires_grad):
        if torch.is_autocast_enabled(x.device.type):   # the composition's ops take autocast's dtypes themselves
            return _block(x, w_theta, w_phi, w_g, w_o, gamma, cq, cv, pool, name, _core_differentiable(name))[0]
        return _BlockFn.apply(x, w_theta, w_phi, w_g, w_o, gamma, (cq, cv, pool, name))
    return _block(x, w_theta, w_phi, w_g, w_o, gamma, cq, cv, pool, name, _core_kernel(name))[0]
