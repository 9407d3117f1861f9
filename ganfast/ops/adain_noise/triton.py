"""adain_noise in Triton: kernels and the launchers behind backend='triton'.

Memory view (as in csrc/adain_noise/adain_noise.h): x, g, out and dx are [N, C, M] (M = H*W)
with element (n, c, p) at n*sN + c*M + p (contiguous NCHW) or n*sN + p*C + c (channels_last).
The layout is a compile-time flag, so the compiler knows the contiguous axis and coalesces and
vectorizes along it. noise is [Nn, M] with sample stride 0 when Nn == 1. Every kernel works on
[BLOCK_C, BLOCK_P] tiles (channels x pixels) of one sample, in fp32.

Two paths, chosen per shape by `plan`:
  fused  the whole plane fits one program (BLOCK_P >= M; several channels per program on small
         maps), so x (and g) are read once:
           _fwd_fused_kernel  mean, then the sum of squared deviations, exactly in registers;
                              writes out and stats.
           _bwd_fused_kernel  writes dx, ds, dt, sdz, sdzn.
  split  larger planes: each plane over `num_splits` programs of `iters` tiles each:
           _split_partials_kernel  per (n, c, split): forward (mean, M2) of y over the split's
                              pixels, from each tile's exact mean and M2 by Chan's combination
                              (stable whatever the offset of y);
                              backward (sum g, sum g * yhat, sum yhat).
           _split_apply_kernel  combines its plane's partials, then forward writes out (and
                              stats, split 0); backward writes dx, ds and dt (split 0) and its
                              split's sums of dz and dz * noise, which torch sums over splits.

Seeded noise (seed >= 0) is drawn in the kernels with the bits of reference.draw_noise (see
csrc/common/noise_rng.h), once per pixel and shared by the tile's channels, and drawn again in the
backward: no noise tensor is ever stored.

Every bf16 the kernels write (out, dx) is its fp32 value rounded to nearest even, the compiled
cast's rounding; under TRITON_INTERPRET, whose casts truncate, ganfast.ops._triton.round_bf16
does the rounding (ROUND_BF16), so the CPU tests see a GPU's numbers (issue 26).
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch
import triton
import triton.language as tl

from ganfast.ops._triton import round_bf16, rounds_bf16
from ganfast.ops.bias_act.reference import ACTIVATIONS
from ganfast.ops.bias_act.triton import _act

# noise modes (the NOISE constexpr)
_NO_NOISE = 0
_NOISE_TENSOR = 1
_NOISE_SEEDED = 2


# ---- seeded noise: reference.draw_noise in uint32 and fp32 ----

@triton.jit
def _mix32(x):
    # uint32 in, uint32 out: multiplications wrap mod 2**32, shifts are logical.
    x = x ^ (x >> 16)
    x = x * 0x21F0AAAD
    x = x ^ (x >> 15)
    x = x * 0x735A2D97
    return x ^ (x >> 15)


@triton.jit
def _noise_keys(seed_lo, seed_hi, n):
    """The two stream keys (uint32) of sample n; seed_lo, seed_hi: the seed's 32-bit halves as int32 bits."""
    lo = tl.cast(seed_lo, tl.uint32, bitcast=True)
    hi = tl.cast(seed_hi, tl.uint32, bitcast=True)
    two_n = n.to(tl.uint32) * 2
    k0 = _mix32(_mix32(lo ^ _mix32(two_n)) ^ hi)
    k1 = _mix32(_mix32(lo ^ _mix32(two_n + 1)) ^ hi)
    return k0, k1


@triton.jit
def _ln_unit(u):
    """ln u for u in (0, 1]. Near 1 (where the noise is near 0) as log1p(u - 1) by 2 atanh(s),
    s = e / (2 + e), e = u - 1 exact, |s| < 0.143: a relative error of fp32 rounding whatever
    the GPU's log does there (an absolute error of 1e-7 would swamp noise values near 0)."""
    e = u - 1.0
    s = e / (2.0 + e)
    s2 = s * s
    series = 2.0 * s * (1.0 + s2 * (1.0 / 3.0 + s2 * (1.0 / 5.0 + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0)))))
    return tl.where(u > 0.75, series, tl.log(u))


@triton.jit
def _cos_2pi(u):
    """cos(2 pi u) for u in [0, 1) on a 2**-24 grid: reduced by symmetry (exactly: every step
    below is exact on that grid) to a Taylor polynomial of cos or sin on [0, pi/4], so no general
    range reduction (libdevice's cosf carries a slow path that costs ~60 registers)."""
    r = tl.where(u > 0.5, 1.0 - u, u)           # cos(2 pi u) = cos(2 pi (1 - u)); r in [0, 0.5]
    a = tl.where(r > 0.25, 0.5 - r, r)          # cos(2 pi r) = -cos(2 pi (0.5 - r)); a in [0, 0.25]
    b = tl.where(a > 0.125, 0.25 - a, a)        # cos(2 pi a) = sin(2 pi (0.25 - a)); b in [0, 0.125]
    x = 6.283185307179586 * b
    x2 = x * x
    cos_x = 1.0 - x2 * (1.0 / 2.0 - x2 * (1.0 / 24.0 - x2 * (1.0 / 720.0 - x2 * (1.0 / 40320.0 - x2 * (
        1.0 / 3628800.0)))))
    sin_x = x * (1.0 - x2 * (1.0 / 6.0 - x2 * (1.0 / 120.0 - x2 * (1.0 / 5040.0 - x2 * (1.0 / 362880.0)))))
    v = tl.where(a > 0.125, sin_x, cos_x)
    return tl.where(r > 0.25, -v, v)


@triton.jit
def _noise_at(k0, k1, p):
    """Standard-normal noise (fp32) at pixels p of the sample with keys k0, k1 (Box-Muller)."""
    q = _mix32(p.to(tl.uint32))
    h0 = _mix32(k0 ^ q)
    h1 = _mix32(k1 ^ q)
    u1 = ((h0 >> 8) + 1).to(tl.float32) * 5.9604644775390625e-8  # 2**-24: (0, 1]
    u2 = (h1 >> 8).to(tl.float32) * 5.9604644775390625e-8        # [0, 1)
    return tl.sqrt(-2.0 * _ln_unit(u1)) * _cos_2pi(u2)


# ---- tiles ----

@triton.jit
def _channel_params(ns_ptr, b_ptr, c, cmask, HAS_NS: tl.constexpr, HAS_B: tl.constexpr, BLOCK_C: tl.constexpr):
    """(ns, b) of channels c, [BLOCK_C] fp32 (1 and 0 when absent)."""
    ns = tl.full([BLOCK_C], 1.0, tl.float32)
    b = tl.zeros([BLOCK_C], tl.float32)
    if HAS_NS:
        ns = tl.load(ns_ptr + c, mask=cmask, other=1.0)
    if HAS_B:
        b = tl.load(b_ptr + c, mask=cmask, other=0.0)
    return ns, b


@triton.jit
def _tile_offsets(n, c, p, C, M, sN, CHANNELS_LAST: tl.constexpr, INDEX_64: tl.constexpr):
    """[BLOCK_C, BLOCK_P] storage offsets of channels c, pixels p of sample n."""
    if INDEX_64:
        n = n.to(tl.int64)
        c = c.to(tl.int64)
        p = p.to(tl.int64)
    if CHANNELS_LAST:
        offs = n * sN + p[None, :] * C + c[:, None]
    else:
        offs = n * sN + c[:, None] * M + p[None, :]
    return offs


@triton.jit
def _tile_z(x_ptr, noise_ptr, offs, mask, p, pmask, noise_base, k0, k1, ns, b, NOISE: tl.constexpr):
    """z = x + ns * noise + b on a tile (fp32, [BLOCK_C, BLOCK_P]) and the noise, [BLOCK_P] fp32
    (zeros without noise)."""
    z = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if NOISE == 1:
        nz = tl.load(noise_ptr + noise_base + p, mask=pmask, other=0.0).to(tl.float32)
    elif NOISE == 2:
        nz = _noise_at(k0, k1, p)
    else:
        nz = tl.zeros(p.shape, tl.float32)
    if NOISE != 0:
        z = z + ns[:, None] * nz[None, :]
    return z + b[:, None], nz


@triton.jit
def _mean_and_deviations(y, mask, count):
    """(mean [BLOCK_C], y - mean [BLOCK_C, BLOCK_P], 0 where masked off) of each row's `count`
    unmasked values (y is 0 where masked off). Corrected two-pass: the fp32 sum of y loses low
    bits when y sits far from 0 (an fp16 layer around 300 with a spread of 1), and the mean
    of the deviations from that first mean puts them back, so sum(y - mean) ~ 0 to rounding,
    which the backward's sdz (exactly 0 for linear layers) relies on."""
    mean = tl.sum(y, axis=1) / count
    d = tl.where(mask, y - mean[:, None], 0.0)
    correction = tl.sum(d, axis=1) / count
    return mean + correction, tl.where(mask, d - correction[:, None], 0.0)


@triton.jit
def _dz(z, g, yhat, mask, alpha, k, mg, mgy, myh, ACT: tl.constexpr):
    """dL/dz = f'(z) * k * (g - mg - (yhat - myh) * mgy) with k = gain * rstd * s, mg = sum g / M,
    mgy = sum g * yhat / M, myh = sum yhat / M (per channel, [BLOCK_C]); 0 where masked off.
    myh is 0 but for rounding (of the mean in stats, ~1e-7 of |mean|); subtracting it keeps
    sum dz (exactly 0 for linear layers) at rounding level when y sits far from 0."""
    dz = _act(z, alpha, ACT, 1) * k[:, None] * (g - mg[:, None] - (yhat - myh[:, None]) * mgy[:, None])
    return tl.where(mask, dz, 0.0)


# ---- fused: the plane in one program ----

@triton.jit(do_not_specialize=["seed_lo", "seed_hi"])
def _fwd_fused_kernel(
    x_ptr,      # [N, C, M] dtype D, layout per CHANNELS_LAST, sample stride sN
    s_ptr,      # [N, C] fp32 (style scale)
    t_ptr,      # [N, C] fp32 (style bias)
    noise_ptr,  # [Nn, M] dtype D, sample stride noise_sN (0 when Nn == 1); read when NOISE == 1
    ns_ptr,     # [C] fp32; read when HAS_NS
    b_ptr,      # [C] fp32; read when HAS_B
    out_ptr,    # [N, C, M] like x
    stats_ptr,  # [N, C, 2] fp32: mean(y), rsqrt(var(y) + eps)
    C, M, sN, noise_sN, num_cb,   # num_cb = cdiv(C, BLOCK_C)
    seed_lo, seed_hi,             # int32 bits of the seed's low and high halves; used when NOISE == 2
    alpha, gain, eps,
    ACT: tl.constexpr, NOISE: tl.constexpr, HAS_NS: tl.constexpr, HAS_B: tl.constexpr,
    CHANNELS_LAST: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, INDEX_64: tl.constexpr,
    ROUND_BF16: tl.constexpr,   # bf16 under the interpreter, whose casts truncate (round_bf16)
):
    pid = tl.program_id(0)
    n = pid // num_cb
    c = (pid % num_cb) * BLOCK_C + tl.arange(0, BLOCK_C)
    p = tl.arange(0, BLOCK_P)
    cmask = c < C
    pmask = p < M
    mask = cmask[:, None] & pmask[None, :]
    ns, b = _channel_params(ns_ptr, b_ptr, c, cmask, HAS_NS, HAS_B, BLOCK_C)
    k0, k1 = _noise_keys(seed_lo, seed_hi, n)
    offs = _tile_offsets(n, c, p, C, M, sN, CHANNELS_LAST, INDEX_64)
    z, nz = _tile_z(x_ptr, noise_ptr, offs, mask, p, pmask, n * noise_sN, k0, k1, ns, b, NOISE)
    y = tl.where(mask, _act(z, alpha, ACT, 0) * gain, 0.0)
    mean, d = _mean_and_deviations(y, mask, M)
    rstd = tl.rsqrt(tl.sum(d * d, axis=1) / M + eps)
    plane = n * C + c
    s = tl.load(s_ptr + plane, mask=cmask, other=0.0)
    t = tl.load(t_ptr + plane, mask=cmask, other=0.0)
    out = d * (rstd * s)[:, None] + t[:, None]
    tl.store(out_ptr + offs, round_bf16(out, ROUND_BF16).to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(stats_ptr + 2 * plane, mean, mask=cmask)
    tl.store(stats_ptr + 2 * plane + 1, rstd, mask=cmask)


@triton.jit(do_not_specialize=["seed_lo", "seed_hi"])
def _bwd_fused_kernel(
    g_ptr,      # [N, C, M] like x: dL/dout
    x_ptr,      # [N, C, M] dtype D, layout per CHANNELS_LAST, sample stride sN
    s_ptr,      # [N, C] fp32 (style scale)
    noise_ptr,  # [Nn, M] dtype D, sample stride noise_sN; read when NOISE == 1
    ns_ptr,     # [C] fp32; read when HAS_NS
    b_ptr,      # [C] fp32; read when HAS_B
    stats_ptr,  # [N, C, 2] fp32 from the forward: mean(y), rstd
    dx_ptr,     # [N, C, M] like x
    ds_ptr,     # [N, C] fp32: sum g * yhat
    dt_ptr,     # [N, C] fp32: sum g
    sdz_ptr,    # [N, C] fp32: sum dz
    sdzn_ptr,   # [N, C] fp32: sum dz * noise
    C, M, sN, noise_sN, num_cb, seed_lo, seed_hi, alpha, gain,
    ACT: tl.constexpr, NOISE: tl.constexpr, HAS_NS: tl.constexpr, HAS_B: tl.constexpr,
    CHANNELS_LAST: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, INDEX_64: tl.constexpr,
    ROUND_BF16: tl.constexpr,   # bf16 under the interpreter, whose casts truncate (round_bf16)
):
    pid = tl.program_id(0)
    n = pid // num_cb
    c = (pid % num_cb) * BLOCK_C + tl.arange(0, BLOCK_C)
    p = tl.arange(0, BLOCK_P)
    cmask = c < C
    pmask = p < M
    mask = cmask[:, None] & pmask[None, :]
    ns, b = _channel_params(ns_ptr, b_ptr, c, cmask, HAS_NS, HAS_B, BLOCK_C)
    k0, k1 = _noise_keys(seed_lo, seed_hi, n)
    plane = n * C + c
    mean = tl.load(stats_ptr + 2 * plane, mask=cmask, other=0.0)
    rstd = tl.load(stats_ptr + 2 * plane + 1, mask=cmask, other=0.0)
    s = tl.load(s_ptr + plane, mask=cmask, other=0.0)
    offs = _tile_offsets(n, c, p, C, M, sN, CHANNELS_LAST, INDEX_64)
    z, nz = _tile_z(x_ptr, noise_ptr, offs, mask, p, pmask, n * noise_sN, k0, k1, ns, b, NOISE)
    yhat = tl.where(mask, (_act(z, alpha, ACT, 0) * gain - mean[:, None]) * rstd[:, None], 0.0)
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    sg = tl.sum(g, axis=1)
    sgy = tl.sum(g * yhat, axis=1)
    dz = _dz(z, g, yhat, mask, alpha, gain * rstd * s, sg / M, sgy / M, tl.sum(yhat, axis=1) / M, ACT)
    tl.store(dx_ptr + offs, round_bf16(dz, ROUND_BF16).to(dx_ptr.dtype.element_ty), mask=mask)
    tl.store(ds_ptr + plane, sgy, mask=cmask)
    tl.store(dt_ptr + plane, sg, mask=cmask)
    tl.store(sdz_ptr + plane, tl.sum(dz, axis=1), mask=cmask)
    tl.store(sdzn_ptr + plane, tl.sum(dz * nz[None, :], axis=1), mask=cmask)


# ---- split: the plane over several programs ----

@triton.jit
def _split_program(pid, num_cb, num_splits, iters, M, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr):
    """(n, channels [BLOCK_C], split, first pixel, tiles) of program pid: each split covers
    iters * BLOCK_P pixels, the last one what is left (at least one tile)."""
    split = pid % num_splits
    rest = pid // num_splits
    n = rest // num_cb
    c = (rest % num_cb) * BLOCK_C + tl.arange(0, BLOCK_C)
    first = split * iters * BLOCK_P
    tiles = tl.minimum(iters, tl.cdiv(M - first, BLOCK_P))
    return n, c, split, first, tiles


@triton.jit(do_not_specialize=["seed_lo", "seed_hi"])
def _split_partials_kernel(
    x_ptr,      # [N, C, M] dtype D, layout per CHANNELS_LAST, sample stride sN
    g_ptr,      # [N, C, M] like x: dL/dout; read when BACKWARD
    noise_ptr,  # [Nn, M] dtype D, sample stride noise_sN; read when NOISE == 1
    ns_ptr,     # [C] fp32; read when HAS_NS
    b_ptr,      # [C] fp32; read when HAS_B
    stats_ptr,  # [N, C, 2] fp32 from the forward: mean(y), rstd; read when BACKWARD
    part_ptr,   # fp32 [N, C, 2, num_splits]: (mean, M2) of y over each split; BACKWARD [N, C, 3, num_splits]:
                # (sum g, sum g * yhat, sum yhat)
    C, M, sN, noise_sN, num_cb, num_splits, iters, seed_lo, seed_hi, alpha, gain,
    ACT: tl.constexpr, NOISE: tl.constexpr, HAS_NS: tl.constexpr, HAS_B: tl.constexpr,
    CHANNELS_LAST: tl.constexpr, BACKWARD: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
    INDEX_64: tl.constexpr,
):
    n, c, split, first, tiles = _split_program(tl.program_id(0), num_cb, num_splits, iters, M, BLOCK_C, BLOCK_P)
    cmask = c < C
    ns, b = _channel_params(ns_ptr, b_ptr, c, cmask, HAS_NS, HAS_B, BLOCK_C)
    k0, k1 = _noise_keys(seed_lo, seed_hi, n)
    plane = n * C + c
    if BACKWARD:
        mean = tl.load(stats_ptr + 2 * plane, mask=cmask, other=0.0)
        rstd = tl.load(stats_ptr + 2 * plane + 1, mask=cmask, other=0.0)
    acc0 = tl.zeros([BLOCK_C], tl.float32)  # forward: running mean; backward: sum g
    acc1 = tl.zeros([BLOCK_C], tl.float32)  # forward: running M2; backward: sum g * yhat
    acc2 = tl.zeros([BLOCK_C], tl.float32)  # backward: sum yhat
    for i in range(tiles):
        p = first + i * BLOCK_P + tl.arange(0, BLOCK_P)
        pmask = p < M
        mask = cmask[:, None] & pmask[None, :]
        offs = _tile_offsets(n, c, p, C, M, sN, CHANNELS_LAST, INDEX_64)
        z, nz = _tile_z(x_ptr, noise_ptr, offs, mask, p, pmask, n * noise_sN, k0, k1, ns, b, NOISE)
        y = _act(z, alpha, ACT, 0) * gain
        if BACKWARD:
            g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            yhat = tl.where(mask, (y - mean[:, None]) * rstd[:, None], 0.0)
            acc0 += tl.sum(g, axis=1)
            acc1 += tl.sum(g * yhat, axis=1)
            acc2 += tl.sum(yhat, axis=1)
        else:
            # Chan et al.: fold this tile's (count, mean, M2) into the running ones; every earlier
            # tile of the split was full.
            start = first + i * BLOCK_P
            seen = (start - first).to(tl.float32)
            count = tl.minimum(M - start, BLOCK_P).to(tl.float32)
            tile_mean, d = _mean_and_deviations(tl.where(mask, y, 0.0), mask, count)
            delta = tile_mean - acc0
            total = seen + count
            acc0 += delta * (count / total)
            acc1 += tl.sum(d * d, axis=1) + delta * delta * (seen * count / total)
    if BACKWARD:
        row = part_ptr + 3 * plane * num_splits + split
        tl.store(row + 2 * num_splits, acc2, mask=cmask)
    else:
        row = part_ptr + 2 * plane * num_splits + split
    tl.store(row, acc0, mask=cmask)
    tl.store(row + num_splits, acc1, mask=cmask)


@triton.jit
def _combined_moments(part_ptr, plane, cmask, M, num_splits, split_pixels,
                      BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    """(mean, M2) over the plane, [BLOCK_C], from the (mean, M2) partials of its splits
    (split j holds clamp(M - j * split_pixels, 0, split_pixels) pixels), BLOCK_S at a time."""
    mean = tl.zeros([BLOCK_C], tl.float32)
    m2 = tl.zeros([BLOCK_C], tl.float32)
    for s0 in range(0, num_splits, BLOCK_S):
        j = s0 + tl.arange(0, BLOCK_S)
        jmask = j < num_splits
        count = tl.minimum(tl.maximum(M - j * split_pixels, 0), split_pixels).to(tl.float32)
        pmask = cmask[:, None] & jmask[None, :]
        row = part_ptr + 2 * plane[:, None] * num_splits + j[None, :]
        pmean = tl.load(row, mask=pmask, other=0.0)
        pm2 = tl.load(row + num_splits, mask=pmask, other=0.0)
        block_count = tl.sum(count, axis=0)
        block_mean = tl.sum(pmean * count[None, :], axis=1) / block_count
        # corrected like _mean_and_deviations: the weighted sum of ~M values of y lost low bits
        block_mean += tl.sum(tl.where(pmask, pmean - block_mean[:, None], 0.0) * count[None, :], axis=1) / block_count
        d = tl.where(pmask, pmean - block_mean[:, None], 0.0)
        block_m2 = tl.sum(pm2 + count[None, :] * d * d, axis=1)
        seen = tl.minimum(s0 * split_pixels, M).to(tl.float32)
        total = seen + block_count
        delta = block_mean - mean
        mean += delta * (block_count / total)
        m2 += block_m2 + delta * delta * (seen * block_count / total)
    return mean, m2


@triton.jit
def _combined_sums(part_ptr, plane, cmask, num_splits, BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr):
    """The backward's three partial sums of each channel, [BLOCK_C] each, added over the splits."""
    sum0 = tl.zeros([BLOCK_C], tl.float32)
    sum1 = tl.zeros([BLOCK_C], tl.float32)
    sum2 = tl.zeros([BLOCK_C], tl.float32)
    for s0 in range(0, num_splits, BLOCK_S):
        j = s0 + tl.arange(0, BLOCK_S)
        pmask = cmask[:, None] & (j < num_splits)[None, :]
        row = part_ptr + 3 * plane[:, None] * num_splits + j[None, :]
        sum0 += tl.sum(tl.load(row, mask=pmask, other=0.0), axis=1)
        sum1 += tl.sum(tl.load(row + num_splits, mask=pmask, other=0.0), axis=1)
        sum2 += tl.sum(tl.load(row + 2 * num_splits, mask=pmask, other=0.0), axis=1)
    return sum0, sum1, sum2


@triton.jit(do_not_specialize=["seed_lo", "seed_hi"])
def _split_apply_kernel(
    x_ptr,      # [N, C, M] dtype D, layout per CHANNELS_LAST, sample stride sN
    g_ptr,      # [N, C, M] like x: dL/dout; read when BACKWARD
    s_ptr,      # [N, C] fp32 (style scale)
    t_ptr,      # [N, C] fp32 (style bias); read when not BACKWARD
    noise_ptr,  # [Nn, M] dtype D, sample stride noise_sN; read when NOISE == 1
    ns_ptr,     # [C] fp32; read when HAS_NS
    b_ptr,      # [C] fp32; read when HAS_B
    part_ptr,   # fp32 [N, C, 2 (3 when BACKWARD), num_splits] from _split_partials_kernel
    out_ptr,    # [N, C, M] like x: out (forward) or dx (backward)
    stats_ptr,  # [N, C, 2] fp32: mean(y), rstd; written by split 0 (forward), read (backward)
    ds_ptr,     # [N, C] fp32: sum g * yhat; written by split 0 when BACKWARD
    dt_ptr,     # [N, C] fp32: sum g; written by split 0 when BACKWARD
    sdz_ptr,    # [N, C, num_splits] fp32: each split's sum dz; when BACKWARD
    sdzn_ptr,   # [N, C, num_splits] fp32: each split's sum dz * noise; when BACKWARD
    C, M, sN, noise_sN, num_cb, num_splits, iters, seed_lo, seed_hi, alpha, gain, eps,
    ACT: tl.constexpr, NOISE: tl.constexpr, HAS_NS: tl.constexpr, HAS_B: tl.constexpr,
    CHANNELS_LAST: tl.constexpr, BACKWARD: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
    BLOCK_S: tl.constexpr, INDEX_64: tl.constexpr,
    ROUND_BF16: tl.constexpr,   # bf16 under the interpreter, whose casts truncate (round_bf16)
):
    n, c, split, first, tiles = _split_program(tl.program_id(0), num_cb, num_splits, iters, M, BLOCK_C, BLOCK_P)
    cmask = c < C
    ns, b = _channel_params(ns_ptr, b_ptr, c, cmask, HAS_NS, HAS_B, BLOCK_C)
    k0, k1 = _noise_keys(seed_lo, seed_hi, n)
    plane = n * C + c
    s = tl.load(s_ptr + plane, mask=cmask, other=0.0)
    first_split = c < tl.where(split == 0, C, 0)  # cmask on split 0, else nothing
    if BACKWARD:
        mean = tl.load(stats_ptr + 2 * plane, mask=cmask, other=0.0)
        rstd = tl.load(stats_ptr + 2 * plane + 1, mask=cmask, other=0.0)
        sg, sgy, syh = _combined_sums(part_ptr, plane, cmask, num_splits, BLOCK_C, BLOCK_S)
        k = gain * rstd * s
        mg = sg / M
        mgy = sgy / M
        myh = syh / M
        sdz = tl.zeros([BLOCK_C], tl.float32)
        sdzn = tl.zeros([BLOCK_C], tl.float32)
        tl.store(ds_ptr + plane, sgy, mask=first_split)
        tl.store(dt_ptr + plane, sg, mask=first_split)
    else:
        mean, m2 = _combined_moments(part_ptr, plane, cmask, M, num_splits, iters * BLOCK_P, BLOCK_C, BLOCK_S)
        rstd = tl.rsqrt(m2 / M + eps)
        scale = rstd * s
        t = tl.load(t_ptr + plane, mask=cmask, other=0.0)
        tl.store(stats_ptr + 2 * plane, mean, mask=first_split)
        tl.store(stats_ptr + 2 * plane + 1, rstd, mask=first_split)
    for i in range(tiles):
        p = first + i * BLOCK_P + tl.arange(0, BLOCK_P)
        pmask = p < M
        mask = cmask[:, None] & pmask[None, :]
        offs = _tile_offsets(n, c, p, C, M, sN, CHANNELS_LAST, INDEX_64)
        z, nz = _tile_z(x_ptr, noise_ptr, offs, mask, p, pmask, n * noise_sN, k0, k1, ns, b, NOISE)
        y = _act(z, alpha, ACT, 0) * gain
        if BACKWARD:
            g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            yhat = tl.where(mask, (y - mean[:, None]) * rstd[:, None], 0.0)
            dz = _dz(z, g, yhat, mask, alpha, k, mg, mgy, myh, ACT)
            tl.store(out_ptr + offs, round_bf16(dz, ROUND_BF16).to(out_ptr.dtype.element_ty), mask=mask)
            sdz += tl.sum(dz, axis=1)
            sdzn += tl.sum(dz * nz[None, :], axis=1)
        else:
            out = (y - mean[:, None]) * scale[:, None] + t[:, None]
            tl.store(out_ptr + offs, round_bf16(out, ROUND_BF16).to(out_ptr.dtype.element_ty), mask=mask)
    if BACKWARD:
        tl.store(sdz_ptr + plane * num_splits + split, sdz, mask=cmask)
        tl.store(sdzn_ptr + plane * num_splits + split, sdzn, mask=cmask)


# ---- launch configuration ----

FUSED_MAX_TILE = 4096     # elements of the largest plane tile one fused program holds (64x64 maps)
FUSED_TILE = 2048         # tile the fused kernels fill with several channels on smaller maps
FUSED_MIN_BLOCK_C_CL = 16  # channels_last fuses only planes small enough for 16 channels a tile
SPLIT_TILE = 2048         # elements of the split kernels' tiles
SPLIT_BLOCK_C = 4         # channels per split tile (contiguous NCHW): the noise drawn once per 4
SPLIT_BLOCK_C_CL = 16     # channels per split tile (channels_last): 32-64 contiguous bytes a pixel
SPLIT_MIN_TILES = 4       # tiles per split program, at least: work per program vs more partials
SPLIT_MAX_SPLITS = 128    # programs per plane, at most
COMBINE_TILE = 1024       # partials the apply kernel reads at once ([BLOCK_C, BLOCK_S])
INDEX_32_LIMIT = 2**31    # offsets past this take the int64 kernels (a module constant, so tests reach them)
# FMA contraction on, Triton's default; said explicitly because Triton 3.9 warns that the default will change.
_FP_FUSION = {"enable_fp_fusion": True}


def _num_warps(tile: int) -> int:
    """4 warps, 8 for tiles past 2048 elements: 16 fp32 values a thread per tile-sized array."""
    return 8 if tile > 2048 else 4


def plan(channels: int, pixels: int, channels_last: bool) -> dict:
    """How the kernels cover [C, M] planes: a dict with fused (bool), BLOCK_C, BLOCK_P, num_cb,
    num_warps and, for the split path, num_splits, iters and BLOCK_S."""
    c_pow = triton.next_power_of_2(max(channels, 1))
    p_pow = triton.next_power_of_2(max(pixels, 1))
    min_c = min(c_pow, FUSED_MIN_BLOCK_C_CL) if channels_last else 1
    if p_pow * min_c <= FUSED_MAX_TILE:
        block_c = min(c_pow, max(min_c, FUSED_TILE // p_pow))
        return dict(fused=True, BLOCK_C=block_c, BLOCK_P=p_pow, num_cb=triton.cdiv(channels, block_c),
                    num_warps=_num_warps(block_c * p_pow))
    block_c = min(c_pow, SPLIT_BLOCK_C_CL if channels_last else SPLIT_BLOCK_C)
    block_p = min(max(SPLIT_TILE // block_c, 1), p_pow)
    tiles = triton.cdiv(pixels, block_p)
    num_splits = max(1, min(SPLIT_MAX_SPLITS, tiles // SPLIT_MIN_TILES))
    iters = triton.cdiv(tiles, num_splits)
    num_splits = triton.cdiv(tiles, iters)  # every split gets at least one tile
    block_s = min(triton.next_power_of_2(num_splits), max(COMBINE_TILE // block_c, 1))
    return dict(fused=False, BLOCK_C=block_c, BLOCK_P=block_p, num_cb=triton.cdiv(channels, block_c),
                num_splits=num_splits, iters=iters, BLOCK_S=block_s, num_warps=_num_warps(block_c * block_p))


def _index_64(batch: int, cfg: dict, channels: int, pixels: int) -> bool:
    """Whether offsets, masked lanes past the ends included, can reach INDEX_32_LIMIT."""
    padded_c = cfg["num_cb"] * cfg["BLOCK_C"]
    if cfg["fused"]:
        padded_p = cfg["BLOCK_P"]
    else:
        padded_p = cfg["num_splits"] * cfg["iters"] * cfg["BLOCK_P"]
    bound = (batch + 1) * max(padded_c, channels) * max(padded_p, pixels)
    return bound >= INDEX_32_LIMIT


def _seed_words(seed: int) -> tuple[int, int]:
    """The seed's low and high 32 bits, as the int32 values with those bits."""
    def signed(v: int) -> int:
        return v - 2**32 if v >= 2**31 else v
    return signed(seed & 0xFFFFFFFF), signed((seed >> 32) & 0xFFFFFFFF)


def _layout(x: torch.Tensor) -> tuple[bool, torch.memory_format]:
    """(channels_last, memory format) of x: contiguous NCHW or channels_last, else an error."""
    if x.is_contiguous():
        return False, torch.contiguous_format
    if x.is_contiguous(memory_format=torch.channels_last):
        return True, torch.channels_last
    raise ValueError(f"adain_noise (triton): x must be contiguous or channels_last, got strides {x.stride()}")


def _check_like_x(name: str, t: Optional[torch.Tensor], x: torch.Tensor, fmt: torch.memory_format) -> None:
    if t is None or t.shape != x.shape or t.dtype != x.dtype or not t.is_contiguous(memory_format=fmt):
        got = "None" if t is None else f"{tuple(t.shape)} {t.dtype} strides {t.stride()}"
        raise ValueError(f"adain_noise (triton): {name} must have x's shape {tuple(x.shape)}, dtype {x.dtype} and "
                         f"layout (strides {x.stride()}), got {got}")


def _check_small(name: str, t: Optional[torch.Tensor], shape: tuple, optional: bool) -> None:
    if t is None and optional:
        return
    if t is None or tuple(t.shape) != shape or t.dtype != torch.float32 or not t.is_contiguous():
        got = "None" if t is None else f"{tuple(t.shape)} {t.dtype} strides {t.stride()}"
        raise ValueError(f"adain_noise (triton): {name} must be a contiguous {list(shape)} float32 tensor, got {got}")


def _check_args(x, s, noise, ns, b, seed) -> tuple[bool, torch.memory_format]:
    if x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise TypeError(f"adain_noise (triton): x must be float16, bfloat16 or float32, got {x.dtype}")
    if x.ndim != 4:
        raise ValueError(f"adain_noise (triton): x must be [N, C, H, W], got shape {tuple(x.shape)}")
    channels_last, fmt = _layout(x)
    n_, c_, h_, w_ = x.shape
    _check_small("s", s, (n_, c_), optional=False)
    _check_small("ns", ns, (c_,), optional=True)
    _check_small("b", b, (c_,), optional=True)
    if not isinstance(seed, int) or not -1 <= seed < 2**63:
        raise ValueError(f"adain_noise (triton): seed must be -1 or an int in [0, 2**63), got {seed!r}")
    if seed >= 0 and noise is not None:
        raise ValueError("adain_noise (triton): give noise or a seed, not both")
    if noise is not None and (noise.ndim != 4 or noise.shape[0] not in (1, n_) or tuple(noise.shape[1:]) != (1, h_, w_)
                              or noise.dtype != x.dtype or not noise.is_contiguous()):
        raise ValueError(f"adain_noise (triton): noise must be a contiguous [1 or {n_}, 1, {h_}, {w_}] {x.dtype} "
                         f"tensor, got {tuple(noise.shape)} {noise.dtype} strides {noise.stride()}")
    return channels_last, fmt


def _common_args(x, noise, seed, cfg, channels_last):
    """(keyword constexprs, runtime ints after the pointers, launch options) shared by every launch."""
    n_, c_, h_, w_ = x.shape
    m_ = h_ * w_
    mode = _NOISE_SEEDED if seed >= 0 else (_NOISE_TENSOR if noise is not None else _NO_NOISE)
    noise_sn = m_ if noise is not None and noise.shape[0] > 1 else 0
    constexprs = dict(NOISE=mode, CHANNELS_LAST=channels_last, BLOCK_C=cfg["BLOCK_C"], BLOCK_P=cfg["BLOCK_P"],
                      INDEX_64=_index_64(n_, cfg, c_, m_))
    return constexprs, (c_, m_, x.stride(0), noise_sn, cfg["num_cb"]), dict(num_warps=cfg["num_warps"], **_FP_FUSION)


def _device(x: torch.Tensor):
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def forward(x: torch.Tensor, s: torch.Tensor, t: torch.Tensor, noise: Optional[torch.Tensor],
            ns: Optional[torch.Tensor], b: Optional[torch.Tensor], act: str, alpha: float, gain: float, eps: float,
            seed: int, out: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The forward kernel contract of ganfast/ops/adain_noise/reference.py, on Triton.

    x: [N, C, H, W] fp16/bf16/fp32, contiguous or channels_last; s, t: [N, C] fp32; noise:
    [1 or N, 1, H, W] in x's dtype, contiguous, or None; ns, b: [C] fp32 or None; seed: -1, or
    >= 0 to draw the noise in the kernels; out: where to write (x's shape, dtype and layout;
    default new). Returns (out, stats [N, C, 2] fp32: mean(y), rsqrt(var(y) + eps)).
    """
    channels_last, fmt = _check_args(x, s, noise, ns, b, seed)
    _check_small("t", t, tuple(x.shape[:2]), optional=False)
    if out is None:
        out = torch.empty_like(x, memory_format=fmt)
    _check_like_x("out", out, x, fmt)
    n_, c_, h_, w_ = x.shape
    m_ = h_ * w_
    stats = torch.empty((n_, c_, 2), dtype=torch.float32, device=x.device)
    if n_ * c_ == 0:
        return out, stats
    if m_ == 0:
        return out, stats.fill_(float("nan"))  # mean and variance of nothing, as torch.var_mean
    cfg = plan(c_, m_, channels_last)
    constexprs, ints, options = _common_args(x, noise, seed, cfg, channels_last)
    constexprs.update(ACT=ACTIVATIONS[act].code, HAS_NS=ns is not None, HAS_B=b is not None)
    # Unused pointers still need a tensor; s stands in (fp32) and x for noise (dtype D).
    ptrs = (noise if noise is not None else x, ns if ns is not None else s, b if b is not None else s)
    seed_words = _seed_words(max(seed, 0))
    with _device(x):
        if cfg["fused"]:
            _fwd_fused_kernel[(n_ * cfg["num_cb"],)](
                x, s, t, *ptrs, out, stats, *ints, *seed_words, float(alpha), float(gain), float(eps),
                ROUND_BF16=rounds_bf16(x.dtype), **constexprs, **options)
            return out, stats
        splits, iters = cfg["num_splits"], cfg["iters"]
        part = torch.empty((n_, c_, 2, splits), dtype=torch.float32, device=x.device)
        grid = (n_ * cfg["num_cb"] * splits,)
        _split_partials_kernel[grid](
            x, x, *ptrs, stats, part, *ints, splits, iters, *seed_words, float(alpha), float(gain),
            BACKWARD=False, **constexprs, **options)
        _split_apply_kernel[grid](
            x, x, s, t, *ptrs, part, out, stats, s, s, s, s, *ints, splits, iters, *seed_words,
            float(alpha), float(gain), float(eps), BACKWARD=False, BLOCK_S=cfg["BLOCK_S"],
            ROUND_BF16=rounds_bf16(x.dtype), **constexprs, **options)
    return out, stats


def backward(g: torch.Tensor, x: torch.Tensor, s: torch.Tensor, noise: Optional[torch.Tensor],
             ns: Optional[torch.Tensor], b: Optional[torch.Tensor], stats: torch.Tensor, act: str, alpha: float,
             gain: float, eps: float, seed: int, out: Optional[torch.Tensor] = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The backward kernel contract of ganfast/ops/adain_noise/reference.py, on Triton.

    g: dL/dout with x's shape, dtype and layout; stats: [N, C, 2] fp32 from `forward`; the rest as
    in `forward` (eps is unused: rstd comes with stats); out: where to write dx. Returns
    (dx like x, ds, dt, sdz, sdzn: [N, C] fp32) with ds = sum g * yhat, dt = sum g, sdz = sum dx,
    sdzn = sum dx * noise (zeros without noise), sums over each H x W plane.
    """
    channels_last, fmt = _check_args(x, s, noise, ns, b, seed)
    _check_like_x("g", g, x, fmt)
    _check_small("stats", stats, (*x.shape[:2], 2), optional=False)
    if out is None:
        out = torch.empty_like(x, memory_format=fmt)
    _check_like_x("out", out, x, fmt)
    n_, c_, h_, w_ = x.shape
    m_ = h_ * w_
    ds, dt, sdz, sdzn = (torch.empty((n_, c_), dtype=torch.float32, device=x.device) for _ in range(4))
    if n_ * c_ * m_ == 0:
        return out, ds.zero_(), dt.zero_(), sdz.zero_(), sdzn.zero_()
    cfg = plan(c_, m_, channels_last)
    constexprs, ints, options = _common_args(x, noise, seed, cfg, channels_last)
    constexprs.update(ACT=ACTIVATIONS[act].code, HAS_NS=ns is not None, HAS_B=b is not None)
    ptrs = (noise if noise is not None else x, ns if ns is not None else s, b if b is not None else s)
    seed_words = _seed_words(max(seed, 0))
    with _device(x):
        if cfg["fused"]:
            _bwd_fused_kernel[(n_ * cfg["num_cb"],)](
                g, x, s, *ptrs, stats, out, ds, dt, sdz, sdzn, *ints, *seed_words, float(alpha), float(gain),
                ROUND_BF16=rounds_bf16(x.dtype), **constexprs, **options)
            return out, ds, dt, sdz, sdzn
        splits, iters = cfg["num_splits"], cfg["iters"]
        part = torch.empty((n_, c_, 3, splits), dtype=torch.float32, device=x.device)
        split_sums = torch.empty((2, n_, c_, splits), dtype=torch.float32, device=x.device)
        grid = (n_ * cfg["num_cb"] * splits,)
        _split_partials_kernel[grid](
            x, g, *ptrs, stats, part, *ints, splits, iters, *seed_words, float(alpha), float(gain),
            BACKWARD=True, **constexprs, **options)
        _split_apply_kernel[grid](
            x, g, s, s, *ptrs, part, out, stats, ds, dt, split_sums[0], split_sums[1], *ints, splits, iters,
            *seed_words, float(alpha), float(gain), 0.0, BACKWARD=True, BLOCK_S=cfg["BLOCK_S"],
            ROUND_BF16=rounds_bf16(x.dtype), **constexprs, **options)
    sdz, sdzn = split_sums.sum(dim=-1)
    return out, ds, dt, sdz, sdzn


# ---- configurations, for ahead-of-time checks (ganfast.testing.triton_aot) ----

_TRITON_DTYPE = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}
_SMALL = "*fp32"
# Runtime arguments after the pointers, in order (types as the JIT gives them for real layers).
_INTS = {"C": "i32", "M": "i32", "sN": "i32", "noise_sN": "i32", "num_cb": "i32"}
_SPLIT_INTS = {"num_splits": "i32", "iters": "i32"}
_SEED = {"seed_lo": "i32", "seed_hi": "i32"}
_FLOATS = {"alpha": "fp32", "gain": "fp32"}


def _signature(kernel: str, d: str) -> dict:
    """{argument: type} of `kernel`'s runtime arguments for x of Triton dtype d."""
    x = f"*{d}"
    if kernel == "_fwd_fused_kernel":
        ptrs = dict(x_ptr=x, s_ptr=_SMALL, t_ptr=_SMALL, noise_ptr=x, ns_ptr=_SMALL, b_ptr=_SMALL, out_ptr=x,
                    stats_ptr=_SMALL)
        return {**ptrs, **_INTS, **_SEED, **_FLOATS, "eps": "fp32"}
    if kernel == "_bwd_fused_kernel":
        ptrs = dict(g_ptr=x, x_ptr=x, s_ptr=_SMALL, noise_ptr=x, ns_ptr=_SMALL, b_ptr=_SMALL, stats_ptr=_SMALL,
                    dx_ptr=x, ds_ptr=_SMALL, dt_ptr=_SMALL, sdz_ptr=_SMALL, sdzn_ptr=_SMALL)
        return {**ptrs, **_INTS, **_SEED, **_FLOATS}
    if kernel == "_split_partials_kernel":
        ptrs = dict(x_ptr=x, g_ptr=x, noise_ptr=x, ns_ptr=_SMALL, b_ptr=_SMALL, stats_ptr=_SMALL, part_ptr=_SMALL)
        return {**ptrs, **_INTS, **_SPLIT_INTS, **_SEED, **_FLOATS}
    ptrs = dict(x_ptr=x, g_ptr=x, s_ptr=_SMALL, t_ptr=_SMALL, noise_ptr=x, ns_ptr=_SMALL, b_ptr=_SMALL,
                part_ptr=_SMALL, out_ptr=x, stats_ptr=_SMALL, ds_ptr=_SMALL, dt_ptr=_SMALL, sdz_ptr=_SMALL,
                sdzn_ptr=_SMALL)
    return {**ptrs, **_INTS, **_SPLIT_INTS, **_SEED, **_FLOATS, "eps": "fp32"}


def _spec(dtype: torch.dtype, act: str, shape: tuple[int, int, int], channels_last: bool, noise: int,
          backward: bool, stage: str = "", has_ns: bool = True, has_b: bool = True, index_64: bool = False) -> dict:
    """The spec of one launch: C x H x W planes; noise a NOISE mode; stage 'partials' or 'apply'
    on the split path ('' when fused)."""
    channels, height, width = shape
    pixels = height * width
    cfg = plan(channels, pixels, channels_last)
    if cfg["fused"] != (stage == ""):
        raise ValueError(f"{shape} {'channels_last' if channels_last else 'NCHW'} does not take the "
                         f"{stage or 'fused'} path")
    if cfg["fused"]:
        kernel = "_bwd_fused_kernel" if backward else "_fwd_fused_kernel"
    else:
        kernel = f"_split_{stage}_kernel"
    signature = _signature(kernel, _TRITON_DTYPE[dtype])
    constexprs = dict(ACT=ACTIVATIONS[act].code, NOISE=noise, HAS_NS=has_ns, HAS_B=has_b,
                      CHANNELS_LAST=channels_last, BLOCK_C=cfg["BLOCK_C"], BLOCK_P=cfg["BLOCK_P"],
                      INDEX_64=index_64)
    if stage != "partials":
        constexprs["ROUND_BF16"] = False   # compiled casts round to nearest themselves
    if not cfg["fused"]:
        constexprs["BACKWARD"] = backward
        if stage == "apply":
            constexprs["BLOCK_S"] = cfg["BLOCK_S"]
    # The JIT specializes pointers and ints divisible by 16 (all of them for layers with C and
    # H*W multiples of 16); the contiguous axis must be for 128-bit accesses.
    contiguous = channels if channels_last else pixels
    aligned = [a for a, ty in signature.items() if ty.startswith("*")]
    aligned += [a for a, v in (("C", channels), ("M", pixels), ("sN", channels * pixels), ("noise_sN", pixels))
                if v % 16 == 0]
    row_bytes = min(cfg["BLOCK_C"] if channels_last else cfg["BLOCK_P"], contiguous) * dtype.itemsize
    layout = "channels_last" if channels_last else "NCHW"
    noise_name = ("no-noise", "noise", "seeded")[noise]
    variant = ("" if has_ns else " no-ns") + ("" if has_b else " no-b") + (" int64" if index_64 else "")
    return dict(name=f"{kernel.strip('_')} {'bwd' if backward else 'fwd'} {_TRITON_DTYPE[dtype]} {act} "
                     f"{channels}x{height}x{width} {layout} {noise_name}{variant} "
                     f"tile={cfg['BLOCK_C']}x{cfg['BLOCK_P']}",
                kernel=f"{__name__}:{kernel}", signature=signature, constexprs=constexprs, aligned=aligned,
                options=dict(num_warps=cfg["num_warps"], **_FP_FUSION),
                # The partials kernel stores only sums per channel: no wide stores to look for.
                vector_io=contiguous % 16 == 0 and row_bytes >= 16 and stage != "partials")


def aot_specs() -> list[dict]:
    """Representative launches of `forward` and `backward`, as ganfast.testing.triton_aot specs.

    For every dtype: the fused kernels on 4x4 maps with 512 channels (many channels a program) and
    on 64x64 maps (the largest fused plane, 8 warps), channels_last 16x16 maps (the largest fused
    channels_last plane), and both split kernels, forward and backward, at 256x256 in both
    layouts; given and seeded noise alternate, and the activations with the heaviest math (tanh,
    swish) with lrelu, StyleGAN's. Then a channels_last 3-channel plane (RGB: no 128-bit
    accesses), a launch without noise, strength and bias, and the int64-offset kernels.
    """
    t, s = _NOISE_TENSOR, _NOISE_SEEDED
    specs = []
    for dtype in _TRITON_DTYPE:
        for backward in (False, True):
            specs.append(_spec(dtype, "lrelu", (512, 4, 4), False, s if backward else t, backward))
            specs.append(_spec(dtype, "swish", (64, 64, 64), False, t if backward else s, backward))
            specs.append(_spec(dtype, "tanh", (256, 16, 16), True, s, backward))
            for stage in ("partials", "apply"):
                specs.append(_spec(dtype, "lrelu", (64, 256, 256), False, s, backward, stage))
                specs.append(_spec(dtype, "swish", (64, 256, 256), True, t, backward, stage))
    specs.append(_spec(torch.float16, "lrelu", (3, 64, 64), True, s, True, "apply"))
    specs.append(_spec(torch.float16, "lrelu", (3, 32, 32), True, s, False))
    specs.append(_spec(torch.bfloat16, "linear", (32, 8, 8), False, _NO_NOISE, True, has_ns=False, has_b=False))
    for backward in (False, True):
        specs.append(_spec(torch.float16, "lrelu", (512, 4, 4), True, t, backward, index_64=True))
        specs.append(_spec(torch.float16, "lrelu", (32, 1024, 1024), False, s, backward, "apply", index_64=True))
    return specs
