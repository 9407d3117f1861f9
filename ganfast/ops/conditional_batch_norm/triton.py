"""Conditional batch norm (BigGAN's ccbn) in Triton: the four kernel-contract passes of
ganfast/ops/conditional_batch_norm/reference.py behind backend='triton'.

Memory view: x and dy are [N, C, HW] contiguous, that is P = N * C planes of HW contiguous
pixels; plane q = n * C + c, so gain and bias ([N, C]) are indexed by q directly and mean, rstd,
c1, c2 ([C]) by q % C. Every kernel works on [rows, BLOCK_P] tiles in fp32: BLOCK_P = the plane
size rounded up to a power of two (MIN_BLOCK_P to MAX_BLOCK_P) along the contiguous pixels, so loads
and stores are coalesced and, when HW % 16 == 0 (which the JIT then knows), 128-bit; rows fill
the TILE, so small maps (4x4: 128 planes a tile) put many planes in one program. `plan` is the
one place the tile shape is chosen; it depends on HW only.

  channel_stats   _stats_partials_kernel: a program takes a block of BLOCK_C channels and one
                  segment of their (sample, pixel-tile) sequence (`iters` tiles of one sample
                  after another), enough segments for ~TARGET_PROGRAMS programs. It sums
                  x - pivot and (x - pivot)^2 lane by lane (no reduction inside the loop), the
                  pivot being the channel's first element in the segment, so the sums do not
                  cancel when a channel's mean is far from 0 (1000 sigma: the shift puts it back
                  within a few sigma of 0; M2's relative error is ~eps * (1 + k^2) for a pivot k
                  sigma from the mean); then it stores the segment's (mean, M2) per channel.
                  _stats_combine_kernel merges the segments' (count, mean, M2) with Chan's
                  formula, BLOCK_S segments at a time, in a fixed order: deterministic, no
                  atomics. One segment: the partials are the result and the combine is skipped.
  forward_apply   _forward_kernel: one tile a program; per row the plane's mean, rstd, gain and
                  bias; y = relu?((x - mean) * rstd * gain + bias). x - mean first, as the
                  reference: folding mean into a shift (x * s + t) loses |mean| / std digits.
  backward_sums   _backward_sums_kernel: a program takes BLOCK_R whole planes and loops over
                  their pixel tiles, accumulating dz and dz * xhat lane by lane, and reduces once
                  at the end: [N, C, 2] without partials (N * C programs on large maps).
  backward_dx     _backward_dx_kernel: one tile a program, like the forward;
                  dx = rstd * gain * dz - rstd * c1 - xhat * (rstd * c2), the per-row factors
                  formed once per row.

relu is a runtime flag (not a constexpr: half the compiled variants); where it is off, z is
not even formed in the backward. relu keeps NaN as torch.relu does (z <= 0 is False for NaN).
Offsets are int64 (INDEX_64) when they could reach INDEX_32_LIMIT, masked lanes included.
Every bf16 the kernels write (y, dx) is its fp32 value rounded to nearest even, the compiled
cast's rounding; under TRITON_INTERPRET, whose casts truncate, ganfast.ops._triton.round_bf16
does the rounding (ROUND_BF16), so the CPU tests see a GPU's numbers (issue 26).

Resources (aot_specs, Triton 3.9 ptxas, 4 warps): 26-72 registers on 16-aligned planes, no
spills, <= 512 B shared memory; planes with HW % 16 != 0 load element by element and ptxas
hoists all 16 loads a thread and tensor (64-178 registers, still no spills).
"""
from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

from ganfast.ops._triton import round_bf16, rounds_bf16

# ---- shared pieces ----

@triton.jit
def _plane_offsets(q, p, HW, INDEX_64: tl.constexpr):
    """[BLOCK_R, BLOCK_P] offsets of pixels p of planes q (both vectors)."""
    if INDEX_64:
        q = q.to(tl.int64)
    return q[:, None] * HW + p[None, :]


@triton.jit
def _row_params(q, rmask, C, mean_ptr, rstd_ptr, gain_ptr, bias_ptr):
    """(mean, rstd, gain, bias), each [BLOCK_R] fp32, of planes q."""
    c = q % C
    mean = tl.load(mean_ptr + c, mask=rmask, other=0.0)
    rstd = tl.load(rstd_ptr + c, mask=rmask, other=0.0)
    gain = tl.load(gain_ptr + q, mask=rmask, other=0.0)
    bias = tl.load(bias_ptr + q, mask=rmask, other=0.0)
    return mean, rstd, gain, bias


@triton.jit
def _xhat_dz(x_ptr, dy_ptr, offs, mask, mean, rstd, gain, bias, relu):
    """(xhat, dz) on a tile, fp32: xhat = (x - mean) * rstd, dz = dy * (z > 0) when relu
    (z = xhat * gain + bias), else dy; dz is 0 where masked off (xhat is not)."""
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    dz = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    xhat = (x - mean[:, None]) * rstd[:, None]
    if relu:
        z = xhat * gain[:, None] + bias[:, None]
        dz = tl.where(z > 0, dz, 0.0)
    return xhat, dz


@triton.jit
def _elements_before(t, num_pt, HW, tile_p):
    """Elements of one channel in its first t (sample, pixel-tile) tiles: whole planes of the
    earlier samples, then full pixel tiles of sample t // num_pt (only a plane's last tile can be
    partial, and it is never among them)."""
    n = t // num_pt
    # int64: a channel of N * HW >= 2**31 elements must not wrap (scalars, or a few lanes)
    return n.to(tl.int64) * HW + (t - n * num_pt) * tile_p


# ---- channel_stats ----

@triton.jit
def _stats_partials_kernel(
    x_ptr,       # [N, C, HW] dtype D, contiguous
    part_ptr,    # [C, num_segments, 2] fp32: (mean, M2) of each channel over each segment
    C, HW, sN,   # sN = C * HW, a sample's stride
    num_pt,      # cdiv(HW, BLOCK_P): pixel tiles a plane
    num_tiles,   # N * num_pt: (sample, pixel-tile) tiles a channel
    num_segments, iters,   # segment s holds tiles [s * iters, min((s + 1) * iters, num_tiles))
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, INDEX_64: tl.constexpr,
):
    pid = tl.program_id(0)
    seg = pid % num_segments
    c = (pid // num_segments) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    if INDEX_64:
        c = c.to(tl.int64)
    t0 = seg * iters
    t1 = tl.minimum(t0 + iters, num_tiles)
    lanes = tl.arange(0, BLOCK_P)
    # The pivot: each channel's first element of the segment (pixel tiles never start past HW).
    n0 = t0 // num_pt
    p0 = (t0 - n0 * num_pt) * BLOCK_P
    if INDEX_64:
        n0 = n0.to(tl.int64)
    pivot = tl.load(x_ptr + n0 * sN + c * HW + p0, mask=cmask, other=0.0).to(tl.float32)
    s1 = tl.zeros([BLOCK_C, BLOCK_P], tl.float32)
    s2 = tl.zeros([BLOCK_C, BLOCK_P], tl.float32)
    for t in range(t0, t1):
        n = t // num_pt
        p = (t - n * num_pt) * BLOCK_P + lanes
        mask = cmask[:, None] & (p < HW)[None, :]
        if INDEX_64:
            n = n.to(tl.int64)
        x = tl.load(x_ptr + (n * sN + c[:, None] * HW + p[None, :]), mask=mask, other=0.0).to(tl.float32)
        d = tl.where(mask, x - pivot[:, None], 0.0)
        s1 += d
        s2 += d * d
    count = (_elements_before(t1, num_pt, HW, BLOCK_P) - _elements_before(t0, num_pt, HW, BLOCK_P)).to(tl.float32)
    sum1 = tl.sum(s1, axis=1)
    shift = sum1 / count
    m2 = tl.sum(s2, axis=1) - sum1 * shift
    m2 = tl.where(m2 < 0.0, 0.0, m2)    # -tiny from rounding to 0; a NaN (a channel with +-inf) stays NaN (tl.maximum drops it on GPUs)
    out = part_ptr + (c * num_segments + seg) * 2
    tl.store(out, pivot + shift, mask=cmask)
    tl.store(out + 1, m2, mask=cmask)


@triton.jit
def _stats_combine_kernel(
    part_ptr,    # [C, num_segments, 2] fp32 from _stats_partials_kernel
    stats_ptr,   # [C, 2] fp32: (mean, M2) over (N, H, W)
    C, HW, num_pt, num_tiles, num_segments, iters,
    tile_p,      # the partials kernel's BLOCK_P (a runtime int here: one compiled combine)
    BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr,
):
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    mean = tl.zeros([BLOCK_C], tl.float32)
    m2 = tl.zeros([BLOCK_C], tl.float32)
    for s0 in range(0, num_segments, BLOCK_S):
        j = s0 + tl.arange(0, BLOCK_S)
        jmask = j < num_segments
        first = _elements_before(tl.minimum(j * iters, num_tiles), num_pt, HW, tile_p)
        last = _elements_before(tl.minimum(j * iters + iters, num_tiles), num_pt, HW, tile_p)
        count = tl.where(jmask, last - first, 0).to(tl.float32)           # [BLOCK_S]
        mask = cmask[:, None] & jmask[None, :]
        row = part_ptr + (c[:, None] * num_segments + j[None, :]) * 2
        pmean = tl.load(row, mask=mask, other=0.0)
        pm2 = tl.load(row + 1, mask=mask, other=0.0)
        # The block's (count, mean, M2), then Chan's merge into the running ones.
        # Shifted by the block's first partial mean and with correctly rounded divisions (a GPU's
        # default fp32 '/' is approximate): a constant channel gets d = delta = 0 exactly, M2 = 0.
        block_count = tl.sum(count, axis=0)
        pivot = tl.sum(tl.where(j[None, :] == s0, pmean, 0.0), axis=1)
        shifted = tl.where(mask, pmean - pivot[:, None], 0.0)
        block_mean = pivot + tl.math.div_rn(tl.sum(shifted * count[None, :], axis=1), block_count)
        d = tl.where(mask, pmean - block_mean[:, None], 0.0)
        block_m2 = tl.sum(pm2 + count[None, :] * d * d, axis=1)
        seen = _elements_before(tl.minimum(s0 * iters, num_tiles), num_pt, HW, tile_p).to(tl.float32)
        total = seen + block_count
        delta = block_mean - mean
        share = tl.math.div_rn(block_count, total)
        mean += delta * share
        m2 += block_m2 + delta * delta * (seen * share)
    tl.store(stats_ptr + 2 * c, mean, mask=cmask)
    tl.store(stats_ptr + 2 * c + 1, m2, mask=cmask)


# ---- forward_apply ----

@triton.jit(do_not_specialize=["relu"])
def _forward_kernel(
    x_ptr,       # [P, HW] dtype D (P = N * C planes), contiguous
    mean_ptr,    # [C] fp32
    rstd_ptr,    # [C] fp32
    gain_ptr,    # [P] fp32 ([N, C])
    bias_ptr,    # [P] fp32 ([N, C])
    y_ptr,       # [P, HW] like x
    P, C, HW, num_pt,   # num_pt = cdiv(HW, BLOCK_P)
    relu,        # int: 1 applies relu
    BLOCK_R: tl.constexpr, BLOCK_P: tl.constexpr, INDEX_64: tl.constexpr,
    ROUND_BF16: tl.constexpr,   # bf16 under the interpreter, whose casts truncate (round_bf16)
):
    pid = tl.program_id(0)
    pt = pid % num_pt
    q = (pid // num_pt) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = q < P
    p = pt * BLOCK_P + tl.arange(0, BLOCK_P)
    mask = rmask[:, None] & (p < HW)[None, :]
    mean, rstd, gain, bias = _row_params(q, rmask, C, mean_ptr, rstd_ptr, gain_ptr, bias_ptr)
    offs = _plane_offsets(q, p, HW, INDEX_64)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    z = (x - mean[:, None]) * rstd[:, None] * gain[:, None] + bias[:, None]
    if relu:
        z = tl.where(z <= 0, 0.0, z)
    tl.store(y_ptr + offs, round_bf16(z, ROUND_BF16).to(y_ptr.dtype.element_ty), mask=mask)


# ---- backward ----

@triton.jit(do_not_specialize=["relu"])
def _backward_sums_kernel(
    dy_ptr,      # [P, HW] like x: dL/dy
    x_ptr,       # [P, HW] dtype D (P = N * C planes), contiguous
    mean_ptr,    # [C] fp32
    rstd_ptr,    # [C] fp32
    gain_ptr,    # [P] fp32 ([N, C])
    bias_ptr,    # [P] fp32 ([N, C])
    sums_ptr,    # [P, 2] fp32 ([N, C, 2]): (sum dz, sum dz * xhat) over each plane
    P, C, HW, num_pt, relu,
    BLOCK_R: tl.constexpr, BLOCK_P: tl.constexpr, INDEX_64: tl.constexpr,
):
    q = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = q < P
    mean, rstd, gain, bias = _row_params(q, rmask, C, mean_ptr, rstd_ptr, gain_ptr, bias_ptr)
    lanes = tl.arange(0, BLOCK_P)
    acc_dz = tl.zeros([BLOCK_R, BLOCK_P], tl.float32)
    acc_dzx = tl.zeros([BLOCK_R, BLOCK_P], tl.float32)
    for pt in range(num_pt):
        p = pt * BLOCK_P + lanes
        mask = rmask[:, None] & (p < HW)[None, :]
        xhat, dz = _xhat_dz(x_ptr, dy_ptr, _plane_offsets(q, p, HW, INDEX_64), mask, mean, rstd, gain, bias, relu)
        acc_dz += dz
        acc_dzx += dz * xhat
    tl.store(sums_ptr + 2 * q, tl.sum(acc_dz, axis=1), mask=rmask)
    tl.store(sums_ptr + 2 * q + 1, tl.sum(acc_dzx, axis=1), mask=rmask)


@triton.jit(do_not_specialize=["relu"])
def _backward_dx_kernel(
    dy_ptr,      # [P, HW] like x: dL/dy
    x_ptr,       # [P, HW] dtype D (P = N * C planes), contiguous
    mean_ptr,    # [C] fp32
    rstd_ptr,    # [C] fp32
    gain_ptr,    # [P] fp32 ([N, C])
    bias_ptr,    # [P] fp32 ([N, C])
    c1_ptr,      # [C] fp32
    c2_ptr,      # [C] fp32
    dx_ptr,      # [P, HW] like x
    P, C, HW, num_pt, relu,
    BLOCK_R: tl.constexpr, BLOCK_P: tl.constexpr, INDEX_64: tl.constexpr,
    ROUND_BF16: tl.constexpr,   # bf16 under the interpreter, whose casts truncate (round_bf16)
):
    pid = tl.program_id(0)
    pt = pid % num_pt
    q = (pid // num_pt) * BLOCK_R + tl.arange(0, BLOCK_R)
    rmask = q < P
    p = pt * BLOCK_P + tl.arange(0, BLOCK_P)
    mask = rmask[:, None] & (p < HW)[None, :]
    mean, rstd, gain, bias = _row_params(q, rmask, C, mean_ptr, rstd_ptr, gain_ptr, bias_ptr)
    c = q % C
    k1 = rstd * tl.load(c1_ptr + c, mask=rmask, other=0.0)
    k2 = rstd * tl.load(c2_ptr + c, mask=rmask, other=0.0)
    offs = _plane_offsets(q, p, HW, INDEX_64)
    xhat, dz = _xhat_dz(x_ptr, dy_ptr, offs, mask, mean, rstd, gain, bias, relu)
    dx = (rstd * gain)[:, None] * dz - k1[:, None] - xhat * k2[:, None]
    tl.store(dx_ptr + offs, round_bf16(dx, ROUND_BF16).to(dx_ptr.dtype.element_ty), mask=mask)


# ---- launch configuration ----

TILE = 2048               # elements of a tile: 16 a thread at 4 warps (two 128-bit fp16 loads)
MAX_BLOCK_P = 2048        # widest pixel block; larger planes take several
# narrowest pixel block: 4x4 maps (BigGAN's smallest) fill it; 1x1 and 2x2 ones leave lanes idle,
# which keeps the compiled variants (and the AOT checks) to 8 tile shapes a kernel and dtype
MIN_BLOCK_P = 16
NUM_WARPS = 4
TARGET_PROGRAMS = 2048    # channel_stats: segments enough for this many programs (16 an SM on H100)...
MAX_SEGMENTS = 1024       # ... but at most this many per channel
COMBINE_BLOCK_C = 32      # the combine kernel's tile: [channels, segments]
COMBINE_BLOCK_S = 32
INDEX_32_LIMIT = 2**31    # offsets past this take the int64 kernels (a module constant, so tests reach them)
# FMA contraction on, Triton's default; said explicitly because Triton 3.9 warns that the default will change.
_FP_FUSION = {"enable_fp_fusion": True}
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def plan(hw: int) -> tuple[int, int]:
    """(rows, BLOCK_P) of the tiles for planes of hw pixels: the pixels rounded up to a power of
    two (MIN_BLOCK_P to MAX_BLOCK_P), rows (planes, or channels in channel_stats) filling the TILE."""
    block_p = min(max(triton.next_power_of_2(max(hw, 1)), MIN_BLOCK_P), MAX_BLOCK_P, TILE)
    return TILE // block_p, block_p


def _index_64(rows: int, block_r: int, hw: int, block_p: int) -> bool:
    """Whether offsets q * hw + p of rows q of hw pixels, padded to whole tiles (masked lanes past
    the ends), can reach INDEX_32_LIMIT."""
    return triton.cdiv(rows, block_r) * block_r * hw + triton.cdiv(hw, block_p) * block_p >= INDEX_32_LIMIT


def segments(n: int, c: int, hw: int) -> dict:
    """channel_stats' launch: the tile, the tiles a channel, and how they split into segments."""
    block_c, block_p = plan(hw)
    num_pt = triton.cdiv(hw, block_p)
    num_tiles = n * num_pt
    num_cb = triton.cdiv(c, block_c)
    want = min(MAX_SEGMENTS, num_tiles, max(1, triton.cdiv(TARGET_PROGRAMS, num_cb)))
    iters = triton.cdiv(num_tiles, want)
    num_segments = triton.cdiv(num_tiles, iters)   # every segment holds at least one tile
    # offsets n * C * HW + c * HW + p, over padded channels and pixel tiles
    index_64 = n * c * hw + num_cb * block_c * hw + num_pt * block_p >= INDEX_32_LIMIT
    return dict(BLOCK_C=block_c, BLOCK_P=block_p, num_pt=num_pt, num_tiles=num_tiles, num_cb=num_cb,
                num_segments=num_segments, iters=iters, INDEX_64=index_64)


def _plane_launch(shape: tuple[int, int, int, int], whole_planes: bool) -> tuple[tuple[int], dict, dict]:
    """(grid, runtime ints, constexprs) of the [planes, pixels] kernels for x of `shape`;
    whole_planes: a program loops over its planes' pixel tiles (backward_sums) rather than
    taking one tile."""
    n, c, h, w = shape
    hw = h * w
    block_r, block_p = plan(hw)
    num_pt = triton.cdiv(hw, block_p)
    planes = n * c
    grid = (triton.cdiv(planes, block_r) * (1 if whole_planes else num_pt),)
    ints = dict(P=planes, C=c, HW=hw, num_pt=num_pt)
    constexprs = dict(BLOCK_R=block_r, BLOCK_P=block_p, INDEX_64=_index_64(planes, block_r, hw, block_p))
    return grid, ints, constexprs


def _name(x) -> str:
    return f"{list(x.shape)} {x.dtype} strides {x.stride()} on {x.device}" if isinstance(x, torch.Tensor) \
        else type(x).__name__


def _check_x(fn: str, x) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_contiguous():
        raise ValueError(f"conditional_batch_norm (triton) {fn}: x must be a contiguous [N, C, H, W] tensor, "
                         f"got {_name(x)}")
    if x.dtype not in _DTYPES:
        raise TypeError(f"conditional_batch_norm (triton) {fn}: x must be float16, bfloat16 or float32, "
                        f"got {x.dtype}")


def _check_args(fn: str, x, dy=None, **small) -> None:
    """x (and dy, like x) and the fp32 per-channel ([C]) or per-plane ([N, C]) tensors in small."""
    _check_x(fn, x)
    if dy is not None and (not isinstance(dy, torch.Tensor) or dy.shape != x.shape or dy.dtype != x.dtype
                           or not dy.is_contiguous() or dy.device != x.device):
        raise ValueError(f"conditional_batch_norm (triton) {fn}: dy must be like x ({list(x.shape)} {x.dtype}, "
                         f"contiguous, on {x.device}), got {_name(dy)}")
    n, c = x.shape[:2]
    for name, t in small.items():
        shape = [n, c] if name in ("gain", "bias") else [c]
        if not isinstance(t, torch.Tensor) or list(t.shape) != shape or t.dtype != torch.float32 \
                or not t.is_contiguous() or t.device != x.device:
            raise ValueError(f"conditional_batch_norm (triton) {fn}: {name} must be a contiguous {shape} float32 "
                             f"tensor on {x.device}, got {_name(t)}")


def _device(x: torch.Tensor):
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def channel_stats(x: torch.Tensor) -> torch.Tensor:
    """[C, 2] fp32: (mean, M2 = sum of squared deviations) of x[:, c] over (N, H, W).

    x: [N, C, H, W] contiguous fp16/bf16/fp32. NaN for both when N * H * W == 0 (as torch.var_mean).
    """
    _check_x("channel_stats", x)
    n, c, h, w = x.shape
    hw = h * w
    if x.numel() == 0:   # no channels, or mean and M2 of nothing: NaN, as torch.var_mean
        return torch.full((c, 2), float("nan"), dtype=torch.float32, device=x.device)
    cfg = segments(n, c, hw)
    s = cfg["num_segments"]
    part = torch.empty((c, s, 2), dtype=torch.float32, device=x.device)
    with _device(x):
        _stats_partials_kernel[(cfg["num_cb"] * s,)](
            x, part, c, hw, c * hw, cfg["num_pt"], cfg["num_tiles"], s, cfg["iters"],
            BLOCK_C=cfg["BLOCK_C"], BLOCK_P=cfg["BLOCK_P"], INDEX_64=cfg["INDEX_64"], num_warps=NUM_WARPS,
            **_FP_FUSION)
        if s == 1:
            return part.view(c, 2)
        stats = torch.empty((c, 2), dtype=torch.float32, device=x.device)
        _stats_combine_kernel[(triton.cdiv(c, COMBINE_BLOCK_C),)](
            part, stats, c, hw, cfg["num_pt"], cfg["num_tiles"], s, cfg["iters"], cfg["BLOCK_P"],
            BLOCK_C=COMBINE_BLOCK_C, BLOCK_S=COMBINE_BLOCK_S, num_warps=NUM_WARPS, **_FP_FUSION)
    return stats


def forward_apply(x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor, gain: torch.Tensor,
                  bias: torch.Tensor, relu: bool) -> torch.Tensor:
    """y [N, C, H, W] in x's dtype: (x - mean[c]) * rstd[c] * gain[n, c] + bias[n, c], relu'd.

    x: contiguous fp16/bf16/fp32; mean, rstd: [C], gain, bias: [N, C], contiguous fp32.
    """
    _check_args("forward_apply", x, mean=mean, rstd=rstd, gain=gain, bias=bias)
    y = torch.empty_like(x)
    if x.numel() == 0:
        return y
    grid, ints, constexprs = _plane_launch(tuple(x.shape), whole_planes=False)
    with _device(x):
        _forward_kernel[grid](x, mean, rstd, gain, bias, y, *ints.values(), int(bool(relu)), **constexprs,
                              ROUND_BF16=rounds_bf16(x.dtype), num_warps=NUM_WARPS, **_FP_FUSION)
    return y


def backward_sums(dy: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor,
                  gain: torch.Tensor, bias: torch.Tensor, relu: bool) -> torch.Tensor:
    """[N, C, 2] fp32: per plane, (sum over H, W of dz, of dz * xhat); dz = dy * (z > 0) when
    relu, else dy. dy: like x; the rest as in forward_apply."""
    _check_args("backward_sums", x, dy, mean=mean, rstd=rstd, gain=gain, bias=bias)
    n, c = x.shape[:2]
    sums = torch.empty((n, c, 2), dtype=torch.float32, device=x.device)
    if n * c == 0:
        return sums
    if x.numel() == 0:
        return sums.zero_()   # sums over no pixels
    grid, ints, constexprs = _plane_launch(tuple(x.shape), whole_planes=True)
    with _device(x):
        _backward_sums_kernel[grid](dy, x, mean, rstd, gain, bias, sums, *ints.values(), int(bool(relu)),
                                    **constexprs, num_warps=NUM_WARPS, **_FP_FUSION)
    return sums


def backward_dx(dy: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor, gain: torch.Tensor,
                bias: torch.Tensor, relu: bool, c1: torch.Tensor, c2: torch.Tensor) -> torch.Tensor:
    """dx [N, C, H, W] in x's dtype: rstd[c] * (gain[n, c] * dz - c1[c] - xhat * c2[c]).

    c1, c2: [C] contiguous fp32; the rest as in backward_sums."""
    _check_args("backward_dx", x, dy, mean=mean, rstd=rstd, gain=gain, bias=bias, c1=c1, c2=c2)
    dx = torch.empty_like(x)
    if x.numel() == 0:
        return dx
    grid, ints, constexprs = _plane_launch(tuple(x.shape), whole_planes=False)
    with _device(x):
        _backward_dx_kernel[grid](dy, x, mean, rstd, gain, bias, c1, c2, dx, *ints.values(), int(bool(relu)),
                                  **constexprs, ROUND_BF16=rounds_bf16(x.dtype), num_warps=NUM_WARPS, **_FP_FUSION)
    return dx


# ---- configurations, for ahead-of-time checks (ganfast.testing.triton_aot) ----

_TRITON_DTYPE = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}
_SMALL = "*fp32"
_PLANE_KERNELS = ("_forward_kernel", "_backward_sums_kernel", "_backward_dx_kernel")


def _pointers(kernel: str, d: str) -> dict:
    """{pointer argument: type} of `kernel` for x of Triton pointer type d."""
    if kernel == "_stats_partials_kernel":
        return dict(x_ptr=d, part_ptr=_SMALL)
    if kernel == "_stats_combine_kernel":
        return dict(part_ptr=_SMALL, stats_ptr=_SMALL)
    rows = dict(mean_ptr=_SMALL, rstd_ptr=_SMALL, gain_ptr=_SMALL, bias_ptr=_SMALL)
    if kernel == "_forward_kernel":
        return dict(x_ptr=d, **rows, y_ptr=d)
    if kernel == "_backward_sums_kernel":
        return dict(dy_ptr=d, x_ptr=d, **rows, sums_ptr=_SMALL)
    return dict(dy_ptr=d, x_ptr=d, **rows, c1_ptr=_SMALL, c2_ptr=_SMALL, dx_ptr=d)


def _launch_args(kernel: str, shape: tuple[int, int, int, int]) -> tuple[dict, dict]:
    """(runtime ints in order, constexprs) of the launch the launchers make for x of `shape`."""
    n, c, h, w = shape
    if kernel in _PLANE_KERNELS:
        _, ints, constexprs = _plane_launch(shape, whole_planes=kernel == "_backward_sums_kernel")
        return ints, constexprs
    cfg = segments(n, c, h * w)
    if kernel == "_stats_partials_kernel":
        ints = dict(C=c, HW=h * w, sN=c * h * w, num_pt=cfg["num_pt"], num_tiles=cfg["num_tiles"],
                    num_segments=cfg["num_segments"], iters=cfg["iters"])
        return ints, dict(BLOCK_C=cfg["BLOCK_C"], BLOCK_P=cfg["BLOCK_P"], INDEX_64=cfg["INDEX_64"])
    ints = dict(C=c, HW=h * w, num_pt=cfg["num_pt"], num_tiles=cfg["num_tiles"], num_segments=cfg["num_segments"],
                iters=cfg["iters"], tile_p=cfg["BLOCK_P"])
    return ints, dict(BLOCK_C=COMBINE_BLOCK_C, BLOCK_S=COMBINE_BLOCK_S)


def _spec(kernel: str, dtype: torch.dtype, shape: tuple[int, int, int, int], index_64: bool = False) -> dict:
    """The spec of the launch of `kernel` for x of `shape` [N, C, H, W] in dtype, its ints
    specialized as the JIT does (1 a constant, multiples of 16 aligned; relu never)."""
    ints, constexprs = _launch_args(kernel, shape)
    if index_64:
        constexprs["INDEX_64"] = True
    signature = _pointers(kernel, f"*{_TRITON_DTYPE[dtype]}")
    aligned = list(signature)
    for k, v in ints.items():
        if v == 1:
            constexprs[k] = 1
            continue
        signature[k] = "i32" if -2**31 <= v < 2**31 else "i64"
        if v % 16 == 0:
            aligned.append(k)
    if kernel in _PLANE_KERNELS:
        signature["relu"] = "i32"
    if kernel in ("_forward_kernel", "_backward_dx_kernel"):
        constexprs["ROUND_BF16"] = False   # compiled casts round to nearest themselves
    hw = shape[2] * shape[3]
    block_p = constexprs.get("BLOCK_P", 0)
    # x's loads (and the plane kernels' stores) are 128-bit where rows are: 16-aligned planes of
    # at least 16 bytes a row.
    wide = kernel != "_stats_combine_kernel" and hw % 16 == 0 and block_p * dtype.itemsize >= 16
    rows = constexprs.get("BLOCK_R", constexprs.get("BLOCK_C"))
    return dict(name=f"{kernel.strip('_')} {_TRITON_DTYPE[dtype]} {'x'.join(map(str, shape))} "
                     f"tile={rows}x{block_p or constexprs['BLOCK_S']}{' int64' if constexprs.get('INDEX_64') else ''}",
                kernel=f"{__name__}:{kernel}", signature=signature, constexprs=constexprs, aligned=aligned,
                options=dict(num_warps=NUM_WARPS, **_FP_FUSION),
                vector_loads=wide, vector_stores=wide and kernel in ("_forward_kernel", "_backward_dx_kernel"))


def aot_specs() -> list[dict]:
    """The launches of the four passes, as ganfast.testing.triton_aot specs.

    For each of the four tiled kernels and each dtype: every tile shape `plan` can pick (BLOCK_P
    MIN_BLOCK_P to MAX_BLOCK_P), on planes of that many pixels (2 tiles a plane at MAX_BLOCK_P:
    the H100 reference layer [32, 192, 64, 64]), and the int64-offset kernels at MAX_BLOCK_P
    (BigGAN's largest layer, [256, 64, 128, 128], would take them at batch 512). Then, in one
    dtype each: a plane of exactly MAX_BLOCK_P pixels (pixel-loop trip counts the constant 1),
    planes no block divides with odd C (no 128-bit accesses), and the (dtype-free) combine.
    """
    kernels = ("_stats_partials_kernel", *_PLANE_KERNELS)
    low, top = MIN_BLOCK_P.bit_length() - 1, MAX_BLOCK_P.bit_length() - 1
    specs = []
    for dtype in _TRITON_DTYPE:
        for kernel in kernels:
            for k in range(low, top):
                specs.append(_spec(kernel, dtype, (32, 192, 2 ** (k // 2), 2 ** (k - k // 2))))
            specs.append(_spec(kernel, dtype, (32, 192, 64, 64)))
            specs.append(_spec(kernel, dtype, (256, 64, 128, 128), index_64=True))
    for kernel in kernels:
        specs.append(_spec(kernel, torch.float16, (32, 192, 32, 64)))   # one tile a plane
        specs.append(_spec(kernel, torch.bfloat16, (4, 33, 7, 9)))      # 63 pixels, odd C
    specs.append(_spec("_stats_combine_kernel", torch.float32, (32, 192, 64, 64)))
    return specs
