"""SAGAN / BigGAN self-attention core in Triton: flash-style kernels for `attention_ref` and
`attention_backward_ref` of ganfast/ops/self_attention/reference.py. No autograd here.

Queries and keys are D wide (C/8), values Dv wide (C/2); N queries, M keys, any strides (the real
layout is a transposed view of [B, D, N] projection maps: stride 1 along N, N along D), read in
place. Head widths are padded to powers of two >= 16 (tl.dot needs K >= 16) and masked. The
[N, M] scores are never materialized: every kernel walks [BLOCK_N queries, BLOCK_M keys] tiles in
fp32, one program per (sample, block) on a flat sample-major grid.

  _forward_kernel     a query block; loops over key blocks with an online softmax: running max m,
                      running sum l, fp32 accumulator rescaled by exp(m_old - m_new);
                      o = acc / l; saves the row statistics (m, l).
  _delta_kernel       delta = rowsum(do * o) in fp32, [BLOCK_N, BLOCK_DV] tiles.
  _dkdv_kernel        a key block; k and v stay in registers while it loops over query blocks,
                      recomputing P^T = exp(scale k q^T - m) / l from the saved (m, l):
                      dv += P^T do, dS^T = P^T * (v do^T - delta), dk += dS^T q.
  _dq_kernel          a query block; loops over key blocks: dq += dS k.
Every gradient element is summed by one program in a fixed order: deterministic, no atomics.

Exponentials are exp2 with log2(e) applied after subtracting the row's max: (s - m) * LOG2E rather
than s * (scale * LOG2E) - m * LOG2E, so the exponent carries no rounding of |s| beyond the score's
own (scale = 1 in SAGAN: s is the dot itself).

Dots: fp16/bf16 operands go to the tensor cores (mma.sync on sm_80; wgmma on sm_90 where a
warpgroup gets 64 rows, mma.sync on the narrower tiles), with P and dS cast to the input dtype
and fp32 accumulators. float32 inputs take input_precision="ieee" (FMA units): TF32 keeps 10
mantissa bits and would break float32 accuracy. DOT_FP32 upcasts the operands (after rounding them
to the input dtype) because the Triton 3.9 interpreter computes bf16 dots wrongly; the launchers
set it only there (dot_fp32).

Saved statistics (`stats`, fp32 [B, 2, N], or [B, 2 + Dv, N] for fp16 / bf16):
- each row's max m and sum l = sum exp(s - m) apart, not flash-attention's single log-sum-exp
  m + log l. The backward's P = exp(s - m) / l then carries the rounding of (s - m) and of one
  division, as the reference's softmax does. From an fp32 lse, exp(s - lse) carries lse's own
  rounding (an ulp of |lse|) as a relative error of every P: float32 gradients up to 4x over the
  accuracy rule (fuzzing, issue 26), 1e-4 relative at |scores| ~ 1000. 4 bytes more per row.
- fp16 / bf16: o itself in fp32 (rows 2.., [Dv, N] per sample), for delta = rowsum(do * o). The
  backward's dS = P * (dP - delta) cancels to the scores' gradients only as well as delta agrees
  with the fp32 dP; delta from o rounded to the input dtype (flash-attention's) put the block's
  query / key weight gradients up to 6x over the rule (fuzzing, issue 26). 4 bytes per element of
  o (3x the memory of o itself in bf16), one more store of a tile the forward holds anyway.
- One key (M = 1, a map the pool leaves one pixel of): P = 1 whatever the scores, so dq = dk = 0
  exactly and dv = do; the launcher writes that (the kernels would form 0 as the difference of two
  roundings of do . v).

bf16 under the interpreter: its casts truncate where the compiled cast rounds to nearest, so P, dS
and the outputs are rounded explicitly first (ganfast.ops._triton.round_bf16, ROUND_BF16); compiled
kernels are unchanged by it.

Offsets are int32 within a sample (the launchers check that a sample fits) and int64 across
samples. Tile shapes are in TILES. Resources (Triton 3.9 ptxas, every aot_specs entry, sm_80 /
sm_90): no spills; registers a thread forward 74-210, dkdv 64-224, dq 54-176, delta 32-76;
shared memory forward 10-50 KiB, dkdv 10-81 KiB, dq 16-120 KiB, delta <= 0.5 KiB.
"""
from __future__ import annotations

import contextlib
import math
import numbers

import torch
import triton
import triton.language as tl

from ganfast import backends
from ganfast.ops._triton import round_bf16, rounds_bf16

LOG2E: tl.constexpr = tl.constexpr(1.4426950408889634)   # exp(x) = exp2(x * LOG2E)


# ---- shared pieces ----

@triton.jit
def _dot(a, b, acc, DOT_FP32: tl.constexpr):
    """acc + a @ b, accumulated in fp32. fp32 operands in IEEE fp32 (no TF32)."""
    if DOT_FP32:
        acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    else:
        acc = tl.dot(a, b, acc, input_precision="ieee")
    return acc


@triton.jit
def _rows(ptr, r, c, s_r, s_c, r_ok, c_ok):
    """The [rows, cols] tile at rows r, columns c of a strided matrix (zeros where masked)."""
    return tl.load(ptr + r[:, None] * s_r + c[None, :] * s_c, mask=r_ok[:, None] & c_ok[None, :], other=0.0)


@triton.jit
def _cols(ptr, r, c, s_r, s_c, r_ok, c_ok):
    """The transposed tile [cols, rows] of the same matrix: a tile of the matrix's transpose."""
    return tl.load(ptr + r[None, :] * s_r + c[:, None] * s_c, mask=r_ok[None, :] & c_ok[:, None], other=0.0)


# ---- forward ----

@triton.jit
def _forward_kernel(
    q_ptr,      # [B, N, D] dtype T, strides sq_b, sq_n, sq_d
    k_ptr,      # [B, M, D] T, strides sk_b, sk_m, sk_d
    v_ptr,      # [B, M, Dv] T, strides sv_b, sv_m, sv_d
    o_ptr,      # [B, N, Dv] T, contiguous
    stats_ptr,  # [B, R, N] fp32, contiguous (R = 2, or 2 + Dv with SAVE_O32): per query row, the max
                # m of scale * q k^T, the sum of exp(s - m), and (SAVE_O32) o in fp32
    N, M, D, Dv,
    sq_b, sq_n, sq_d, sk_b, sk_m, sk_d, sv_b, sv_m, sv_d,
    scale,      # fp32
    BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    DOT_FP32: tl.constexpr, ROUND_BF16: tl.constexpr, SAVE_O32: tl.constexpr,
):
    # Flat grid, sample-major: the query blocks sharing a sample's k and v run together (L2).
    pid = tl.program_id(0)
    num_nb = tl.cdiv(N, BLOCK_N)
    b = (pid // num_nb).to(tl.int64)
    n = (pid % num_nb) * BLOCK_N + tl.arange(0, BLOCK_N)
    d = tl.arange(0, BLOCK_D)
    e = tl.arange(0, BLOCK_DV)
    n_ok = n < N
    d_ok = d < D
    e_ok = e < Dv
    q = _rows(q_ptr + b * sq_b, n, d, sq_n, sq_d, n_ok, d_ok)               # [BLOCK_N, BLOCK_D]
    k_b = k_ptr + b * sk_b
    v_b = v_ptr + b * sv_b
    m_i = tl.full([BLOCK_N], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_N], tl.float32)
    acc = tl.zeros([BLOCK_N, BLOCK_DV], tl.float32)
    for m0 in range(0, M, BLOCK_M):
        m = m0 + tl.arange(0, BLOCK_M)
        m_ok = m < M
        kt = _cols(k_b, m, d, sk_m, sk_d, m_ok, d_ok)                        # [BLOCK_D, BLOCK_M]
        s = _dot(q, kt, tl.zeros([BLOCK_N, BLOCK_M], tl.float32), DOT_FP32) * scale
        # Every key block holds a real key (m0 < M), so m_new is finite after the first block.
        s = tl.where(m_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.math.exp2((m_i - m_new) * LOG2E)                          # 0 on the first block
        p = tl.math.exp2((s - m_new[:, None]) * LOG2E)
        l_i = l_i * alpha + tl.sum(p, axis=1)
        v = _rows(v_b, m, e, sv_m, sv_d, m_ok, e_ok)                         # [BLOCK_M, BLOCK_DV]
        acc = _dot(round_bf16(p, ROUND_BF16).to(v.dtype), v, acc * alpha[:, None], DOT_FP32)
        m_i = m_new
    o = acc / l_i[:, None]
    o_offs = b * N * Dv + n[:, None] * Dv + e[None, :]
    tl.store(o_ptr + o_offs, round_bf16(o, ROUND_BF16).to(o_ptr.dtype.element_ty), mask=n_ok[:, None] & e_ok[None, :])
    rows = 2 + Dv if SAVE_O32 else 2
    stats_b = stats_ptr + b * rows * N
    tl.store(stats_b + n, m_i, mask=n_ok)
    tl.store(stats_b + N + n, l_i, mask=n_ok)
    if SAVE_O32:
        tl.store(stats_b + (2 + e[None, :]) * N + n[:, None], o, mask=n_ok[:, None] & e_ok[None, :])


# ---- backward ----

@triton.jit
def _delta_kernel(
    o_ptr,      # [B, N, Dv] T or fp32 (the forward's fp32 o, from stats), strides so_b, so_n, so_d
    do_ptr,     # [B, N, Dv] T, strides sdo_b, sdo_n, sdo_d: dL/do
    delta_ptr,  # [B, N] fp32, contiguous: rowsum(do * o)
    N, Dv, so_b, so_n, so_d, sdo_b, sdo_n, sdo_d,
    BLOCK_N: tl.constexpr, BLOCK_DV: tl.constexpr,
):
    pid = tl.program_id(0)
    num_nb = tl.cdiv(N, BLOCK_N)
    b = (pid // num_nb).to(tl.int64)
    n = (pid % num_nb) * BLOCK_N + tl.arange(0, BLOCK_N)
    e = tl.arange(0, BLOCK_DV)
    n_ok = n < N
    e_ok = e < Dv
    o = _rows(o_ptr + b * so_b, n, e, so_n, so_d, n_ok, e_ok).to(tl.float32)
    do = _rows(do_ptr + b * sdo_b, n, e, sdo_n, sdo_d, n_ok, e_ok).to(tl.float32)
    tl.store(delta_ptr + b * N + n, tl.sum(o * do, axis=1), mask=n_ok)


@triton.jit
def _dkdv_kernel(
    q_ptr,      # [B, N, D] T, strides sq_b, sq_n, sq_d
    k_ptr,      # [B, M, D] T, strides sk_b, sk_m, sk_d
    v_ptr,      # [B, M, Dv] T, strides sv_b, sv_m, sv_d
    do_ptr,     # [B, N, Dv] T, strides sdo_b, sdo_n, sdo_d: dL/do
    stats_ptr,  # [B, 2, N] fp32, strides ss_b, ss_r, ss_n: the forward's row max m and row sum l
    delta_ptr,  # [B, N] fp32, contiguous: rowsum(do * o)
    dk_ptr,     # [B, M, D] T, contiguous
    dv_ptr,     # [B, M, Dv] T, contiguous
    N, M, D, Dv,
    sq_b, sq_n, sq_d, sk_b, sk_m, sk_d, sv_b, sv_m, sv_d, sdo_b, sdo_n, sdo_d, ss_b, ss_r, ss_n,
    scale,      # fp32
    BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    DOT_FP32: tl.constexpr, ROUND_BF16: tl.constexpr,
):
    pid = tl.program_id(0)
    num_mb = tl.cdiv(M, BLOCK_M)
    b = (pid // num_mb).to(tl.int64)
    m = (pid % num_mb) * BLOCK_M + tl.arange(0, BLOCK_M)
    d = tl.arange(0, BLOCK_D)
    e = tl.arange(0, BLOCK_DV)
    m_ok = m < M
    d_ok = d < D
    e_ok = e < Dv
    k = _rows(k_ptr + b * sk_b, m, d, sk_m, sk_d, m_ok, d_ok)               # [BLOCK_M, BLOCK_D]
    v = _rows(v_ptr + b * sv_b, m, e, sv_m, sv_d, m_ok, e_ok)               # [BLOCK_M, BLOCK_DV]
    q_b = q_ptr + b * sq_b
    do_b = do_ptr + b * sdo_b
    dk = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_M, BLOCK_DV], tl.float32)
    for n0 in range(0, N, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        n_ok = n < N
        q = _rows(q_b, n, d, sq_n, sq_d, n_ok, d_ok)                         # [BLOCK_N, BLOCK_D]
        do = _rows(do_b, n, e, sdo_n, sdo_d, n_ok, e_ok)                     # [BLOCK_N, BLOCK_DV]
        row_max = tl.load(stats_ptr + b * ss_b + n * ss_n, mask=n_ok, other=0.0)
        inv_sum = 1.0 / tl.load(stats_ptr + b * ss_b + ss_r + n * ss_n, mask=n_ok, other=1.0)
        delta = tl.load(delta_ptr + b * N + n, mask=n_ok, other=0.0)
        st = _dot(k, tl.trans(q), tl.zeros([BLOCK_M, BLOCK_N], tl.float32), DOT_FP32) * scale
        # Padded queries contribute nothing (their statistics are stand-ins).
        pt = tl.where(n_ok[None, :], tl.math.exp2((st - row_max[None, :]) * LOG2E) * inv_sum[None, :], 0.0)   # P^T
        dv = _dot(round_bf16(pt, ROUND_BF16).to(do.dtype), do, dv, DOT_FP32)
        dpt = _dot(v, tl.trans(do), tl.zeros([BLOCK_M, BLOCK_N], tl.float32), DOT_FP32)
        dst = pt * (dpt - delta[None, :])
        dk = _dot(round_bf16(dst, ROUND_BF16).to(q.dtype), q, dk, DOT_FP32)
    dk_offs = b * M * D + m[:, None] * D + d[None, :]
    tl.store(dk_ptr + dk_offs, round_bf16(dk * scale, ROUND_BF16).to(dk_ptr.dtype.element_ty),
             mask=m_ok[:, None] & d_ok[None, :])
    dv_offs = b * M * Dv + m[:, None] * Dv + e[None, :]
    tl.store(dv_ptr + dv_offs, round_bf16(dv, ROUND_BF16).to(dv_ptr.dtype.element_ty), mask=m_ok[:, None] & e_ok[None, :])


@triton.jit
def _dq_kernel(
    q_ptr,      # [B, N, D] T, strides sq_b, sq_n, sq_d
    k_ptr,      # [B, M, D] T, strides sk_b, sk_m, sk_d
    v_ptr,      # [B, M, Dv] T, strides sv_b, sv_m, sv_d
    do_ptr,     # [B, N, Dv] T, strides sdo_b, sdo_n, sdo_d: dL/do
    stats_ptr,  # [B, 2, N] fp32, strides ss_b, ss_r, ss_n: the forward's row max m and row sum l
    delta_ptr,  # [B, N] fp32, contiguous: rowsum(do * o)
    dq_ptr,     # [B, N, D] T, contiguous
    N, M, D, Dv,
    sq_b, sq_n, sq_d, sk_b, sk_m, sk_d, sv_b, sv_m, sv_d, sdo_b, sdo_n, sdo_d, ss_b, ss_r, ss_n,
    scale,      # fp32
    BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    DOT_FP32: tl.constexpr, ROUND_BF16: tl.constexpr,
    FOLD_SUM: tl.constexpr,     # fp32: 1/l applied to dq after the loop (see there)
):
    pid = tl.program_id(0)
    num_nb = tl.cdiv(N, BLOCK_N)
    b = (pid // num_nb).to(tl.int64)
    n = (pid % num_nb) * BLOCK_N + tl.arange(0, BLOCK_N)
    d = tl.arange(0, BLOCK_D)
    e = tl.arange(0, BLOCK_DV)
    n_ok = n < N
    d_ok = d < D
    e_ok = e < Dv
    q = _rows(q_ptr + b * sq_b, n, d, sq_n, sq_d, n_ok, d_ok)               # [BLOCK_N, BLOCK_D]
    do = _rows(do_ptr + b * sdo_b, n, e, sdo_n, sdo_d, n_ok, e_ok)          # [BLOCK_N, BLOCK_DV]
    row_max = tl.load(stats_ptr + b * ss_b + n * ss_n, mask=n_ok, other=0.0)
    if not FOLD_SUM:
        inv_sum = 1.0 / tl.load(stats_ptr + b * ss_b + ss_r + n * ss_n, mask=n_ok, other=1.0)
    delta = tl.load(delta_ptr + b * N + n, mask=n_ok, other=0.0)
    k_b = k_ptr + b * sk_b
    v_b = v_ptr + b * sv_b
    dq = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    for m0 in range(0, M, BLOCK_M):
        m = m0 + tl.arange(0, BLOCK_M)
        m_ok = m < M
        kt = _cols(k_b, m, d, sk_m, sk_d, m_ok, d_ok)                        # [BLOCK_D, BLOCK_M]
        vt = _cols(v_b, m, e, sv_m, sv_d, m_ok, e_ok)                        # [BLOCK_DV, BLOCK_M]
        s = _dot(q, kt, tl.zeros([BLOCK_N, BLOCK_M], tl.float32), DOT_FP32) * scale
        # Padded keys must give exactly 0: exp(0 - m) may be inf, and inf * 0 (their k) is NaN.
        if FOLD_SUM:   # exp(s - m) unnormalized: 1/l is applied to dq after the loop
            p = tl.where(m_ok[None, :], tl.math.exp2((s - row_max[:, None]) * LOG2E), 0.0)
        else:
            p = tl.where(m_ok[None, :], tl.math.exp2((s - row_max[:, None]) * LOG2E) * inv_sum[:, None], 0.0)
        dp = _dot(do, vt, tl.zeros([BLOCK_N, BLOCK_M], tl.float32), DOT_FP32)
        ds = p * (dp - delta[:, None])
        dq = _dot(round_bf16(ds, ROUND_BF16).to(kt.dtype), tl.trans(kt), dq, DOT_FP32)
    if FOLD_SUM:
        # dq = sum_j exp(s - m) / l (dP - delta) k_j with 1/l taken out of the sum: no third row
        # vector is live through the loop (the fp32 tiles spilled with one on sm_80). fp32 only: in
        # fp16 / bf16 the unnormalized dS, up to M times larger, could overflow its cast for the dot.
        dq = dq / tl.load(stats_ptr + b * ss_b + ss_r + n * ss_n, mask=n_ok, other=1.0)[:, None]
    dq_offs = b * N * D + n[:, None] * D + d[None, :]
    tl.store(dq_ptr + dq_offs, round_bf16(dq * scale, ROUND_BF16).to(dq_ptr.dtype.element_ty),
             mask=n_ok[:, None] & d_ok[None, :])


# ---- launch configuration ----

# FMA contraction on, Triton's default; said explicitly because Triton 3.9 warns that the default will change.
_FP_FUSION = {"enable_fp_fusion": True}
MAX_D = 128               # widest queries / keys (BLOCK_D)
MAX_DV = 512              # widest values (BLOCK_DV)
INDEX_32_LIMIT = 2**31    # a sample's offsets (masked tile lanes included) must stay below this
# (BLOCK_N queries, BLOCK_M keys, num_warps, num_stages) by kernel, then by (width class, operand
# bytes): the width class is 128, 256 or 512, the least of these >= the padded value width and >= 4x
# the padded query width (SAGAN / BigGAN: Dv = 4 D), so D = 32 / Dv = 128 is class 128 and
# D = 128 / Dv = 512 class 512. Chosen by compiling for sm_80 and sm_90 (aot_specs) so nothing
# spills, with headroom: the fp32 accumulators (o: [BLOCK_N, BLOCK_DV], dv: [BLOCK_M, BLOCK_DV])
# set the size; tensor-core tiles keep 64 rows a warpgroup where they fit (wgmma on sm_90); fp32
# ("ieee" dots on FMA units) takes smaller tiles over 8 warps.
TILES = {
    "forward": {(128, 2): (128, 64, 8, 2), (256, 2): (64, 32, 8, 2), (512, 2): (32, 32, 8, 2),
                (128, 4): (64, 32, 8, 2), (256, 4): (32, 16, 8, 1), (512, 4): (16, 16, 8, 1)},
    "dkdv": {(128, 2): (32, 64, 4, 2), (256, 2): (64, 32, 8, 2), (512, 2): (32, 16, 8, 2),
             (128, 4): (32, 32, 8, 2), (256, 4): (32, 16, 8, 2), (512, 4): (16, 16, 8, 2)},
    "dq": {(128, 2): (128, 64, 8, 2), (256, 2): (64, 32, 8, 2), (512, 2): (64, 16, 8, 2),
           (128, 4): (32, 32, 8, 2), (256, 4): (32, 16, 8, 2), (512, 4): (16, 16, 8, 2)},
}
DELTA_TILE = 4096         # elements of a _delta_kernel tile: [DELTA_TILE // BLOCK_DV, BLOCK_DV]
DELTA_WARPS = 4
DELTA_STAGES = 1          # no loop to pipeline
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def head_block(width: int) -> int:
    """A head width padded to a power of two >= 16 (tl.dot needs K >= 16)."""
    return max(16, triton.next_power_of_2(width))


def width_class(d: int, dv: int) -> int:
    """128, 256 or 512: the key of TILES for queries d wide and values dv wide."""
    return max(128, head_block(dv), 4 * head_block(d))


def tiles(kernel: str, d: int, dv: int, dtype: torch.dtype) -> dict:
    """BLOCK_N, BLOCK_M, num_warps and num_stages of kernel ('forward', 'dkdv', 'dq') for queries
    d wide and values dv wide in dtype."""
    block_n, block_m, warps, stages = TILES[kernel][(width_class(d, dv), 4 if dtype == torch.float32 else 2)]
    return dict(BLOCK_N=block_n, BLOCK_M=block_m, num_warps=warps, num_stages=stages)


def dot_fp32(dtype: torch.dtype) -> bool:
    """DOT_FP32: only bf16 under TRITON_INTERPRET, whose Triton 3.9 interpreter computes bf16
    dots wrongly (compiled, bf16 operands go to the tensor cores)."""
    return dtype == torch.bfloat16 and backends.triton_interpret()


# ---- argument checks ----

def _describe(t) -> str:
    if not isinstance(t, torch.Tensor):
        return type(t).__name__
    return f"{list(t.shape)} {t.dtype} strides {t.stride()} on {t.device}"


def _fail(fn: str, what: str) -> ValueError:
    return ValueError(f"self_attention (triton) {fn}: {what}")


def _check_tensor(fn: str, name: str, t, shape: str, ndim: int) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"self_attention (triton) {fn}: {name} must be a {shape} tensor, got {_describe(t)}")
    if t.ndim != ndim:
        raise _fail(fn, f"{name} must be a {shape} tensor, got {_describe(t)}")


def _check_qkv(fn: str, q, k, v) -> tuple[int, int, int, int, int]:
    """(B, N, M, D, Dv) of valid q [B, N, D], k [B, M, D], v [B, M, Dv]."""
    for name, t, shape in (("q", q, "[B, N, D]"), ("k", k, "[B, M, D]"), ("v", v, "[B, M, Dv]")):
        _check_tensor(fn, name, t, shape, 3)
    if q.dtype not in _DTYPES:
        raise TypeError(f"self_attention (triton) {fn}: q must be float32, float16 or bfloat16, got {q.dtype}")
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise TypeError(f"self_attention (triton) {fn}: {name} must have q's dtype {q.dtype}, got {t.dtype}")
    b, n, d = q.shape
    m, dv = v.shape[1], v.shape[2]
    if tuple(k.shape) != (b, k.shape[1], d):
        raise _fail(fn, f"k must be [B, M, D] = [{b}, M, {d}] (q's batch and width), got {_describe(k)}")
    if tuple(v.shape[:2]) != (b, k.shape[1]):
        raise _fail(fn, f"v must be [B, M, Dv] = [{b}, {k.shape[1]}, Dv] (k's batch and keys), got {_describe(v)}")
    if not 1 <= d <= MAX_D:
        raise _fail(fn, f"the query/key width D must be 1 to {MAX_D}, got q {_describe(q)}")
    if not 1 <= dv <= MAX_DV:
        raise _fail(fn, f"the value width Dv must be 1 to {MAX_DV}, got v {_describe(v)}")
    _check_device(fn, q, k=k, v=v)
    return b, n, m, d, dv


def _check_device(fn: str, q: torch.Tensor, **others: torch.Tensor) -> None:
    if q.device.type != "cuda" and not (q.device.type == "cpu" and backends.triton_interpret()):
        raise _fail(fn, f"q must be on a CUDA device (CPU only under TRITON_INTERPRET=1), got {q.device}")
    for name, t in others.items():
        if t.device != q.device:
            raise _fail(fn, f"{name} must be on q's device {q.device}, got {t.device}")


def _check_scale(fn: str, scale) -> float:
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"self_attention (triton) {fn}: scale must be a real number, got {type(scale).__name__}")
    if not math.isfinite(scale):
        raise _fail(fn, f"scale must be finite, got {scale}")
    return float(scale)


def _check_fits(fn: str, tensors: dict, block_rows: int) -> None:
    """Raise unless every offset within one sample of these [B, rows(, width)] tensors, tile lanes
    padded past the ends included, is below INDEX_32_LIMIT: the kernels index a sample in int32."""
    for name, t in tensors.items():
        padded_rows = triton.cdiv(t.shape[1], block_rows) * block_rows
        span = padded_rows * t.stride(1) + (head_block(t.shape[2]) * t.stride(2) if t.ndim == 3 else 0)
        if span >= INDEX_32_LIMIT:
            raise _fail(fn, f"one sample of {name} spans 2**31 elements or more: {_describe(t)}")


def _alloc(shape, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Every output comes from here (the tests fill them with NaN to catch unwritten elements)."""
    return torch.empty(shape, dtype=dtype, device=device)


def _device(t: torch.Tensor):
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


# ---- launchers ----

def attention_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """attention_ref(q, k, v, scale) on Triton, with the row statistics its backward takes.

    q [B, N, D], k [B, M, D], v [B, M, Dv]: any strides, one dtype among float32 / float16 /
    bfloat16, one device; D <= MAX_D, Dv <= MAX_DV. Returns (o [B, N, Dv] in q's dtype, stats
    [B, 2, N] float32: stats[:, 0] the max over keys of scale * q k^T, stats[:, 1] the sum over keys
    of exp(scale * q k^T - max); lse_of(stats) is the reference's log-sum-exp), new contiguous
    tensors; for fp16 / bf16 stats is [B, 2 + Dv, N], rows 2.. holding o in fp32 (the backward's
    delta: see "Saved statistics"). No keys (M = 0): o = 0, max -inf and sum 0 (lse -inf, as the
    reference).
    """
    fn = "attention_forward"
    b, n, m, d, d_v = _check_qkv(fn, q, k, v)
    scale = _check_scale(fn, scale)
    o = _alloc((b, n, d_v), q.dtype, q.device)
    save_o32 = saves_o32(q.dtype)
    stats = _alloc((b, stats_rows(q.dtype, d_v), n), torch.float32, q.device)
    if b * n == 0:
        return o, stats
    if m == 0:
        stats[:, 0].fill_(float("-inf"))
        stats[:, 1:].zero_()
        return o.zero_(), stats
    cfg = tiles("forward", d, d_v, q.dtype)
    _check_fits(fn, dict(q=q, k=k, v=v, o=o), max(cfg["BLOCK_N"], cfg["BLOCK_M"]))
    grid = (b * triton.cdiv(n, cfg["BLOCK_N"]),)
    with _device(q):
        _forward_kernel[grid](q, k, v, o, stats, n, m, d, d_v, *q.stride(), *k.stride(), *v.stride(),
                              scale, BLOCK_D=head_block(d), BLOCK_DV=head_block(d_v),
                              DOT_FP32=dot_fp32(q.dtype), ROUND_BF16=rounds_bf16(q.dtype), SAVE_O32=save_o32,
                              **cfg, **_FP_FUSION)
    return o, stats


def saves_o32(dtype: torch.dtype) -> bool:
    """Whether the forward keeps o in fp32 in its stats (fp16 / bf16: see "Saved statistics")."""
    return dtype != torch.float32


def stats_rows(dtype: torch.dtype, dv: int) -> int:
    """R of the forward's stats [B, R, N] for inputs in dtype and values dv wide."""
    return 2 + dv if saves_o32(dtype) else 2


def lse_of(stats: torch.Tensor) -> torch.Tensor:
    """The log-sum-exp [B, N] (natural log, fp32) of attention_forward's row statistics [B, 2, N]."""
    return stats[:, 0] + torch.log(stats[:, 1])


def delta_config(dv: int) -> dict:
    """_delta_kernel's tile for values dv wide: whole padded rows, DELTA_TILE elements."""
    block_dv = head_block(dv)
    return dict(BLOCK_N=DELTA_TILE // block_dv, BLOCK_DV=block_dv)


def attention_backward(do: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor,
                       stats: torch.Tensor, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """attention_backward_ref(do, q, k, v, scale) on Triton, from the forward's o and stats.

    do, o: [B, N, Dv] in q's dtype, any strides; stats: [B, R, N] float32 (attention_forward's row
    max, row sum and, R = 2 + Dv for fp16 / bf16, o in fp32), any strides; q, k, v as in
    attention_forward. Returns (dq, dk, dv): new
    contiguous tensors with the shapes and dtype of q, k, v. P is recomputed per tile as
    exp(s - max) / sum; deterministic (no atomics).
    """
    fn = "attention_backward"
    b, n, m, d, d_v = _check_qkv(fn, q, k, v)
    scale = _check_scale(fn, scale)
    for name, t in (("do", do), ("o", o)):
        _check_tensor(fn, name, t, "[B, N, Dv]", 3)
        if tuple(t.shape) != (b, n, d_v) or t.dtype != q.dtype:
            raise _fail(fn, f"{name} must be [B, N, Dv] = {[b, n, d_v]} in q's dtype {q.dtype}, got {_describe(t)}")
    rows = stats_rows(q.dtype, d_v)
    _check_tensor(fn, "stats", stats, "[B, R, N]", 3)
    if tuple(stats.shape) != (b, rows, n) or stats.dtype != torch.float32:
        raise _fail(fn, f"stats must be [B, R, N] = {[b, rows, n]} float32 (attention_forward's for {q.dtype} "
                        f"values {d_v} wide), got {_describe(stats)}")
    _check_device(fn, q, do=do, o=o, stats=stats)
    dq = _alloc((b, n, d), q.dtype, q.device)
    dk = _alloc((b, m, d), q.dtype, q.device)
    dv = _alloc((b, m, d_v), q.dtype, q.device)
    if b * n == 0 or m == 0:
        # Softmax over no keys: o is 0 whatever q, so dq is 0; with no queries nothing reaches k, v.
        return dq.zero_(), dk.zero_(), dv.zero_()
    if m == 1:
        # One key: P = 1 whatever the scores, o = v; the scores get no gradient, dv = sum of do
        # (exact, where the kernels would form 0 as a difference of two roundings of do . v).
        dv.copy_(do.sum(dim=1, keepdim=True, dtype=torch.float32))
        return dq.zero_(), dk.zero_(), dv
    delta = _alloc((b, n), torch.float32, q.device)
    dcfg = delta_config(d_v)
    kv_cfg = tiles("dkdv", d, d_v, q.dtype)
    q_cfg = tiles("dq", d, d_v, q.dtype)
    rows = max(dcfg["BLOCK_N"], kv_cfg["BLOCK_N"], kv_cfg["BLOCK_M"], q_cfg["BLOCK_N"], q_cfg["BLOCK_M"])
    _check_fits(fn, dict(q=q, k=k, v=v, do=do, o=o, dq=dq, dk=dk, dv=dv), rows)
    common = dict(BLOCK_D=head_block(d), BLOCK_DV=head_block(d_v), DOT_FP32=dot_fp32(q.dtype),
                  ROUND_BF16=rounds_bf16(q.dtype), **_FP_FUSION)
    strides = (*q.stride(), *k.stride(), *v.stride(), *do.stride(), *stats.stride())
    # fp16 / bf16: delta from the forward's fp32 o (stats rows 2..), not o rounded to the dtype
    o_delta = stats[:, 2:].transpose(1, 2) if saves_o32(q.dtype) else o
    with _device(q):
        _delta_kernel[(b * triton.cdiv(n, dcfg["BLOCK_N"]),)](
            o_delta, do, delta, n, d_v, *o_delta.stride(), *do.stride(), **dcfg, num_warps=DELTA_WARPS,
            num_stages=DELTA_STAGES, **_FP_FUSION)
        _dkdv_kernel[(b * triton.cdiv(m, kv_cfg["BLOCK_M"]),)](
            q, k, v, do, stats, delta, dk, dv, n, m, d, d_v, *strides, scale, **kv_cfg, **common)
        _dq_kernel[(b * triton.cdiv(n, q_cfg["BLOCK_N"]),)](
            q, k, v, do, stats, delta, dq, n, m, d, d_v, *strides, scale, FOLD_SUM=q.dtype == torch.float32,
            **q_cfg, **common)
    return dq, dk, dv


# ---- configurations, for ahead-of-time checks (ganfast.testing.triton_aot) ----

_TRITON_DTYPE = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
# (D, Dv) = (C/8, C/2): C = 64, BigGAN's C = 192, SAGAN's C = 256, C = 512, and the widest supported
AOT_WIDTHS = ((8, 32), (24, 96), (32, 128), (64, 256), (MAX_D, MAX_DV))
AOT_N = 4096              # 64x64 queries...
AOT_M = 1024              # ... and 32x32 keys (2x2 max-pooled)


def _spec(kernel: str, dtype: torch.dtype, d: int, dv: int, n: int = AOT_N, m: int = AOT_M) -> dict:
    """The launch of `kernel` on n queries and m keys in the real layout (q, k, v transposed views
    of [B, D, N] / [B, Dv, M] maps; do, o, stats contiguous), its ints specialized as the JIT does
    (1 a constant, multiples of 16 aligned)."""
    t = f"*{_TRITON_DTYPE[dtype]}"
    q_strides = dict(sq_b=d * n, sq_n=1, sq_d=n)
    k_strides = dict(sk_b=d * m, sk_m=1, sk_d=m)
    v_strides = dict(sv_b=dv * m, sv_m=1, sv_d=m)
    do_strides = dict(sdo_b=n * dv, sdo_n=dv, sdo_d=1)
    sizes = dict(N=n, M=m, D=d, Dv=dv)
    floats = {}
    if kernel == "_forward_kernel":
        pointers = dict(q_ptr=t, k_ptr=t, v_ptr=t, o_ptr=t, stats_ptr="*fp32")
        ints = dict(**sizes, **q_strides, **k_strides, **v_strides)
        floats = dict(scale="fp32")
        cfg = tiles("forward", d, dv, dtype)
        constexprs = dict(BLOCK_N=cfg["BLOCK_N"], BLOCK_M=cfg["BLOCK_M"], SAVE_O32=saves_o32(dtype))
    elif kernel == "_delta_kernel":
        if saves_o32(dtype):   # the forward's fp32 o: rows 2.. of stats [B, 2 + Dv, N], transposed
            pointers = dict(o_ptr="*fp32", do_ptr=t, delta_ptr="*fp32")
            ints = dict(N=n, Dv=dv, so_b=(2 + dv) * n, so_n=1, so_d=n, **do_strides)
        else:
            pointers = dict(o_ptr=t, do_ptr=t, delta_ptr="*fp32")
            ints = dict(N=n, Dv=dv, so_b=n * dv, so_n=dv, so_d=1, **do_strides)
        cfg = dict(num_warps=DELTA_WARPS, num_stages=DELTA_STAGES)
        constexprs = delta_config(dv)
    else:
        pointers = dict(q_ptr=t, k_ptr=t, v_ptr=t, do_ptr=t, stats_ptr="*fp32", delta_ptr="*fp32")
        pointers.update(dict(dk_ptr=t, dv_ptr=t) if kernel == "_dkdv_kernel" else dict(dq_ptr=t))
        ints = dict(**sizes, **q_strides, **k_strides, **v_strides, **do_strides, ss_b=stats_rows(dtype, dv) * n,
                    ss_r=n, ss_n=1)
        floats = dict(scale="fp32")
        cfg = tiles("dkdv" if kernel == "_dkdv_kernel" else "dq", d, dv, dtype)
        constexprs = dict(BLOCK_N=cfg["BLOCK_N"], BLOCK_M=cfg["BLOCK_M"])
        if kernel == "_dq_kernel":
            constexprs["FOLD_SUM"] = dtype == torch.float32
    if kernel != "_delta_kernel":
        constexprs.update(BLOCK_D=head_block(d), BLOCK_DV=head_block(dv), DOT_FP32=False, ROUND_BF16=False)
    signature = dict(pointers)
    aligned = list(pointers)
    for name, value in ints.items():
        if value == 1:
            constexprs[name] = 1
            continue
        signature[name] = "i32"
        if value % 16 == 0:
            aligned.append(name)
    signature.update(floats)
    tile = f"{constexprs['BLOCK_N']}x{constexprs['BLOCK_DV' if kernel == '_delta_kernel' else 'BLOCK_M']}"
    return dict(name=f"{kernel.strip('_')} {_TRITON_DTYPE[dtype]} D={d} Dv={dv} tile={tile} "
                     f"w{cfg['num_warps']}s{cfg['num_stages']}",
                kernel=f"{__name__}:{kernel}", signature=signature, constexprs=constexprs, aligned=aligned,
                options=dict(num_warps=cfg["num_warps"], num_stages=cfg["num_stages"], **_FP_FUSION),
                widths=(d, dv), tensor_cores=kernel != "_delta_kernel" and dtype != torch.float32)


KERNELS = ("_forward_kernel", "_delta_kernel", "_dkdv_kernel", "_dq_kernel")


def aot_specs(widths=AOT_WIDTHS) -> list[dict]:
    """Every kernel in every dtype at the head widths AOT_WIDTHS (D, Dv), one or more a TILES
    width class, on 64x64 queries and 32x32 keys in the real layout."""
    return [_spec(kernel, dtype, d, dv) for kernel in KERNELS for dtype in _TRITON_DTYPE for d, dv in widths]
