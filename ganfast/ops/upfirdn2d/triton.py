"""upfirdn2d in Triton: the kernel and the launcher behind backend='triton'.

One direct kernel, `_upfirdn2d_kernel`, over output tiles. The contract (reference.run):

    out[p, oy, ox] = gain * sum_{fy, fx} k[fy, fx] * xu[p, oy*down_y + fy - py0, ox*down_x + fx - px0]

with xu the zero-upsampled input, p = n * C + c a plane. Only taps that land on a real input pixel
are visited (the polyphase decomposition): along an axis with t = o * down - pad0 the first such
tap is f0 = ceil(t / up) * up - t, on input pixel ceil(t / up), and the others follow every `up`
taps on consecutive input pixels, so each output sums ceil(fh / up_y) x ceil(fw / up_x) taps
instead of fh x fw mostly-zero products. f0 (the phase) repeats with period
up / gcd(up, down) along each axis.

Tiling: a program computes [BLOCK_R, BLOCK_W] outputs, BLOCK_W consecutive columns (the
contiguous axis: coalesced, vector stores) of BLOCK_R rows that all have the same row phase:
rows oy = phase + PHASES_Y * r of consecutive planes, taken in order across plane boundaries, so
small maps fill a tile with several planes. The row tap fy is then one scalar per program, and
the filter taps are scalar loads (uniform, cached). The column phase varies along the tile when
PHASES_X > 1 (up 2: even and odd columns); each column then picks its tap among the UP_X phase
candidates with selects rather than a per-element filter gather. Filter size, factors and
phase counts are compile-time constants: the tap rows unroll, the tap columns are a loop of
constant trip count (see the kernel for why). Accumulation is fp32; the filter is read as is or
flipped (FLIP), never copied. A bf16 output is put on the bf16 grid by
ganfast.ops._triton.round_bf16 under the interpreter (ROUND_BF16), whose cast truncates.
"""
from __future__ import annotations

import contextlib
import math

import torch
import triton
import triton.language as tl

from ganfast.ops._triton import round_bf16, rounds_bf16
from ganfast.ops.upfirdn2d.reference import output_size


@triton.jit
def _first_tap(o, base, rem, UP: tl.constexpr, DOWN: tl.constexpr):
    """(input pixel, filter tap) of the first tap of outputs o that lands on a real input pixel,
    along one axis; -pad0 = base * UP + rem with 0 <= rem < UP, so every division is of a
    non-negative number (Triton's // truncates)."""
    s = o * DOWN + rem
    if UP == 1:
        pixel, tap = s + base, 0 * s
    else:
        q = (s + (UP - 1)) // UP
        pixel, tap = q + base, q * UP - s
    return pixel, tap


@triton.jit
def _filter_tap(f_ptr, fy, fx, ok, FH: tl.constexpr, FW: tl.constexpr, FLIP: tl.constexpr):
    """k[fy, fx] (fp32) of the [FH, FW] filter at f_ptr: f itself when FLIP, else f flipped on
    both axes (a true convolution); 0 where ok is False."""
    if FLIP:
        offs = fy * FW + fx
    else:
        offs = (FH - 1 - fy) * FW + (FW - 1 - fx)
    return tl.load(f_ptr + offs, mask=ok, other=0.0)


@triton.jit
def _upfirdn2d_kernel(
    x_ptr,        # [P, H, W] dtype D, contiguous (P = N * C planes)
    f_ptr,        # [FH, FW] fp32, contiguous
    out_ptr,      # [P, out_h, out_w] dtype D, contiguous
    H, W, out_h, out_w,
    num_rows,     # P * rows_per_phase: the rows of one phase over every plane
    rows_per_phase,  # cdiv(out_h, PHASES_Y)
    num_wb,       # cdiv(out_w, BLOCK_W)
    x_base, x_rem, y_base, y_rem,  # -px0 = x_base * UP_X + x_rem, 0 <= x_rem < UP_X; y likewise
    gain,
    FH: tl.constexpr, FW: tl.constexpr, UP_X: tl.constexpr, UP_Y: tl.constexpr,
    DOWN_X: tl.constexpr, DOWN_Y: tl.constexpr,
    PHASES_X: tl.constexpr, PHASES_Y: tl.constexpr,   # up / gcd(up, down) per axis
    FLIP: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_W: tl.constexpr, INDEX_64: tl.constexpr,
    ROUND_BF16: tl.constexpr,   # bf16 under the interpreter, whose casts truncate (round_bf16)
):
    TAPS_Y: tl.constexpr = (FH + UP_Y - 1) // UP_Y
    TAPS_X: tl.constexpr = (FW + UP_X - 1) // UP_X
    # Programs: column blocks fastest, then the phases of one row block (they read the same
    # input rows), then row blocks.
    pid = tl.program_id(0)
    wb = pid % num_wb
    phase = (pid // num_wb) % PHASES_Y
    rb = pid // (num_wb * PHASES_Y)

    g = rb * BLOCK_R + tl.arange(0, BLOCK_R)           # [BLOCK_R] rows of this phase, all planes
    plane = g // rows_per_phase
    oy = phase + PHASES_Y * (g % rows_per_phase)
    # Loads need only stay inside x: rows past out_h and columns past out_w read pixels of real
    # planes (or nothing) and are never stored; rows past the last plane are masked off.
    in_planes = g < num_rows
    row_ok = in_planes & (oy < out_h)
    iy0, _ = _first_tap(oy, y_base, y_rem, UP_Y, DOWN_Y)
    _, fy0 = _first_tap(phase, y_base, y_rem, UP_Y, DOWN_Y)   # scalar: one row phase a program

    ox = wb * BLOCK_W + tl.arange(0, BLOCK_W)           # [BLOCK_W]
    col_ok = ox < out_w
    ix0, fx0 = _first_tap(ox, x_base, x_rem, UP_X, DOWN_X)
    if PHASES_X == 1:
        _, fx0 = _first_tap(wb * 0, x_base, x_rem, UP_X, DOWN_X)  # every column: one scalar phase

    if INDEX_64:
        plane = plane.to(tl.int64)
        iy0 = iy0.to(tl.int64)
    x_plane = plane * H * W
    acc = tl.zeros([BLOCK_R, BLOCK_W], dtype=tl.float32)
    # Tap columns in a loop, tap rows unrolled. Unrolled both ways, ptxas hoists every tap's
    # loads at once (sm_90, 12x12 at up 2: 255 registers, one block an SM); one loop over all
    # taps recomputes column indices and masks every tap (~1.8x the instructions a tap).
    for i in tl.range(0, TAPS_X):
        ix = ix0 + i                                   # [BLOCK_W]
        c_ok = (ix >= 0) & (ix < W)
        fx = fx0 + i * UP_X                            # scalar, or [BLOCK_W] when PHASES_X > 1
        if FW % UP_X != 0:                             # the last tap column can fall past the filter
            c_ok = c_ok & (ix * 0 + fx < FW)           # (as a vector: the interpreter cannot mask
                                                       #  with a scalar and a vector combined)
        for j in tl.static_range(TAPS_Y):
            fy = fy0 + j * UP_Y                        # scalar
            iy = iy0 + j                               # [BLOCK_R]
            r_ok = in_planes & (iy >= 0) & (iy < H)
            if FH % UP_Y != 0 and j == TAPS_Y - 1:    # the last tap row can fall past the filter
                r_ok = r_ok & (iy * 0 + fy < FH)
            if PHASES_X == 1:
                w = _filter_tap(f_ptr, fy, fx, (fy < FH) & (fx < FW), FH, FW, FLIP)
            else:
                # each column takes the tap of its phase: selects among UP_X scalar taps
                w = tl.zeros([BLOCK_W], dtype=tl.float32)
                for p in tl.static_range(UP_X):
                    tap = _filter_tap(f_ptr, fy, p + i * UP_X, (fy < FH) & (p + i * UP_X < FW), FH, FW, FLIP)
                    w = tl.where(fx0 == p, tap, w)
                w = w[None, :]
            v = tl.load(x_ptr + (x_plane + iy * W)[:, None] + ix[None, :], mask=r_ok[:, None] & c_ok[None, :],
                        other=0.0)
            acc += v.to(tl.float32) * w
    out_offs = (plane * out_h + oy) * out_w
    y = round_bf16(acc * gain, ROUND_BF16).to(out_ptr.dtype.element_ty)
    tl.store(out_ptr + out_offs[:, None] + ox[None, :], y, mask=row_ok[:, None] & col_ok[None, :])


# ---- launch configuration ----

TILE = 1024               # outputs per program
MAX_BLOCK_W = 128         # widest column block; wider maps take several
# 4 outputs a thread (64-bit fp16 / 128-bit fp32 stores). At 8 a thread (4 warps) ptxas spills a
# few bytes on sm_80 or sm_90 for some 4x4 filters to stay within 56 registers.
NUM_WARPS = 8
INDEX_32_LIMIT = 2**31    # offsets past this take the int64 kernel (a module constant, so tests reach it)
# FMA contraction on, Triton's default; said explicitly because Triton 3.9 warns that the default will change.
_FP_FUSION = {"enable_fp_fusion": True}
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def plan(out_w: int) -> tuple[int, int]:
    """(BLOCK_R, BLOCK_W): columns cover the output width (a power of two up to MAX_BLOCK_W), rows
    fill the TILE, so narrow maps take many rows (of several planes) a program."""
    block_w = min(triton.next_power_of_2(out_w), MAX_BLOCK_W)
    return TILE // block_w, block_w


def _axis(up: int, down: int, pad0: int) -> tuple[int, int, int]:
    """(phases, base, rem) of one axis: the period of the tap phase, and -pad0 = base * up + rem."""
    base, rem = divmod(-pad0, up)
    return up // math.gcd(up, down), base, rem


def _launch(shape: tuple[int, int, int, int], fh: int, fw: int, upx: int, upy: int, downx: int, downy: int,
            px0: int, px1: int, py0: int, py1: int, flip_filter: bool) -> tuple[tuple[int], dict, dict]:
    """(grid, runtime ints, constexprs) of the launch for x of `shape` [N, C, H, W] and an [fh, fw]
    filter: the one place `run` and `aot_specs` derive a launch from."""
    n, c, h, w = shape
    out_h = (h * upy + py0 + py1 - fh + downy) // downy
    out_w = (w * upx + px0 + px1 - fw + downx) // downx
    block_r, block_w = plan(out_w)
    phases_x, x_base, x_rem = _axis(upx, downx, px0)
    phases_y, y_base, y_rem = _axis(upy, downy, py0)
    rows_per_phase = triton.cdiv(out_h, phases_y)
    num_rows = n * c * rows_per_phase
    num_wb = triton.cdiv(out_w, block_w)
    # Offsets of lanes past the ends (masked, never dereferenced) must not wrap either: bound
    # them by a padded plane count times the larger plane, margins for taps and crops included.
    plane_span = max((h + fh + abs(py0) + abs(py1)) * (w + fw + abs(px0) + abs(px1)), out_h * out_w)
    index_64 = (n * c + block_r + 1) * plane_span >= INDEX_32_LIMIT
    ints = dict(H=h, W=w, out_h=out_h, out_w=out_w, num_rows=num_rows, rows_per_phase=rows_per_phase,
                num_wb=num_wb, x_base=x_base, x_rem=x_rem, y_base=y_base, y_rem=y_rem)
    constexprs = dict(FH=fh, FW=fw, UP_X=upx, UP_Y=upy, DOWN_X=downx, DOWN_Y=downy, PHASES_X=phases_x,
                      PHASES_Y=phases_y, FLIP=bool(flip_filter), BLOCK_R=block_r, BLOCK_W=block_w,
                      INDEX_64=index_64, ROUND_BF16=False)
    grid = (triton.cdiv(num_rows, block_r) * phases_y * num_wb,)
    return grid, ints, constexprs


def _check_args(x: torch.Tensor, f: torch.Tensor, factors: tuple[int, ...]) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_contiguous():
        got = f"shape {list(x.shape)} strides {x.stride()}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"upfirdn2d (triton): x must be a contiguous [N, C, H, W] tensor, got {got}")
    if x.dtype not in _DTYPES:
        raise TypeError(f"upfirdn2d (triton): x must be float16, bfloat16 or float32, got {x.dtype}")
    if not isinstance(f, torch.Tensor) or f.ndim != 2 or f.numel() == 0 or f.dtype != torch.float32 \
            or not f.is_contiguous() or f.device != x.device:
        got = f"{list(f.shape)} {f.dtype} on {f.device}" if isinstance(f, torch.Tensor) else type(f).__name__
        raise ValueError(f"upfirdn2d (triton): f must be a contiguous non-empty [fh, fw] float32 tensor on "
                         f"{x.device}, got {got}")
    if any(not isinstance(v, int) or v < 1 for v in factors):
        raise ValueError(f"upfirdn2d (triton): up and down factors must be ints >= 1, got {list(factors)}")


def run(x: torch.Tensor, f: torch.Tensor, upx: int, upy: int, downx: int, downy: int,
        px0: int, px1: int, py0: int, py1: int, flip_filter: bool, gain: float) -> torch.Tensor:
    """The kernel contract of ganfast/ops/upfirdn2d/reference.py::run, on Triton.

    x: [N, C, H, W] contiguous fp16/bf16/fp32; f: [fh, fw] contiguous float32 on x's device.
    Returns a new contiguous [N, C, out_h, out_w] tensor in x's dtype (fp32 accumulation).
    """
    _check_args(x, f, (upx, upy, downx, downy))
    n, c, h, w = x.shape
    fh, fw = f.shape
    out_h, out_w = output_size(h, w, f, (upx, upy), (downx, downy), (px0, px1, py0, py1))
    if out_h < 1 or out_w < 1:
        raise ValueError(f"upfirdn2d (triton): the output would be empty ({out_h} x {out_w}) for x {list(x.shape)}, "
                         f"f {list(f.shape)}, up {[upx, upy]}, down {[downx, downy]}, "
                         f"padding {[px0, px1, py0, py1]}")
    out = torch.empty((n, c, out_h, out_w), dtype=x.dtype, device=x.device)
    if n * c == 0:
        return out
    if h * w == 0:
        return out.zero_()  # only padding: every tap lands on a zero
    grid, ints, constexprs = _launch(tuple(x.shape), fh, fw, upx, upy, downx, downy, px0, px1, py0, py1,
                                     flip_filter)
    constexprs["ROUND_BF16"] = rounds_bf16(x.dtype)   # _launch says False: what compiled kernels take
    with torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext():
        _upfirdn2d_kernel[grid](x, f, out, **ints, gain=float(gain), **constexprs, num_warps=NUM_WARPS,
                                **_FP_FUSION)
    return out


# ---- configurations, for ahead-of-time checks (ganfast.testing.triton_aot) ----

_TRITON_DTYPE = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}


def _spec(name: str, dtype: torch.dtype, shape: tuple[int, int, int, int], fsize: tuple[int, int],
          up: tuple[int, int], down: tuple[int, int], padding: tuple[int, int, int, int],
          flip_filter: bool = False, index_64: bool = False) -> dict:
    """The spec of the launch `run` makes for x of `shape` [N, C, H, W] in dtype and an fh x fw
    filter, its ints specialized as the JIT does (1 a constant, multiples of 16 aligned)."""
    (fh, fw), (upx, upy), (downx, downy) = fsize, up, down
    _, ints, constexprs = _launch(shape, fh, fw, upx, upy, downx, downy, *padding, flip_filter)
    if index_64:
        constexprs["INDEX_64"] = True
    d = f"*{_TRITON_DTYPE[dtype]}"
    signature = dict(x_ptr=d, f_ptr="*fp32", out_ptr=d)
    aligned = list(signature)
    for k, v in ints.items():
        if v == 1:
            constexprs[k] = 1
            continue
        signature[k] = "i32" if -2**31 <= v < 2**31 else "i64"
        if v % 16 == 0:
            aligned.append(k)
    signature["gain"] = "fp32"
    # Stores are vectors of each thread's contiguous outputs when rows are 16-element aligned
    # (out_w % 16 == 0, which the JIT then knows): 4 outputs a thread, fewer on narrower tiles.
    per_thread = min(TILE // (NUM_WARPS * 32), constexprs["BLOCK_W"])
    store_bytes = per_thread * dtype.itemsize if ints["out_w"] % 16 == 0 and per_thread > 1 else 0
    return dict(name=f"{name} {_TRITON_DTYPE[dtype]} {'x'.join(map(str, shape))} f{fh}x{fw} up{upx},{upy} "
                     f"down{downx},{downy} tile={constexprs['BLOCK_R']}x{constexprs['BLOCK_W']}"
                     f"{' int64' if constexprs['INDEX_64'] else ''}",
                kernel=f"{__name__}:_upfirdn2d_kernel", signature=signature, constexprs=constexprs,
                aligned=aligned, options=dict(num_warps=NUM_WARPS, **_FP_FUSION),
                store_bytes=store_bytes)


def aot_specs() -> list[dict]:
    """The launches of `run`, as ganfast.testing.triton_aot specs.

    Every tile shape `plan` can pick (one per BLOCK_W, 1 to MAX_BLOCK_W): StyleGAN2's 2x
    upsampling (the column-phase selects) for 2 to 128 output columns, 2x downsampling to 1x1
    maps for 1; then, on 128-wide tiles, StyleGAN2's other uses of the [1, 3, 3, 1] filter (the
    blur around strided and transposed convs, 2x downsampling), up and down together with
    per-axis factors and a flipped filter, a 1-tap filter, large filters (StyleGAN3-like 12x12
    at 2x, 16x16 at 4x) and the int64-offset kernel. Each in fp16, bf16 and fp32.
    """
    specs = []
    for dtype in _TRITON_DTYPE:
        specs.append(_spec("down2", dtype, (4, 64, 2, 2), (4, 4), (1, 1), (2, 2), (1, 1, 1, 1)))   # out 1x1
        for k in range(1, int(math.log2(MAX_BLOCK_W)) + 1):
            side = 2 ** (k - 1)   # up 2 doubles it: out_w = 2**k
            specs.append(_spec("up2", dtype, (4, 64, side, side), (4, 4), (2, 2), (1, 1), (2, 1, 2, 1)))
        specs += [
            _spec("blur", dtype, (4, 64, 129, 129), (4, 4), (1, 1), (1, 1), (1, 1, 1, 1)),
            _spec("down2", dtype, (4, 64, 256, 256), (4, 4), (1, 1), (2, 2), (1, 1, 1, 1)),
            _spec("up-down", dtype, (4, 64, 64, 64), (3, 5), (3, 2), (2, 3), (2, 1, -1, 3), flip_filter=True),
            _spec("1-tap", dtype, (4, 64, 128, 128), (1, 1), (1, 1), (1, 1), (0, 0, 0, 0)),
            _spec("12x12-up2", dtype, (4, 64, 64, 64), (12, 12), (2, 2), (1, 1), (6, 5, 6, 5)),
            _spec("16x16-up4", dtype, (4, 64, 32, 32), (16, 16), (4, 4), (1, 1), (8, 7, 8, 7)),
            _spec("up2", dtype, (4, 64, 64, 64), (4, 4), (2, 2), (1, 1), (2, 1, 2, 1), index_64=True),
        ]
    return specs
