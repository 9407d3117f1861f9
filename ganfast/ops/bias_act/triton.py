"""bias_act in Triton: kernels and the launcher behind backend='triton'.

Memory view (as in csrc/bias_act/bias_act.h): x, g, gg and out share one dense layout, so their
storage is [outer, C, inner] with C = x.shape[dim] and inner = x.stride(dim) (1 when C == 1); the
element at storage offset i has bias index (i // inner) % C. The kernels walk storage offsets, so
contiguous, channels_last and any other dense permutation take the same path.

Two kernels:
  _bias_act_kernel     elementwise over storage offsets, BLOCK per program; no bias gradient.
  _bias_act_db_kernel  the same math over a 2-D tile view of the storage that also writes per-tile
                       sums of the output, so db = sum(out) over every dim but `dim` costs no
                       second pass over the tensor: [outer*C, inner] rows when inner > 1 (bias per
                       row), [outer, C] when inner == 1 (bias per column).
The math follows csrc/common/bias_act_math.h (f, f', f'', kinks, softplus threshold 20) in fp32.
Stores to bf16 go through ganfast.ops._triton.round_bf16 (ROUND_BF16): the interpreter's cast
truncates, the compiled one rounds to nearest.
"""
from __future__ import annotations

import contextlib
import math
from typing import Optional

import torch
import triton
import triton.language as tl

from ganfast.ops.bias_act.reference import ACTIVATIONS
from ganfast.ops._layout import is_dense
from ganfast.ops._triton import round_bf16, rounds_bf16

# Activation codes (ganfast::Act) as compile-time constants for the kernels.
_LINEAR = tl.constexpr(ACTIVATIONS["linear"].code)
_RELU = tl.constexpr(ACTIVATIONS["relu"].code)
_LRELU = tl.constexpr(ACTIVATIONS["lrelu"].code)
_TANH = tl.constexpr(ACTIVATIONS["tanh"].code)
_SIGMOID = tl.constexpr(ACTIVATIONS["sigmoid"].code)
_ELU = tl.constexpr(ACTIVATIONS["elu"].code)
_SELU = tl.constexpr(ACTIVATIONS["selu"].code)
_SOFTPLUS = tl.constexpr(ACTIVATIONS["softplus"].code)
_SWISH = tl.constexpr(ACTIVATIONS["swish"].code)

_SELU_SCALE = tl.constexpr(1.0507009873554804934193349852946)
_SELU_ALPHA = tl.constexpr(1.6732632423543772848170429916717)
_SELU_SCALE_ALPHA = tl.constexpr(1.0507009873554804934193349852946 * 1.6732632423543772848170429916717)
_SOFTPLUS_THRESHOLD = tl.constexpr(20.0)


# ---- per-element math (fp32) ----

@triton.jit
def _expm1(z):
    # exp(z) - 1 cancels near 0; a degree-9 Taylor polynomial is exact to fp32 there (|z| < 0.5).
    p = z * (1.0 + z * (0.5 + z * (1.0 / 6.0 + z * (1.0 / 24.0 + z * (1.0 / 120.0 + z * (
        1.0 / 720.0 + z * (1.0 / 5040.0 + z * (1.0 / 40320.0 + z * (1.0 / 362880.0)))))))))
    return tl.where(tl.abs(z) < 0.5, p, tl.exp(z) - 1.0)


@triton.jit
def _log1p_unit(e):
    # log1p(e) for e in [0, 1]: log(1 + e) loses e's low bits when e is small, so use
    # 2 atanh(s) with s = e / (2 + e) (|s| < 0.12 below e = 0.25, series exact to fp32).
    s = e / (2.0 + e)
    s2 = s * s
    series = 2.0 * s * (1.0 + s2 * (1.0 / 3.0 + s2 * (1.0 / 5.0 + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0)))))
    return tl.where(e < 0.25, series, tl.log(1.0 + e))


@triton.jit
def _tanh(z):
    # tanh |z| = -m / (2 + m) with m = expm1(-2|z|) in (-1, 0]: no overflow, accurate near 0.
    m = _expm1(-2.0 * tl.abs(z))
    t = -m / (2.0 + m)
    return tl.where(z < 0.0, -t, t)


@triton.jit
def _sigmoid(z):
    return 1.0 / (1.0 + tl.exp(-z))


@triton.jit
def _act(z, alpha, ACT: tl.constexpr, DERIV: tl.constexpr):
    """f (DERIV=0), f' (1) or f'' (2) of activation ACT at z (fp32), as in bias_act_math.h."""
    if ACT == _LINEAR:
        if DERIV == 0:
            r = z
        elif DERIV == 1:
            r = tl.full(z.shape, 1.0, tl.float32)
        else:
            r = tl.zeros_like(z)
    elif ACT == _RELU:
        if DERIV == 0:
            r = tl.where(z <= 0.0, 0.0, z)   # a NaN z stays NaN, as torch.relu propagates it
        elif DERIV == 1:
            r = tl.where(z > 0.0, 1.0, 0.0)
        else:
            r = tl.zeros_like(z)
    elif ACT == _LRELU:
        if DERIV == 0:
            r = tl.where(z > 0.0, z, z * alpha)
        elif DERIV == 1:
            r = tl.where(z > 0.0, 1.0, alpha)
        else:
            r = tl.zeros_like(z)
    elif ACT == _TANH:
        t = _tanh(z)
        if DERIV == 0:
            r = t
        elif DERIV == 1:
            r = 1.0 - t * t
        else:
            r = -2.0 * t * (1.0 - t * t)
    elif ACT == _SIGMOID:
        s = _sigmoid(z)
        if DERIV == 0:
            r = s
        elif DERIV == 1:
            r = s * (1.0 - s)
        else:
            r = s * (1.0 - s) * (1.0 - 2.0 * s)
    elif ACT == _ELU:
        if DERIV == 0:
            r = tl.where(z > 0.0, z, alpha * _expm1(z))
        elif DERIV == 1:
            r = tl.where(z > 0.0, 1.0, alpha * tl.exp(z))
        else:
            r = tl.where(z < 0.0, alpha * tl.exp(z), 0.0)
    elif ACT == _SELU:
        if DERIV == 0:
            r = _SELU_SCALE * tl.where(z > 0.0, z, _SELU_ALPHA * _expm1(z))
        elif DERIV == 1:
            r = _SELU_SCALE * tl.where(z > 0.0, 1.0, _SELU_ALPHA * tl.exp(z))
        else:
            r = tl.where(z < 0.0, _SELU_SCALE_ALPHA * tl.exp(z), 0.0)
    elif ACT == _SOFTPLUS:
        # Linear above the threshold, like PyTorch's softplus (beta = 1).
        above = z > _SOFTPLUS_THRESHOLD
        if DERIV == 0:
            r = tl.where(above, z, tl.maximum(z, 0.0) + _log1p_unit(tl.exp(-tl.abs(z))))
        elif DERIV == 1:
            r = tl.where(above, 1.0, _sigmoid(z))
        else:
            s = _sigmoid(z)
            r = tl.where(above, 0.0, s * (1.0 - s))
    else:
        tl.static_assert(ACT == _SWISH, "unknown activation code")
        s = _sigmoid(z)
        if DERIV == 0:
            r = z * s
        elif DERIV == 1:
            r = s * (1.0 + z * (1.0 - s))
        else:
            r = s * (1.0 - s) * (2.0 + z * (1.0 - 2.0 * s))
    return r


@triton.jit
def _bias_act_math(z, g, gg, alpha, gain, clamp, ACT: tl.constexpr, ORDER: tl.constexpr):
    """bias_act_element of bias_act_math.h on fp32 blocks (g, gg unused below their order)."""
    y = _act(z, alpha, ACT, 0) * gain
    if ORDER == 0:
        clamped = tl.where(y > clamp, clamp, tl.where(y < -clamp, -clamp, y))
        r = tl.where(clamp >= 0.0, clamped, y)
    else:
        # PyTorch's clamp passes the gradient on the closed interval [-clamp, clamp].
        passes = (clamp < 0.0) | ((y <= clamp) & (y >= -clamp))
        if ORDER == 1:
            r = g * gain * _act(z, alpha, ACT, 1)
        else:
            r = gg * g * gain * _act(z, alpha, ACT, 2)
        r = tl.where(passes, r, 0.0)
    return r


@triton.jit
def _bias_act_tile(x_ptr, g_ptr, gg_ptr, out_ptr, offs, mask, bias, alpha, gain, clamp,
                   ACT: tl.constexpr, ORDER: tl.constexpr, MASKED: tl.constexpr, ROUND_BF16: tl.constexpr):
    """Loads x (and g, gg) at storage offsets `offs`, adds `bias` (fp32, broadcast to offs), stores
    the result in out's dtype and returns it as stored, in fp32 (0 where masked off)."""
    if MASKED:
        z = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32) + bias
    else:
        z = tl.load(x_ptr + offs).to(tl.float32) + bias
    g = z
    gg = z
    if ORDER >= 1:
        if MASKED:
            g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        else:
            g = tl.load(g_ptr + offs).to(tl.float32)
    if ORDER == 2:
        if MASKED:
            gg = tl.load(gg_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        else:
            gg = tl.load(gg_ptr + offs).to(tl.float32)
    # Rounded here, not in _bias_act_math (shared with modulated_conv2d): the interpreter truncates.
    r = round_bf16(_bias_act_math(z, g, gg, alpha, gain, clamp, ACT, ORDER), ROUND_BF16).to(out_ptr.dtype.element_ty)
    if MASKED:
        tl.store(out_ptr + offs, r, mask=mask)
        return tl.where(mask, r.to(tl.float32), 0.0)  # lanes past the end hold garbage: keep it out of sums
    else:
        tl.store(out_ptr + offs, r)
        return r.to(tl.float32)


@triton.jit
def _bias_act_kernel(
    x_ptr,    # [outer, C, inner] storage of x (any dense layout, walked in storage order)
    b_ptr,    # [C]; read when HAS_BIAS
    g_ptr,    # [outer, C, inner] like x; read when ORDER >= 1
    gg_ptr,   # [outer, C, inner] like x; read when ORDER == 2
    out_ptr,  # [outer, C, inner] like x
    numel, channels, inner,  # numel = outer * C * inner
    alpha, gain, clamp,      # fp32; clamp < 0: no clamp
    ACT: tl.constexpr, ORDER: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr,
    INDEX_64: tl.constexpr,
    ROUND_BF16: tl.constexpr,  # bf16 under the interpreter, whose casts truncate (round_bf16)
):
    pid = tl.program_id(0)
    if INDEX_64:
        pid = pid.to(tl.int64)
    start = pid * BLOCK
    offs = start + tl.arange(0, BLOCK)
    channel = (offs // inner) % channels  # always in [0, C): no mask needed to read b
    bias = 0.0
    if HAS_BIAS:
        # b is tiny and read by every program: keep it in cache.
        bias = tl.load(b_ptr + channel, eviction_policy="evict_last").to(tl.float32)
    # Full blocks run unmasked, so their loads and stores vectorize whatever numel is.
    if start + BLOCK <= numel:
        _bias_act_tile(x_ptr, g_ptr, gg_ptr, out_ptr, offs, None, bias, alpha, gain, clamp, ACT, ORDER, False,
                       ROUND_BF16)
    else:
        _bias_act_tile(x_ptr, g_ptr, gg_ptr, out_ptr, offs, offs < numel, bias, alpha, gain, clamp, ACT, ORDER,
                       True, ROUND_BF16)


@triton.jit
def _bias_act_db_kernel(
    x_ptr,        # [M, N] storage of x: [outer*C, inner] if BIAS_ON_ROWS else [outer, C]
    b_ptr,        # [C]
    g_ptr,        # [M, N] like x; read when ORDER >= 1
    gg_ptr,       # [M, N] like x; read when ORDER == 2
    out_ptr,      # [M, N] like x
    partial_ptr,  # fp32 [M, num_pid_n] if BIAS_ON_ROWS else [cdiv(M, BLOCK_M * iters), N]
    M, N, channels, iters, num_pid_n,
    alpha, gain, clamp,  # fp32; clamp < 0: no clamp
    ACT: tl.constexpr, ORDER: tl.constexpr, BIAS_ON_ROWS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, INDEX_64: tl.constexpr,
    ROUND_BF16: tl.constexpr,  # bf16 under the interpreter, whose casts truncate (round_bf16)
):
    # Each program sums its output over `iters` tiles along the reduced axis (N when the bias
    # runs along rows, M when it runs along columns) and writes one partial sum per row / column.
    pid = tl.program_id(0)
    if INDEX_64:
        pid = pid.to(tl.int64)
    pid_m = pid // num_pid_n
    pid_n = pid % num_pid_n
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    if BIAS_ON_ROWS:
        rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        bias = tl.load(b_ptr + rows % channels, eviction_policy="evict_last").to(tl.float32)[:, None]
        for it in range(iters):
            cols = (pid_n * iters + it) * BLOCK_N + tl.arange(0, BLOCK_N)
            offs = rows[:, None] * N + cols[None, :]
            mask = (rows[:, None] < M) & (cols[None, :] < N)
            acc += _bias_act_tile(x_ptr, g_ptr, gg_ptr, out_ptr, offs, mask, bias, alpha, gain, clamp, ACT, ORDER,
                                  True, ROUND_BF16)
        tl.store(partial_ptr + rows * num_pid_n + pid_n, tl.sum(acc, axis=1), mask=rows < M)
    else:
        cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        bias = tl.load(b_ptr + cols, mask=cols < N, other=0.0, eviction_policy="evict_last").to(tl.float32)[None, :]
        for it in range(iters):
            rows = (pid_m * iters + it) * BLOCK_M + tl.arange(0, BLOCK_M)
            offs = rows[:, None] * N + cols[None, :]
            mask = (rows[:, None] < M) & (cols[None, :] < N)
            acc += _bias_act_tile(x_ptr, g_ptr, gg_ptr, out_ptr, offs, mask, bias, alpha, gain, clamp, ACT, ORDER,
                                  True, ROUND_BF16)
        tl.store(partial_ptr + pid_m * N + cols, tl.sum(acc, axis=0), mask=cols < N)


# ---- launch configuration ----

NUM_WARPS = 4
DB_MAX_ITERS = 8      # tiles one db program sums before writing a partial: fewer partials vs enough programs
DB_MAX_BLOCK_M = 256  # taller tiles of very short rows (n < 8) spill on sm_80 (see the AOT tests)
# FMA contraction on, which is Triton's default; said explicitly because Triton 3.9 warns that the
# default will change.
_LAUNCH_OPTIONS = {"num_warps": NUM_WARPS, "enable_fp_fusion": True}
INDEX_32_LIMIT = 2**31  # offsets past this take the int64 kernels (a module constant, so tests reach them)


def block_size(dtype: torch.dtype) -> int:
    """Elements per program: 32 bytes per thread (two 128-bit accesses per tensor) at NUM_WARPS warps."""
    return NUM_WARPS * 32 * 32 // torch.empty((), dtype=dtype).element_size()



def db_tile(dtype: torch.dtype, bias_on_rows: bool, n: int) -> tuple[int, int]:
    """(BLOCK_M, BLOCK_N) of the db kernel for a [M, N] view: up to block_size(dtype) elements, the
    N side covering n (the contiguous axis) up to the block when bias runs along rows, else up to
    64, and at most DB_MAX_BLOCK_M rows."""
    block = block_size(dtype)
    cap = block if bias_on_rows else 64
    block_n = min(triton.next_power_of_2(max(n, 1)), cap)
    return min(block // block_n, DB_MAX_BLOCK_M), block_n


def _memory_view(x: torch.Tensor, dim: int) -> tuple[int, int, int]:
    """(outer, C, inner) of x's storage; see the module docstring."""
    channels = x.shape[dim]
    inner = 1 if channels == 1 else x.stride(dim)
    return x.numel() // (channels * inner), channels, inner


def _check_args(order, x, b, g, gg, out, dim):
    if x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise TypeError(f"bias_act (triton): x must be float16, bfloat16 or float32, got {x.dtype}")
    if not is_dense(x):
        raise ValueError(f"bias_act (triton): x must be non-overlapping and dense, got strides {x.stride()}")
    if b is not None and (b.shape != (x.shape[dim],) or not b.is_contiguous() or b.dtype != x.dtype):
        raise ValueError(f"bias_act (triton): b must be a contiguous [{x.shape[dim]}] {x.dtype} tensor, "
                         f"got {tuple(b.shape)} {b.dtype} strides {b.stride()}")
    for name, t, needed in (("g", g, order >= 1), ("gg", gg, order == 2), ("out", out, out is not None)):
        if needed and (t is None or t.shape != x.shape or t.stride() != x.stride() or t.dtype != x.dtype):
            got = "None" if t is None else f"{tuple(t.shape)} {t.dtype} strides {t.stride()}"
            raise ValueError(f"bias_act (triton): {name} must have x's shape {tuple(x.shape)}, dtype {x.dtype} "
                             f"and strides {x.stride()} (order {order}), got {got}")


def run(order: int, x: torch.Tensor, b: Optional[torch.Tensor], g: Optional[torch.Tensor],
        gg: Optional[torch.Tensor], dim: int, act: str, alpha: float, gain: float, clamp: float,
        want_db: bool, *, out: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The kernel contract of ganfast/ops/bias_act/reference.py::run, on Triton.

    x: dense [..., C (at dim), ...] fp16/bf16/fp32; b: [C] contiguous or None; g, gg: x's shape and
    strides (orders >= 1, == 2); out: where to write the result (x's shape, dtype and strides;
    default a new torch.empty_like(x)). Returns (out, db [C] in b's dtype or None).
    """
    if order not in (0, 1, 2):
        raise ValueError(f"bias_act (triton): order must be 0, 1 or 2, got {order}")
    _check_args(order, x, b, g, gg, out, dim)
    out = torch.empty_like(x) if out is None else out
    with_db = want_db and b is not None
    numel = x.numel()
    if numel == 0:
        return out, (torch.zeros_like(b) if with_db else None)
    outer, channels, inner = _memory_view(x, dim)
    # Unused pointers still need a tensor of the right dtype; x stands in.
    g = g if order >= 1 else x
    gg = gg if order == 2 else x
    code = ACTIVATIONS[act].code
    block = block_size(x.dtype)
    # int32 offsets unless they could pass 2**31, masked tail tiles of the db kernel included.
    index_64 = numel + (DB_MAX_ITERS + 2) * block >= INDEX_32_LIMIT
    scalars = (float(alpha), float(gain), float(clamp))
    rounds = rounds_bf16(x.dtype)
    with torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext():
        if not with_db:
            grid = (triton.cdiv(numel, block),)
            _bias_act_kernel[grid](x, b if b is not None else x, g, gg, out, numel, channels, inner, *scalars,
                                   ACT=code, ORDER=order, HAS_BIAS=b is not None, BLOCK=block, INDEX_64=index_64,
                                   ROUND_BF16=rounds, **_LAUNCH_OPTIONS)
            return out, None
        bias_on_rows = inner > 1
        m, n = (outer * channels, inner) if bias_on_rows else (outer, channels)
        block_m, block_n = db_tile(x.dtype, bias_on_rows, n)
        if bias_on_rows:
            iters = min(DB_MAX_ITERS, triton.cdiv(n, block_n))
            num_pid_m, num_pid_n = triton.cdiv(m, block_m), triton.cdiv(n, block_n * iters)
            partial = torch.empty((outer, channels, num_pid_n), dtype=torch.float32, device=x.device)
        else:
            iters = min(DB_MAX_ITERS, triton.cdiv(m, block_m))
            num_pid_m, num_pid_n = triton.cdiv(m, block_m * iters), triton.cdiv(n, block_n)
            partial = torch.empty((num_pid_m, channels), dtype=torch.float32, device=x.device)
        _bias_act_db_kernel[(num_pid_m * num_pid_n,)](
            x, b, g, gg, out, partial, m, n, channels, iters, num_pid_n, *scalars,
            ACT=code, ORDER=order, BIAS_ON_ROWS=bias_on_rows, BLOCK_M=block_m, BLOCK_N=block_n,
            INDEX_64=index_64, ROUND_BF16=rounds, **_LAUNCH_OPTIONS)
    db = partial.sum(dim=(0, 2) if bias_on_rows else 0)
    return out, db.to(b.dtype)


# ---- configurations, for ahead-of-time checks (ganfast.testing.triton_aot) ----

_TRITON_DTYPE = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}


def _elementwise_spec(dtype: torch.dtype, act: str, order: int, has_bias: bool = True, inner_one: bool = False,
                      index_64: bool = False) -> dict:
    t = _TRITON_DTYPE[dtype]
    signature = {"x_ptr": f"*{t}", "b_ptr": f"*{t}", "g_ptr": f"*{t}", "gg_ptr": f"*{t}", "out_ptr": f"*{t}",
                 "numel": "i64" if index_64 else "i32", "channels": "i32", "inner": "i32",
                 "alpha": "fp32", "gain": "fp32", "clamp": "fp32"}
    constexprs = {"ACT": ACTIVATIONS[act].code, "ORDER": order, "HAS_BIAS": has_bias,
                  "BLOCK": block_size(dtype), "INDEX_64": index_64, "ROUND_BF16": False}
    if inner_one:  # channels_last / [N, C]: the JIT turns an int argument equal to 1 into a constant
        del signature["inner"]
        constexprs["inner"] = 1
    variant = (" inner=1" if inner_one else "") + (" int64" if index_64 else "")
    return dict(name=f"elementwise {t} {act} order{order} bias={int(has_bias)}{variant} BLOCK={block_size(dtype)}",
                kernel=f"{__name__}:_bias_act_kernel", signature=signature, constexprs=constexprs,
                aligned=[a for a, ty in signature.items() if ty != "fp32"], options=dict(_LAUNCH_OPTIONS),
                vector_io=True)


def _db_spec(dtype: torch.dtype, act: str, order: int, bias_on_rows: bool, n: int, index_64: bool = False) -> dict:
    t = _TRITON_DTYPE[dtype]
    block_m, block_n = db_tile(dtype, bias_on_rows, n)
    signature = {"x_ptr": f"*{t}", "b_ptr": f"*{t}", "g_ptr": f"*{t}", "gg_ptr": f"*{t}", "out_ptr": f"*{t}",
                 "partial_ptr": "*fp32", "M": "i32", "N": "i32", "channels": "i32", "iters": "i32",
                 "num_pid_n": "i32", "alpha": "fp32", "gain": "fp32", "clamp": "fp32"}
    return dict(name=f"db {t} {act} order{order} {'bias-on-rows' if bias_on_rows else 'bias-on-cols'} "
                     f"tile={block_m}x{block_n}{' int64' if index_64 else ''}",
                kernel=f"{__name__}:_bias_act_db_kernel", signature=signature,
                constexprs={"ACT": ACTIVATIONS[act].code, "ORDER": order, "BIAS_ON_ROWS": bias_on_rows,
                            "BLOCK_M": block_m, "BLOCK_N": block_n, "INDEX_64": index_64, "ROUND_BF16": False},
                aligned=["x_ptr", "b_ptr", "g_ptr", "gg_ptr", "out_ptr", "partial_ptr", "M", "N", "channels"],
                options=dict(_LAUNCH_OPTIONS),
                # 128-bit accesses need tile rows of at least 16 bytes.
                vector_io=block_n * torch.empty((), dtype=dtype).element_size() >= 16)


def _db_tiles(dtype: torch.dtype, full: bool) -> list[tuple[bool, int]]:
    """(bias_on_rows, n) giving each db tile shape `db_tile` picks (full) or a spread of them:
    rows of 2 (1x2 maps), 16 (4x4 maps), 256 and a whole block; channels_last with C = 1 and 64."""
    block = block_size(dtype)
    if full:
        rows = [2**k for k in range(1, int(math.log2(block)) + 1)]
        cols = [2**k for k in range(0, 7)]
    else:
        rows, cols = [2, 16, 256, block], [1, 64]
    return [(True, n) for n in rows] + [(False, n) for n in cols]


def aot_specs(full: bool = False) -> list[dict]:
    """The configurations `run` launches, as ganfast.testing.triton_aot specs.

    Arguments are specialized the way the JIT specializes real tensors: pointers 16-byte aligned,
    ints divisible by 16. Default, a representative set: tanh and swish (the heaviest math) in
    every dtype and order, a no-bias and a channels_last variant, the db kernel's tile shapes
    for fp16 and fp32 (2- and 4-byte elements lay tiles out differently) and the int64-offset
    kernels. full=True: every activation, order, bias flag, layout and tile shape (for a manual
    run; ~1000 compiles).
    """
    acts = tuple(ACTIVATIONS) if full else ("tanh", "swish")
    specs = []
    for dtype in _TRITON_DTYPE:
        for act in acts:
            # The autograd never asks for order 2 where f'' == 0 (linear, relu, lrelu).
            orders = (0, 1) if ACTIVATIONS[act].zero_second_derivative else (0, 1, 2)
            for order in orders:
                specs.append(_elementwise_spec(dtype, act, order))
                if full:
                    specs.append(_elementwise_spec(dtype, act, order, has_bias=False))
                    specs.append(_elementwise_spec(dtype, act, order, inner_one=True))
                if order == 0:
                    continue  # the autograd wants db from orders 1 and 2 only
                sweep = full or (act == "swish" and order == 2 and dtype != torch.bfloat16)
                tiles = _db_tiles(dtype, full) if sweep else [(True, 256)]
                specs += [_db_spec(dtype, act, order, rows, n) for rows, n in tiles]
        if not full:
            specs.append(_elementwise_spec(dtype, "tanh", 1, has_bias=False))
            specs.append(_elementwise_spec(dtype, "tanh", 1, inner_one=True))
    # Tensors of 2**31 elements and more (int64 offsets).
    specs.append(_elementwise_spec(torch.float16, "swish", 2, index_64=True))
    specs += [_db_spec(torch.float16, "swish", 2, rows, n, index_64=True) for rows, n in ((True, 4096), (False, 64))]
    return specs
