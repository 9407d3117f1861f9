"""modulated_conv2d in Triton: the kernels behind backend='triton' (up = down = 1).

The kernel contracts are those at the end of reference.py (`modconv_forward`, `epilogue_forward`,
`epilogue_backward`, `demod_coefficients`); these launchers have the same signatures and meanings.

Kernels:
  _modconv_kernel   the fused implicit-GEMM convolution, one program per (sample, output-pixel
                    tile, output-channel tile) on a flat sample-major grid:
                      GEMM M = output pixels (H' * W'), N = Cout, K = Cin * kh * kw,
                    walked as Cin chunks (outer) x taps (inner), so the kh * kw shifted windows of
                    one chunk of x come out of L1. Per step: the A tile x[n, ci.., oy+ky-py0,
                    ox+kx-px0] is gathered with masks standing in for the zero padding, loaded
                    [BLOCK_K, BLOCK_M] (pixels along the threads, so loads coalesce along rows)
                    and transposed for the dot; the B tile weight[co.., ci.., ky, kx] is
                    modulated in registers by styles[n, ci..] (in fp32, then cast to the dot
                    dtype), so no per-sample weight is ever written; tl.dot accumulates in fp32
                    (mma.sync on sm_80, wgmma on sm_90 for fp16, bf16 and TF32). NCHW gathers of
                    2-byte elements under per-element masks cannot be cp.async copies, so the
                    next step's operands are loaded into registers during this step's dot.
                    The epilogue (* dcoef[n, co], + noise, + bias, activation, gain, clamp) runs
                    on the accumulator before the single write of out; a (the accumulator in x's
                    dtype) is written only when the backward needs it.
                    DRAM traffic per output element: out (and a) written once; noise read once
                    (a [N, 1, H, W] plane once per sample, the channels hit L2); x about once,
                    i.e. Cin/Cout elements (the Cout / BLOCK_N channel tiles of a pixel tile run
                    together and share it through L2, the taps of a chunk hit L1); the weight,
                    styles, dcoef and bias are small and stay in L2.
  _demod_kernel     dcoef [N, Cout] = rsqrt(styles^2 @ (sum over taps of weight^2)^T + 1e-8):
                    [BLOCK_O, BLOCK_I, taps] weight tiles squared and summed over the taps, then
                    one fp32 ("ieee") dot with the squared styles; the weight read once per
                    BLOCK_N samples.
  _epilogue_fwd_kernel  the epilogue alone, elementwise over a contiguous [N, C, H, W]; full
                    blocks unmasked (128-bit loads and stores of a and out).
  _epilogue_bwd_kernel  its backward, a block of (n, c) planes per program looping over H * W:
                    da and the per-plane sums of dz and dz * a (fp32, fixed order: deterministic).

Every bf16 the kernels write (out, a, da) and the modulated weights of the bf16 dot are fp32
values rounded to nearest even, the compiled cast's rounding; under TRITON_INTERPRET, whose casts
truncate, ganfast.ops._triton.round_bf16 does the rounding (ROUND_BF16), so the CPU tests see a
GPU's numbers (issue 26: the truncated a cost a selu second-order gradient 2.6%).

Activation math is bias_act's (ganfast.ops.bias_act.triton). Offsets are int32 within a sample
(the launchers check that a sample fits) and int64 across samples; the elementwise kernels take
int64 offsets when the tensor reaches 2**31 elements.
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch
import triton
import triton.language as tl

from ganfast import backends
from ganfast.ops.bias_act.reference import ACTIVATIONS
from ganfast.ops._triton import round_bf16, rounds_bf16
from ganfast.ops.bias_act.triton import _bias_act_math


# ---- the fused convolution ----

@triton.jit
def _conv_operands(x_n, w_ptr, s_n, step, Cin, H, W, KK, KW, py0, px0, oy, ox, m_ok, w_co, co_ok,
                   FLIP: tl.constexpr, BLOCK_K: tl.constexpr):
    """The raw operands of K step `step` (Cin chunk step // KK, tap step % KK): the x tile
    [BLOCK_K, BLOCK_M] (zeros in the padding), the weight tile [BLOCK_K, BLOCK_N] and the styles
    [BLOCK_K] (fp32) of its input channels."""
    chunk = step // KK
    tap = step - chunk * KK
    ky = tap // KW
    kx = tap - ky * KW
    ci = chunk * BLOCK_K + tl.arange(0, BLOCK_K)
    ci_ok = ci < Cin
    iy = oy + (ky - py0)
    ix = ox + (kx - px0)
    inside = m_ok & (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
    xt = tl.load(x_n + ci[:, None] * (H * W) + (iy * W + ix)[None, :], mask=ci_ok[:, None] & inside[None, :],
                 other=0.0)
    if FLIP:
        tap = KK - 1 - tap
    wt = tl.load(w_ptr + w_co[None, :] + (ci * KK + tap)[:, None], mask=ci_ok[:, None] & co_ok[None, :], other=0.0)
    s = tl.load(s_n + ci, mask=ci_ok, other=0.0)
    return xt, wt, s


@triton.jit
def _modconv_kernel(
    x_ptr,      # [N, Cin, H, W] contiguous, dtype D
    w_ptr,      # [Cout, Cin, KK] contiguous (KK = kh * kw taps, row-major), D
    s_ptr,      # [N, Cin] fp32: styles
    dcoef_ptr,  # [N, Cout] fp32; read when HAS_DCOEF
    noise_ptr,  # [N, Cout, Ho, Wo] D with strides noise_sn..noise_sw (0 on broadcast dims); read when HAS_NOISE
    bias_ptr,   # [Cout] fp32; read when HAS_BIAS
    out_ptr,    # [N, Cout, Ho, Wo] contiguous, D
    a_ptr,      # [N, Cout, Ho, Wo] contiguous, D: the convolution before the epilogue; written when WANT_A
    Cin, H, W, Cout, Wo, M,    # M = Ho * Wo
    KK, KW, py0, px0,          # taps, kernel width, top and left padding
    noise_sn, noise_sc, noise_sh, noise_sw,
    num_co_tiles, tiles_per_sample,   # output-channel tiles, and those times the pixel tiles
    alpha, gain, clamp,        # fp32; clamp < 0: none
    ACT: tl.constexpr, HAS_DCOEF: tl.constexpr, HAS_NOISE: tl.constexpr, HAS_BIAS: tl.constexpr,
    WANT_A: tl.constexpr,
    FLIP: tl.constexpr,           # true convolution (flip_weight=False): tap t reads weight tap KK-1-t
    DOT_PRECISION: tl.constexpr,  # fp32 operands: "ieee" or "tf32"
    UPCAST_DOT: tl.constexpr,     # dot in fp32 on the dot-dtype values (the interpreter's bf16 dot is wrong)
    ROUND_BF16: tl.constexpr,     # bf16 casts rounded explicitly (the interpreter's truncate: round_bf16)
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # One flat grid, sample-major; within a sample the output-channel tiles vary fastest, so the
    # programs sharing an x tile run together.
    pid = tl.program_id(0)
    n = (pid // tiles_per_sample).to(tl.int64)
    tile = pid % tiles_per_sample
    pid_co = tile % num_co_tiles
    pid_m = tile // num_co_tiles
    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)   # [BLOCK_M] output pixels
    co = pid_co * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N] output channels
    m_ok = m < M
    co_ok = co < Cout
    oy = m // Wo
    ox = m - oy * Wo
    x_n = x_ptr + n * Cin * (H * W)
    s_n = s_ptr + n * Cin
    w_co = co * (Cin * KK)
    dot_dtype = x_ptr.dtype.element_ty

    # The gathers cannot be async copies (2-byte elements, per-element padding masks), so the
    # next step's operands are loaded into registers while this step's dot runs.
    xt, wt, s = _conv_operands(x_n, w_ptr, s_n, 0, Cin, H, W, KK, KW, py0, px0, oy, ox, m_ok, w_co, co_ok,
                               FLIP, BLOCK_K)
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for step in range(tl.cdiv(Cin, BLOCK_K) * KK):
        # past the last step: Cin chunk out of range, every lane masked off
        xt_next, wt_next, s_next = _conv_operands(x_n, w_ptr, s_n, step + 1, Cin, H, W, KK, KW, py0, px0, oy, ox,
                                                  m_ok, w_co, co_ok, FLIP, BLOCK_K)
        b = round_bf16(wt.to(tl.float32) * s[:, None], ROUND_BF16).to(dot_dtype)
        a = tl.trans(xt)
        if UPCAST_DOT:
            acc = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
        else:
            acc = tl.dot(a, b, acc, input_precision=DOT_PRECISION)
        xt, wt, s = xt_next, wt_next, s_next

    mask = m_ok[:, None] & co_ok[None, :]
    z = acc
    if HAS_DCOEF:
        z = z * tl.load(dcoef_ptr + n * Cout + co, mask=co_ok, other=0.0)[None, :]
    if HAS_NOISE:
        noffs = co[None, :] * noise_sc + (oy * noise_sh + ox * noise_sw)[:, None]
        z = z + tl.load(noise_ptr + n * noise_sn + noffs, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        z = z + tl.load(bias_ptr + co, mask=co_ok, other=0.0)[None, :]
    y = _bias_act_math(z, z, z, alpha, gain, clamp, ACT, 0)
    offs = co[None, :] * M + m[:, None]                                         # [BLOCK_M, BLOCK_N]
    tl.store(out_ptr + n * Cout * M + offs, round_bf16(y, ROUND_BF16).to(out_ptr.dtype.element_ty), mask=mask)
    if WANT_A:
        tl.store(a_ptr + n * Cout * M + offs, round_bf16(acc, ROUND_BF16).to(a_ptr.dtype.element_ty), mask=mask)


# ---- demodulation coefficients ----

@triton.jit
def _demod_kernel(
    w_ptr,      # [Cout, Cin, KK] contiguous, any float dtype
    s_ptr,      # [N, Cin] fp32
    dcoef_ptr,  # [N, Cout] fp32
    N, Cout, Cin, KK,
    BLOCK_N: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_T: tl.constexpr,
):
    # Each program reduces weight^2 over the taps of its [BLOCK_O, BLOCK_I] channel pairs (a 3-D
    # tile, taps padded to BLOCK_T), then folds in styles^2 with one fp32 dot: the dot is KK times
    # smaller than over (Cin, taps), and the weight is read once per BLOCK_N samples.
    o = tl.program_id(0) * BLOCK_O + tl.arange(0, BLOCK_O)
    ns = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    o_ok = o < Cout
    n_ok = ns < N
    t = tl.arange(0, BLOCK_T)
    acc = tl.zeros([BLOCK_N, BLOCK_O], tl.float32)
    for i0 in range(0, Cin, BLOCK_I):
        i = i0 + tl.arange(0, BLOCK_I)
        i_ok = i < Cin
        offs = o[:, None, None] * (Cin * KK) + i[None, :, None] * KK + t[None, None, :]
        wmask = o_ok[:, None, None] & i_ok[None, :, None] & (t < KK)[None, None, :]
        w = tl.load(w_ptr + offs, mask=wmask, other=0.0).to(tl.float32)   # [BLOCK_O, BLOCK_I, BLOCK_T]
        wsq = tl.sum(w * w, axis=2)                                          # [BLOCK_O, BLOCK_I]
        s = tl.load(s_ptr + ns[:, None] * Cin + i[None, :], mask=n_ok[:, None] & i_ok[None, :], other=0.0)
        acc = tl.dot(s * s, tl.trans(wsq), acc, input_precision="ieee")    # [BLOCK_N, BLOCK_O]
    tl.store(dcoef_ptr + ns[:, None] * Cout + o[None, :], tl.rsqrt(acc + 1e-8),
             mask=n_ok[:, None] & o_ok[None, :])


# ---- the epilogue alone ----

@triton.jit
def _plane_terms(dcoef_ptr, bias_ptr, plane, c, mask, HAS_DCOEF: tl.constexpr, HAS_BIAS: tl.constexpr):
    """(dcoef, bias) in fp32 of planes `plane` = n * C + c: 1 and 0 when absent."""
    d = 1.0
    b = 0.0
    if HAS_DCOEF:
        d = tl.load(dcoef_ptr + plane, mask=mask, other=0.0)
    if HAS_BIAS:
        b = tl.load(bias_ptr + c, mask=mask, other=0.0)
    return d, b


@triton.jit
def _noise_offsets(n, c, h, w, noise_sn, noise_sc, noise_sh, noise_sw):
    return n * noise_sn + c * noise_sc + h * noise_sh + w * noise_sw


@triton.jit
def _epilogue_z(a, d, b, noise_ptr, noffs, mask, HAS_DCOEF: tl.constexpr, HAS_NOISE: tl.constexpr,
                HAS_BIAS: tl.constexpr):
    """z = a * dcoef + noise + bias in fp32 (noise at offsets noffs), the terms present."""
    z = a
    if HAS_DCOEF:
        z = z * d
    if HAS_NOISE:
        z = z + tl.load(noise_ptr + noffs, mask=mask, other=0.0).to(tl.float32)
    if HAS_BIAS:
        z = z + b
    return z


@triton.jit
def _epilogue_fwd_tile(a_ptr, dcoef_ptr, noise_ptr, bias_ptr, out_ptr, offs, mask, numel, C, HW, W,
                       noise_sn, noise_sc, noise_sh, noise_sw, alpha, gain, clamp,
                       ACT: tl.constexpr, HAS_DCOEF: tl.constexpr, HAS_NOISE: tl.constexpr,
                       HAS_BIAS: tl.constexpr, ROUND_BF16: tl.constexpr, MASKED: tl.constexpr):
    if MASKED:
        a = tl.load(a_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    else:
        a = tl.load(a_ptr + offs).to(tl.float32)
    plane = offs // HW
    n = plane // C
    c = plane - n * C
    p = offs - plane * HW
    h = p // W
    # The gathers stay masked on full blocks too (they do not vectorize anyway).
    inside = offs < numel
    d, b = _plane_terms(dcoef_ptr, bias_ptr, plane, c, inside, HAS_DCOEF, HAS_BIAS)
    noffs = _noise_offsets(n, c, h, p - h * W, noise_sn, noise_sc, noise_sh, noise_sw)
    z = _epilogue_z(a, d, b, noise_ptr, noffs, inside, HAS_DCOEF, HAS_NOISE, HAS_BIAS)
    y = round_bf16(_bias_act_math(z, z, z, alpha, gain, clamp, ACT, 0), ROUND_BF16).to(out_ptr.dtype.element_ty)
    if MASKED:
        tl.store(out_ptr + offs, y, mask=mask)
    else:
        tl.store(out_ptr + offs, y)


@triton.jit
def _epilogue_fwd_kernel(
    a_ptr,      # [N, C, H, W] contiguous, D
    dcoef_ptr,  # [N, C] fp32; read when HAS_DCOEF
    noise_ptr,  # [N, C, H, W] D, strides noise_sn..noise_sw (0 on broadcast dims); read when HAS_NOISE
    bias_ptr,   # [C] fp32; read when HAS_BIAS
    out_ptr,    # [N, C, H, W] contiguous, D
    numel, C, HW, W,
    noise_sn, noise_sc, noise_sh, noise_sw,
    alpha, gain, clamp,
    ACT: tl.constexpr, HAS_DCOEF: tl.constexpr, HAS_NOISE: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK: tl.constexpr, INDEX_64: tl.constexpr,
    ROUND_BF16: tl.constexpr,   # bf16 under the interpreter, whose casts truncate (round_bf16)
):
    pid = tl.program_id(0)
    if INDEX_64:
        pid = pid.to(tl.int64)
    start = pid * BLOCK
    offs = start + tl.arange(0, BLOCK)
    # Full blocks run unmasked, so their loads and stores of a and out vectorize.
    if start + BLOCK <= numel:
        _epilogue_fwd_tile(a_ptr, dcoef_ptr, noise_ptr, bias_ptr, out_ptr, offs, None, numel, C, HW, W,
                           noise_sn, noise_sc, noise_sh, noise_sw, alpha, gain, clamp,
                           ACT, HAS_DCOEF, HAS_NOISE, HAS_BIAS, ROUND_BF16, False)
    else:
        _epilogue_fwd_tile(a_ptr, dcoef_ptr, noise_ptr, bias_ptr, out_ptr, offs, offs < numel, numel, C, HW, W,
                           noise_sn, noise_sc, noise_sh, noise_sw, alpha, gain, clamp,
                           ACT, HAS_DCOEF, HAS_NOISE, HAS_BIAS, ROUND_BF16, True)


@triton.jit
def _epilogue_bwd_kernel(
    g_ptr,      # [N, C, H, W] contiguous, D: dL/dout
    a_ptr,      # [N, C, H, W] contiguous, D
    dcoef_ptr,  # [N, C] fp32; read when HAS_DCOEF
    noise_ptr,  # [N, C, H, W] D, strides noise_sn..noise_sw; read when HAS_NOISE
    bias_ptr,   # [C] fp32; read when HAS_BIAS
    da_ptr,     # [N, C, H, W] contiguous, D
    sums_ptr,   # [N, C, 2] fp32: sum over the plane of dz, of dz * a
    planes, C, HW, W,          # planes = N * C
    noise_sn, noise_sc, noise_sh, noise_sw,
    alpha, gain, clamp,
    ACT: tl.constexpr, HAS_DCOEF: tl.constexpr, HAS_NOISE: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_PL: tl.constexpr, BLOCK_P: tl.constexpr, INDEX_64: tl.constexpr,
    ROUND_BF16: tl.constexpr,   # bf16 under the interpreter, whose casts truncate (round_bf16)
):
    plane = tl.program_id(0) * BLOCK_PL + tl.arange(0, BLOCK_PL)   # [BLOCK_PL]
    pl_ok = plane < planes
    n = plane // C
    c = plane - n * C
    if INDEX_64:
        plane = plane.to(tl.int64)
        n = n.to(tl.int64)
    base = plane * HW
    d, b = _plane_terms(dcoef_ptr, bias_ptr, plane, c, pl_ok, HAS_DCOEF, HAS_BIAS)
    if HAS_DCOEF:
        d = d[:, None]
    if HAS_BIAS:
        b = b[:, None]
    sum_dz = tl.zeros([BLOCK_PL], tl.float32)
    sum_dza = tl.zeros([BLOCK_PL], tl.float32)
    for p0 in range(0, HW, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        mask = pl_ok[:, None] & (p < HW)[None, :]
        offs = base[:, None] + p[None, :]
        a = tl.load(a_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        h = p // W
        noffs = _noise_offsets(n[:, None], c[:, None], h[None, :], (p - h * W)[None, :],
                               noise_sn, noise_sc, noise_sh, noise_sw)
        z = _epilogue_z(a, d, b, noise_ptr, noffs, mask, HAS_DCOEF, HAS_NOISE, HAS_BIAS)
        dz = tl.where(mask, _bias_act_math(z, g, g, alpha, gain, clamp, ACT, 1), 0.0)
        da = dz
        if HAS_DCOEF:
            da = dz * d
        tl.store(da_ptr + offs, round_bf16(da, ROUND_BF16).to(da_ptr.dtype.element_ty), mask=mask)
        sum_dz += tl.sum(dz, axis=1)
        sum_dza += tl.sum(dz * a, axis=1)
    tl.store(sums_ptr + 2 * plane, sum_dz, mask=pl_ok)
    tl.store(sums_ptr + 2 * plane + 1, sum_dza, mask=pl_ok)


# ---- launch configuration ----

# FMA contraction on, Triton's default; said explicitly because Triton 3.9 warns that the default will change.
_FP_FUSION = {"enable_fp_fusion": True}
INDEX_32_LIMIT = 2**31   # offsets past this take the int64 elementwise kernels (module constant: tests reach it)
# Tensor-core tiles (fp16, bf16, tf32): (BLOCK_M, BLOCK_N, num_warps) by output channels. Small Cout
# (ToRGB: 3) takes 16-wide tiles, the narrowest a dot allows; the rest 128x64 tiles over 8 warps
# (two m64n64 wgmma warpgroups on Hopper): ~130-160 registers a thread with the prefetched
# operands (see aot_specs), and Cout = 32 / 64 layers (StyleGAN2 at 512 and 1024) waste at most half.
GEMM_TILES = {16: (128, 16, 4), 64: (128, 64, 8)}
GEMM_BLOCK_K = {2: 32, 4: 16}   # by operand bytes: fp32 (TF32) operands take twice the registers
GEMM_STAGES = 2   # software pipelining of the loads Triton can make async (fp32 gathers, styles)
# fp32 "ieee" dots run on FMA units, not tensor cores: smaller tiles, two stages.
FMA_TILES = {16: (64, 16, 4), 64: (64, 64, 4)}
FMA_BLOCK_K = 32
FMA_STAGES = 2
EPILOGUE_BLOCK = 1024     # elements a program of the elementwise epilogue
EPILOGUE_BWD_TILE = 1024  # elements of a [planes, pixels] tile of the epilogue backward
EPILOGUE_WARPS = 4
DEMOD_BLOCKS = dict(BLOCK_O=16, BLOCK_I=16, max_n=32)   # [16, 16, taps] weight tiles: 32 fp32 a thread


def dot_precision(dtype: torch.dtype) -> str:
    """The dot's input precision: fp32 operands run "tf32" only when torch allows TF32 matmuls."""
    return "tf32" if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32 else "ieee"


def upcast_dot(dtype: torch.dtype) -> bool:
    """Whether the dot runs in fp32 on the dot-dtype values: only for bf16 under TRITON_INTERPRET,
    whose Triton 3.9 interpreter computes bf16 dots wrongly (the compiled path uses bf16 MMAs)."""
    return dtype == torch.bfloat16 and backends.triton_interpret()


def gemm_config(dtype: torch.dtype, cout: int, precision: str) -> dict:
    """Tiles, warps and pipeline stages of _modconv_kernel for Cout output channels."""
    if dtype == torch.float32 and precision == "ieee":
        block_m, block_n, warps = FMA_TILES[16 if cout <= 16 else 64]
        return dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=FMA_BLOCK_K, num_warps=warps, num_stages=FMA_STAGES)
    block_m, block_n, warps = GEMM_TILES[16 if cout <= 16 else 64]
    return dict(BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=GEMM_BLOCK_K[dtype.itemsize], num_warps=warps,
                num_stages=GEMM_STAGES)


def demod_config(batch: int) -> dict:
    block_n = min(max(triton.next_power_of_2(batch), 16), DEMOD_BLOCKS["max_n"])  # a dot needs 16 rows
    return dict(BLOCK_N=block_n, BLOCK_O=DEMOD_BLOCKS["BLOCK_O"], BLOCK_I=DEMOD_BLOCKS["BLOCK_I"])


def epilogue_bwd_config(pixels: int, planes: int) -> dict:
    """[BLOCK_PL planes, BLOCK_P pixels] tiles: whole small planes several a program, large ones looped."""
    block_p = min(triton.next_power_of_2(max(pixels, 1)), EPILOGUE_BWD_TILE)
    block_pl = min(EPILOGUE_BWD_TILE // block_p, triton.next_power_of_2(max(planes, 1)))
    return dict(BLOCK_PL=block_pl, BLOCK_P=block_p)


# ---- argument checks ----

_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _fail(what: str) -> ValueError:
    return ValueError(f"modulated_conv2d (triton): {what}")


def _describe(t: Optional[torch.Tensor]) -> str:
    return "None" if t is None else f"{tuple(t.shape)} {t.dtype} strides {t.stride()}"


def _check_main(name: str, t: torch.Tensor) -> None:
    if t.dtype not in _DTYPES:
        raise TypeError(f"modulated_conv2d (triton): {name} must be float16, bfloat16 or float32, got {t.dtype}")
    if t.ndim != 4 or not t.is_contiguous():
        raise _fail(f"{name} must be a contiguous [N, C, H, W] tensor, got {_describe(t)}")


def _check_small(name: str, t: Optional[torch.Tensor], shape: tuple, dtype: torch.dtype = torch.float32,
                 optional: bool = True) -> None:
    if t is None and optional:
        return
    if t is None or tuple(t.shape) != tuple(shape) or t.dtype != dtype or not t.is_contiguous():
        raise _fail(f"{name} must be a contiguous {list(shape)} {dtype} tensor, got {_describe(t)}")


def _check_noise(noise: Optional[torch.Tensor], shape: tuple, dtype: torch.dtype) -> None:
    if noise is not None and (tuple(noise.shape) != tuple(shape) or noise.dtype != dtype):
        raise _fail(f"noise must be expanded to {list(shape)} in {dtype}, got {_describe(noise)}")


def _check_act(act: str) -> int:
    if act not in ACTIVATIONS:
        raise _fail(f"act must be one of {sorted(ACTIVATIONS)}, got {act!r}")
    return ACTIVATIONS[act].code


def _check_device(main: torch.Tensor, **others: Optional[torch.Tensor]) -> None:
    for name, t in others.items():
        if t is not None and t.device != main.device:
            raise _fail(f"{name} is on {t.device}, the other tensors on {main.device}")


def _noise_args(noise: Optional[torch.Tensor], stand_in: torch.Tensor) -> tuple:
    """(pointer, sample, channel, row, column strides); stand-in and zeros without noise."""
    if noise is None:
        return (stand_in, 0, 0, 0, 0)
    return (noise, *noise.stride())


def _per_sample_span(t: torch.Tensor) -> int:
    """Largest offset from a sample's first element to one of its elements, plus one."""
    return 1 + sum((size - 1) * stride for size, stride in zip(t.shape[1:], t.stride()[1:]))


def _alloc(shape, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Every output comes from here (the tests fill them with NaN to catch unwritten elements)."""
    return torch.empty(shape, dtype=dtype, device=device)


def _device(t: torch.Tensor):
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


# ---- launchers ----

def forward(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, dcoef: Optional[torch.Tensor],
            noise: Optional[torch.Tensor], bias: Optional[torch.Tensor], padding: tuple[int, int, int, int],
            flip_weight: bool, act: str, alpha: float, gain: float, clamp: float,
            want_a: bool) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """reference.modconv_forward on Triton: the fused modulated convolution and epilogue.

    x: [N, Cin, H, W] contiguous fp16/bf16/fp32; weight: [Cout, Cin, kh, kw] contiguous, x's dtype;
    styles: [N, Cin] fp32; dcoef: [N, Cout] fp32 or None; noise: x's dtype expanded to
    [N, Cout, H', W'] (any strides) or None; bias: [Cout] fp32 or None; padding (x0, x1, y0, y1)
    >= 0. Returns (out [N, Cout, H', W'], a or None), new contiguous tensors in x's dtype.
    """
    _check_main("x", x)
    if weight.ndim != 4 or weight.dtype != x.dtype or not weight.is_contiguous() or weight.shape[1] != x.shape[1]:
        raise _fail(f"weight must be a contiguous [Cout, {x.shape[1]}, kh, kw] {x.dtype} tensor, "
                    f"got {_describe(weight)}")
    if len(padding) != 4 or any(not isinstance(p, int) or p < 0 for p in padding):
        raise _fail(f"padding must be four ints (x0, x1, y0, y1) >= 0, got {padding!r}")
    code = _check_act(act)
    n_, cin, h_, w_ = x.shape
    cout, _, kh, kw = weight.shape
    px0, px1, py0, py1 = padding
    ho, wo = h_ + py0 + py1 - kh + 1, w_ + px0 + px1 - kw + 1
    if ho < 1 or wo < 1:
        raise _fail(f"the padded input ({h_ + py0 + py1}x{w_ + px0 + px1}) is smaller than the kernel ({kh}x{kw})")
    _check_small("styles", styles, (n_, cin), optional=False)
    _check_small("dcoef", dcoef, (n_, cout))
    _check_small("bias", bias, (cout,))
    _check_noise(noise, (n_, cout, ho, wo), x.dtype)
    _check_device(x, weight=weight, styles=styles, dcoef=dcoef, noise=noise, bias=bias)
    if max(cin * h_ * w_, cout * ho * wo, weight.numel(), _per_sample_span(noise) if noise is not None else 0) \
            >= INDEX_32_LIMIT:
        raise _fail("one sample of x, out or noise, or the weight, has 2**31 elements or more")
    out = _alloc((n_, cout, ho, wo), x.dtype, x.device)
    a = _alloc((n_, cout, ho, wo), x.dtype, x.device) if want_a else None
    if out.numel() == 0:
        return out, a
    precision = dot_precision(x.dtype)
    cfg = gemm_config(x.dtype, cout, precision)
    num_co = triton.cdiv(cout, cfg["BLOCK_N"])
    tiles_per_sample = triton.cdiv(ho * wo, cfg["BLOCK_M"]) * num_co
    if n_ * tiles_per_sample >= 2**31:
        raise _fail(f"{n_ * tiles_per_sample} programs: more than a grid holds")
    noise_ptr, *noise_strides = _noise_args(noise, x)
    with _device(x):
        _modconv_kernel[(n_ * tiles_per_sample,)](
            x, weight, styles, dcoef if dcoef is not None else styles, noise_ptr,
            bias if bias is not None else styles, out, a if a is not None else out,
            cin, h_, w_, cout, wo, ho * wo, kh * kw, kw, py0, px0, *noise_strides, num_co, tiles_per_sample,
            float(alpha), float(gain), float(clamp),
            ACT=code, HAS_DCOEF=dcoef is not None, HAS_NOISE=noise is not None, HAS_BIAS=bias is not None,
            WANT_A=want_a, FLIP=not flip_weight, DOT_PRECISION=precision, UPCAST_DOT=upcast_dot(x.dtype),
            ROUND_BF16=rounds_bf16(x.dtype),
            **cfg, **_FP_FUSION)
    return out, a


def demod_coefficients(weight: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
    """reference.demod_coefficients on Triton: weight [Cout, Cin, kh, kw] contiguous fp16/bf16/fp32,
    styles [N, Cin] fp32 -> dcoef [N, Cout] fp32 (sums in fp32)."""
    if weight.dtype not in _DTYPES or weight.ndim != 4 or not weight.is_contiguous():
        raise _fail(f"weight must be a contiguous [Cout, Cin, kh, kw] float16, bfloat16 or float32 tensor, "
                    f"got {_describe(weight)}")
    cout, cin, kh, kw = weight.shape
    if styles.ndim != 2:
        raise _fail(f"styles must be [N, {cin}], got {_describe(styles)}")
    _check_small("styles", styles, (styles.shape[0], cin), optional=False)
    _check_device(weight, styles=styles)
    n_ = styles.shape[0]
    if weight.numel() >= INDEX_32_LIMIT or styles.numel() >= INDEX_32_LIMIT:
        raise _fail("weight or styles has 2**31 elements or more")
    dcoef = _alloc((n_, cout), torch.float32, weight.device)
    if dcoef.numel() == 0:
        return dcoef
    cfg = demod_config(n_)
    grid = (triton.cdiv(cout, cfg["BLOCK_O"]), triton.cdiv(n_, cfg["BLOCK_N"]))
    with _device(weight):
        _demod_kernel[grid](weight, styles, dcoef, n_, cout, cin, kh * kw, **cfg,
                            BLOCK_T=triton.next_power_of_2(kh * kw), num_warps=4, **_FP_FUSION)
    return dcoef


def _epilogue_checks(a, dcoef, noise, bias, act) -> int:
    _check_main("a", a)
    _check_small("dcoef", dcoef, tuple(a.shape[:2]))
    _check_small("bias", bias, (a.shape[1],))
    _check_noise(noise, tuple(a.shape), a.dtype)
    _check_device(a, dcoef=dcoef, noise=noise, bias=bias)
    return _check_act(act)


def _index_64(a: torch.Tensor, noise: Optional[torch.Tensor], slack: int) -> bool:
    """Whether offsets (masked lanes up to `slack` past the end included) can reach INDEX_32_LIMIT."""
    span = a.numel() + slack
    if noise is not None:
        span = max(span, noise.shape[0] * noise.stride(0) + _per_sample_span(noise) + slack)
    return span >= INDEX_32_LIMIT


def epilogue_forward(a: torch.Tensor, dcoef: Optional[torch.Tensor], noise: Optional[torch.Tensor],
                     bias: Optional[torch.Tensor], act: str, alpha: float, gain: float,
                     clamp: float) -> torch.Tensor:
    """reference.epilogue_forward on Triton: a [N, C, H, W] contiguous fp16/bf16/fp32; dcoef [N, C]
    and bias [C] fp32 or None; noise a's dtype expanded to a's shape or None. Returns a new out."""
    code = _epilogue_checks(a, dcoef, noise, bias, act)
    out = _alloc(a.shape, a.dtype, a.device)
    numel = a.numel()
    if numel == 0:
        return out
    _, c_, h_, w_ = a.shape
    noise_ptr, *noise_strides = _noise_args(noise, a)
    with _device(a):
        _epilogue_fwd_kernel[(triton.cdiv(numel, EPILOGUE_BLOCK),)](
            a, dcoef if dcoef is not None else a, noise_ptr, bias if bias is not None else a, out,
            numel, c_, h_ * w_, w_, *noise_strides, float(alpha), float(gain), float(clamp),
            ACT=code, HAS_DCOEF=dcoef is not None, HAS_NOISE=noise is not None, HAS_BIAS=bias is not None,
            BLOCK=EPILOGUE_BLOCK, INDEX_64=_index_64(a, noise, EPILOGUE_BLOCK), ROUND_BF16=rounds_bf16(a.dtype),
            num_warps=EPILOGUE_WARPS,
            **_FP_FUSION)
    return out


def epilogue_backward(g: torch.Tensor, a: torch.Tensor, dcoef: Optional[torch.Tensor],
                      noise: Optional[torch.Tensor], bias: Optional[torch.Tensor], act: str,
                      alpha: float, gain: float, clamp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """reference.epilogue_backward on Triton: g = dL/dout like a; the rest as epilogue_forward.
    Returns (da like a, sums [N, C, 2] fp32: per-plane sum of dz and of dz * a)."""
    code = _epilogue_checks(a, dcoef, noise, bias, act)
    if g.shape != a.shape or g.dtype != a.dtype or not g.is_contiguous() or g.device != a.device:
        raise _fail(f"g must be contiguous with a's shape {tuple(a.shape)} and dtype {a.dtype}, got {_describe(g)}")
    n_, c_, h_, w_ = a.shape
    da = _alloc(a.shape, a.dtype, a.device)
    sums = _alloc((n_, c_, 2), torch.float32, a.device)
    if n_ * c_ == 0:
        return da, sums
    if h_ * w_ == 0:
        return da, sums.zero_()
    cfg = epilogue_bwd_config(h_ * w_, n_ * c_)
    slack = cfg["BLOCK_PL"] * h_ * w_ + cfg["BLOCK_P"]
    noise_ptr, *noise_strides = _noise_args(noise, a)
    with _device(a):
        _epilogue_bwd_kernel[(triton.cdiv(n_ * c_, cfg["BLOCK_PL"]),)](
            g, a, dcoef if dcoef is not None else sums, noise_ptr,
            bias if bias is not None else sums, da, sums, n_ * c_, c_, h_ * w_, w_, *noise_strides,
            float(alpha), float(gain), float(clamp),
            ACT=code, HAS_DCOEF=dcoef is not None, HAS_NOISE=noise is not None, HAS_BIAS=bias is not None,
            INDEX_64=_index_64(a, noise, slack), ROUND_BF16=rounds_bf16(a.dtype), num_warps=EPILOGUE_WARPS,
            **cfg, **_FP_FUSION)
    return da, sums


# ---- configurations, for ahead-of-time checks (ganfast.testing.triton_aot) ----

_TRITON_DTYPE = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}
_FLOATS = {"alpha": "fp32", "gain": "fp32", "clamp": "fp32"}
_NOISE_STRIDES = ("noise_sn", "noise_sc", "noise_sh", "noise_sw")


def _specialized(ints: dict, signature: dict, constexprs: dict, aligned: list) -> None:
    """Add runtime ints the way the JIT specializes them: a value of 1 becomes a constant, a
    multiple of 16 is marked divisible."""
    for name, value in ints.items():
        if value == 1:
            constexprs[name] = 1
        else:
            signature[name] = "i32"
            if value % 16 == 0:
                aligned.append(name)


def _gemm_spec(dtype: torch.dtype, precision: str, tile: dict, act: str, layer: str, flags: dict,
               flip: bool = False) -> dict:
    """One _modconv_kernel launch. layer: 'conv' (3x3, padding 1, 32x32 map, 512 -> 512 channels,
    noise [N, 1, H, W] expanded) or 'torgb' (1x1, 32x32 map, 512 -> 3 channels); flags: HAS_DCOEF,
    HAS_NOISE, HAS_BIAS, WANT_A."""
    d = _TRITON_DTYPE[dtype]
    signature = {"x_ptr": f"*{d}", "w_ptr": f"*{d}", "s_ptr": "*fp32", "dcoef_ptr": "*fp32", "noise_ptr": f"*{d}",
                 "bias_ptr": "*fp32", "out_ptr": f"*{d}", "a_ptr": f"*{d}"}
    aligned = list(signature)
    constexprs = dict(ACT=ACTIVATIONS[act].code, FLIP=flip, DOT_PRECISION=precision, UPCAST_DOT=False, ROUND_BF16=False,
                      BLOCK_M=tile["BLOCK_M"], BLOCK_N=tile["BLOCK_N"], BLOCK_K=tile["BLOCK_K"], **flags)
    hw = 32
    cout = 512 if layer == "conv" else 3
    k = 3 if layer == "conv" else 1
    pad = 1 if layer == "conv" else 0
    noise = (hw * hw, 0, hw, 1) if flags["HAS_NOISE"] else (0, 0, 0, 0)
    num_co = triton.cdiv(cout, tile["BLOCK_N"])
    ints = dict(Cin=512, H=hw, W=hw, Cout=cout, Wo=hw, M=hw * hw, KK=k * k, KW=k, py0=pad, px0=pad,
                **dict(zip(_NOISE_STRIDES, noise)), num_co_tiles=num_co,
                tiles_per_sample=triton.cdiv(hw * hw, tile["BLOCK_M"]) * num_co)
    _specialized(ints, signature, constexprs, aligned)
    signature.update(_FLOATS)
    on = "".join(letter for letter, flag in zip("dnba", ("HAS_DCOEF", "HAS_NOISE", "HAS_BIAS", "WANT_A"))
                 if flags[flag])
    return dict(name=f"modconv {d}{' tf32' if precision == 'tf32' else ''} {layer} {act} flags={on or '-'}"
                     f"{' flip' if flip else ''} tile={tile['BLOCK_M']}x{tile['BLOCK_N']}x{tile['BLOCK_K']}",
                kernel=f"{__name__}:_modconv_kernel", signature=signature, constexprs=constexprs, aligned=aligned,
                options=dict(num_warps=tile["num_warps"], num_stages=tile["num_stages"], **_FP_FUSION),
                vector_io=False, gemm=True, tensor_cores=dtype != torch.float32 or precision == "tf32")


def _demod_spec(dtype: torch.dtype, taps: int, batch: int) -> dict:
    d = _TRITON_DTYPE[dtype]
    signature = {"w_ptr": f"*{d}", "s_ptr": "*fp32", "dcoef_ptr": "*fp32"}
    aligned = list(signature)
    cfg = demod_config(batch)
    constexprs = dict(**cfg, BLOCK_T=triton.next_power_of_2(taps))
    _specialized(dict(N=batch, Cout=512, Cin=512, KK=taps), signature, constexprs, aligned)
    return dict(name=f"demod {d} taps={taps} N={batch} tile={cfg['BLOCK_N']}x{cfg['BLOCK_O']}x{cfg['BLOCK_I']}",
                kernel=f"{__name__}:_demod_kernel", signature=signature, constexprs=constexprs, aligned=aligned,
                options=dict(num_warps=4, **_FP_FUSION), vector_io=False, gemm=False, tensor_cores=False)


def _epilogue_spec(dtype: torch.dtype, backward: bool, act: str, shape: tuple[int, int, int, int],
                   flags: tuple[bool, bool, bool] = (True, True, True), index_64: bool = False) -> dict:
    """One epilogue launch on a [N, C, H, W] tensor; flags: (HAS_DCOEF, HAS_NOISE, HAS_BIAS);
    noise [N, 1, H, W] expanded."""
    d = _TRITON_DTYPE[dtype]
    n_, c_, h_, w_ = shape
    has_dcoef, has_noise, has_bias = flags
    if backward:
        signature = {"g_ptr": f"*{d}", "a_ptr": f"*{d}", "dcoef_ptr": "*fp32", "noise_ptr": f"*{d}",
                     "bias_ptr": "*fp32", "da_ptr": f"*{d}", "sums_ptr": "*fp32"}
        cfg = epilogue_bwd_config(h_ * w_, n_ * c_)
        ints = dict(planes=n_ * c_, C=c_, HW=h_ * w_, W=w_)
        kernel = "_epilogue_bwd_kernel"
        tile = f"tile={cfg['BLOCK_PL']}x{cfg['BLOCK_P']}"
        # 128-bit accesses need rows of 16 bytes.
        vector_io = cfg["BLOCK_P"] * dtype.itemsize >= 16 and (h_ * w_) % 16 == 0
    else:
        signature = {"a_ptr": f"*{d}", "dcoef_ptr": "*fp32", "noise_ptr": f"*{d}", "bias_ptr": "*fp32",
                     "out_ptr": f"*{d}"}
        cfg = dict(BLOCK=EPILOGUE_BLOCK)
        ints = dict(numel=n_ * c_ * h_ * w_, C=c_, HW=h_ * w_, W=w_)
        kernel = "_epilogue_fwd_kernel"
        tile = f"BLOCK={EPILOGUE_BLOCK}"
        vector_io = True
    aligned = list(signature)
    constexprs = dict(ACT=ACTIVATIONS[act].code, HAS_DCOEF=has_dcoef, HAS_NOISE=has_noise, HAS_BIAS=has_bias,
                      INDEX_64=index_64, ROUND_BF16=False, **cfg)
    noise = (h_ * w_, 0, w_, 1) if has_noise else (0, 0, 0, 0)
    _specialized({**ints, **dict(zip(_NOISE_STRIDES, noise))}, signature, constexprs, aligned)
    if index_64:
        signature.update({k: "i64" for k in ("numel", "noise_sn") if signature.get(k) == "i32"})
    signature.update(_FLOATS)
    on = "".join(f for f, v in zip("dnb", flags) if v)
    return dict(name=f"epilogue {'bwd' if backward else 'fwd'} {d} {act} flags={on or '-'} "
                     f"{n_}x{c_}x{h_}x{w_} {tile}{' int64' if index_64 else ''}",
                kernel=f"{__name__}:{kernel}", signature=signature, constexprs=constexprs, aligned=aligned,
                options=dict(num_warps=EPILOGUE_WARPS, **_FP_FUSION), vector_io=vector_io, gemm=False,
                tensor_cores=False)


def _gemm_tiles(dtype: torch.dtype, precision: str) -> list[dict]:
    """Every distinct configuration gemm_config returns for this dtype and precision."""
    tiles = []
    for cout in (3, 64, 512):
        cfg = gemm_config(dtype, cout, precision)
        if cfg not in tiles:
            tiles.append(cfg)
    return tiles


def aot_specs(full: bool = False) -> list[dict]:
    """The configurations the launchers launch, as ganfast.testing.triton_aot specs (extra keys:
    gemm, tensor_cores: the convolution, and whether its dot must run on tensor cores).

    The convolution: every tile gemm_config picks, for fp16, bf16, fp32 ("ieee", FMA) and fp32
    with TF32; 16-wide tiles (ToRGB) as a 1x1 linear layer with bias alone, the others as the
    StyleGAN2 3x3 conv (demodulation, noise, bias, and a for the backward) with lrelu (fp16,
    TF32) or swish and true convolution (bf16, fp32: the most math). The demodulation prologue
    for 3x3 and 1x1 kernels; the epilogue kernels with swish, the backward on 64x64 maps (planes
    looped) and 4x4 maps (64 planes a program); both with int64 offsets. full=True: every
    activation for every convolution tile (a manual run).
    """
    conv_flags = dict(HAS_DCOEF=True, HAS_NOISE=True, HAS_BIAS=True, WANT_A=True)
    rgb_flags = dict(HAS_DCOEF=False, HAS_NOISE=False, HAS_BIAS=True, WANT_A=False)
    specs = []
    for dtype, precision, conv_act, flip in ((torch.float16, "ieee", "lrelu", False),
                                             (torch.bfloat16, "ieee", "swish", True),
                                             (torch.float32, "tf32", "lrelu", False),
                                             (torch.float32, "ieee", "swish", True)):
        for tile in _gemm_tiles(dtype, precision):
            rgb = tile["BLOCK_N"] == 16
            for act in (tuple(ACTIVATIONS) if full else ("linear" if rgb else conv_act,)):
                specs.append(_gemm_spec(dtype, precision, tile, act, "torgb" if rgb else "conv",
                                        rgb_flags if rgb else conv_flags, flip=flip and not rgb))
    for dtype in _TRITON_DTYPE:
        specs.append(_demod_spec(dtype, 9, 32))
        specs.append(_epilogue_spec(dtype, False, "swish", (32, 128, 64, 64)))
        specs.append(_epilogue_spec(dtype, True, "swish", (32, 128, 64, 64)))
    specs.append(_demod_spec(torch.float16, 1, 4))
    specs.append(_epilogue_spec(torch.float16, True, "lrelu", (32, 512, 4, 4)))
    for backward in (False, True):
        specs.append(_epilogue_spec(torch.float16, backward, "lrelu", (32, 64, 256, 256), index_64=True))
    return specs
