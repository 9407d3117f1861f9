"""Spectral normalization's two passes over W in Triton: the kernels behind backend='triton'.

The kernel contract (reference.py): W [O, K] (fp16/bf16/fp32, read in its dtype and upcast),
u [k, O] and v [k, K] fp32, accumulation in fp32:

    matvec_t(w, u)          s = u W          [k, K]
    matvec_gram(w, v, gram) t = v W^T        [k, O]   and, when gram, s = t W  [k, K]

Both are bandwidth-bound (2 flops a loaded element a vector), so the kernels are built around
reading W once, in wide coalesced loads, with many programs in flight. A program owns a block of
BLOCK_O rows and walks its columns in [BLOCK_O, BLOCK_K] tiles (16-byte loads along K; rows of
W that are not a multiple of 16 elements long fall back to narrower loads):

  _matvec_gram_kernel  phase 1: t[:, rows] = sum over the K chunks of v[:, chunk] . w[rows, chunk]
                       (a [k, BLOCK_O, BLOCK_K] fp32 accumulator reduced once at the end);
                       phase 2 (GRAM): the block's partial s, sum_{r in rows} t[:, r] w[r, :],
                       chunk by chunk, into partials[program]. Phase 2 walks the chunks in
                       reverse, so it starts on the ones phase 1 read last: the second read of
                       the block is an L2 hit whenever the blocks in flight fit in L2 (A100 40
                       MB, H100 50 MB), and for larger W the most recently read part still is.
  _matvec_t_kernel     phase 2 alone, with u for t. Without phase 1's dependence on whole rows
                       it can also split the columns of a row block over programs (each writes
                       its own slice of the block's partials): more programs for few rows.
  _sum_partials_kernel s = the partials summed over programs, in a fixed order: deterministic
                       (no atomics). Skipped when one row block covers W (the kernel writes s).

The number of vectors k is a compile-time NSV (1..MAX_NSV), padded to a power of two NSV_PAD
for the accumulator's leading axis (rows past NSV are masked to zero); larger k goes in groups of
MAX_NSV, one pass over W each. No tl.dot: k is far below a tensor-core tile.

Rows a program (`plan`): enough programs to keep ~TARGET_PROGRAMS in flight, but at least
MIN_ROWS rows (MIN_ROWS_T for matvec_t) so the partials (programs x k x K fp32, written and read
back) stay a fraction of W's traffic: 2 k fp32 words per column a program against BLOCK_O
elements of W. The tile holds TILE elements; narrow matrices (small K) take more rows a tile.
"""
from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl


# Every tile is 3-D, [vector j, row, column], with size-1 axes where a value does not vary: the
# loads of W are [1, BLOCK_O, BLOCK_K] and v's [NSV_PAD, 1, BLOCK_K], so the compiler lays the
# products out as the coalesced loads (16 contiguous bytes a thread along K). Loading 2-D tiles
# and expanding them instead left the 3-D math in a default layout, and every loaded tile went
# through shared memory to reach it. One conversion remains, in phase 1 for fp16/bf16 W: its
# loads hold 8 elements a thread and v's (fp32) 4, and the accumulator takes v's layout.

@triton.jit
def _partial_products(w_rows, row_ok, part_ptr, t, block, K, kb_start, kb_end,
                      NSV: tl.constexpr, NSV_PAD: tl.constexpr, BLOCK_K: tl.constexpr):
    """part[block, j, c] = sum_{r in rows} t[j, r] * W[r, c] for the columns of chunks kb_start ..
    kb_end - 1, last chunk first. w_rows: [1, BLOCK_O, 1] pointers to the block's rows, row_ok
    which exist; t: [NSV_PAD, BLOCK_O, 1] fp32, zero on rows past O and j >= NSV."""
    j = tl.arange(0, NSV_PAD)[:, None, None]
    part_rows = (block * NSV + j) * K                  # [NSV_PAD, 1, 1]; block is int64 in int64 kernels
    for i in range(kb_start, kb_end):
        kb = kb_start + kb_end - 1 - i
        cols = kb * BLOCK_K + tl.arange(0, BLOCK_K)[None, None, :]   # [1, 1, BLOCK_K]
        w = tl.load(w_rows + cols, mask=row_ok & (cols < K), other=0.0).to(tl.float32)
        p = tl.sum(t * w, axis=1, keep_dims=True)      # [NSV_PAD, 1, BLOCK_K]
        tl.store(part_ptr + part_rows + cols, p, mask=(j < NSV) & (cols < K))


@triton.jit
def _matvec_gram_kernel(
    w_ptr,      # [O, K] dtype D (fp16/bf16/fp32), contiguous
    v_ptr,      # [NSV, K] fp32, contiguous
    t_ptr,      # [NSV, O] fp32, contiguous: t = v W^T
    part_ptr,   # [num_programs, NSV, K] fp32, contiguous: each program's share of s = t W (GRAM)
    O, K,
    NSV: tl.constexpr, NSV_PAD: tl.constexpr, GRAM: tl.constexpr,
    BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr, INDEX_64: tl.constexpr,
):
    block = tl.program_id(0)
    if INDEX_64:
        block = block.to(tl.int64)
    rows = block * BLOCK_O + tl.arange(0, BLOCK_O)[None, :, None]   # [1, BLOCK_O, 1]
    w_rows = w_ptr + rows * K
    row_ok = rows < O
    j = tl.arange(0, NSV_PAD)[:, None, None]           # [NSV_PAD, 1, 1]
    j_ok = j < NSV
    num_kb = tl.cdiv(K, BLOCK_K)
    # Elementwise products accumulate in the tile's shape; one cross-thread reduction at the end.
    acc = tl.zeros([NSV_PAD, BLOCK_O, BLOCK_K], dtype=tl.float32)
    for kb in range(0, num_kb):
        cols = kb * BLOCK_K + tl.arange(0, BLOCK_K)[None, None, :]   # [1, 1, BLOCK_K]
        w = tl.load(w_rows + cols, mask=row_ok & (cols < K), other=0.0).to(tl.float32)
        v = tl.load(v_ptr + j * K + cols, mask=j_ok & (cols < K), other=0.0)
        acc += w * v
    t = tl.sum(acc, axis=2, keep_dims=True)            # [NSV_PAD, BLOCK_O, 1], zero on rows past O
    tl.store(t_ptr + j * O + rows, t, mask=j_ok & row_ok)
    if GRAM:
        _partial_products(w_rows, row_ok, part_ptr, t, block, K, 0, num_kb, NSV, NSV_PAD, BLOCK_K)


@triton.jit
def _matvec_t_kernel(
    w_ptr,      # [O, K] dtype D (fp16/bf16/fp32), contiguous
    u_ptr,      # [NSV, O] fp32, contiguous
    part_ptr,   # [num_row_blocks, NSV, K] fp32, contiguous: each row block's share of s = u W
    O, K,
    kb_per_split,   # column chunks a program; the chunks of a row block go to consecutive programs
    NSV: tl.constexpr, NSV_PAD: tl.constexpr,
    BLOCK_O: tl.constexpr, BLOCK_K: tl.constexpr, INDEX_64: tl.constexpr,
):
    pid = tl.program_id(0)
    num_kb = tl.cdiv(K, BLOCK_K)
    num_splits = tl.cdiv(num_kb, kb_per_split)
    block = pid // num_splits
    kb_start = (pid % num_splits) * kb_per_split
    kb_end = tl.minimum(kb_start + kb_per_split, num_kb)
    if INDEX_64:
        block = block.to(tl.int64)
    rows = block * BLOCK_O + tl.arange(0, BLOCK_O)[None, :, None]   # [1, BLOCK_O, 1]
    row_ok = rows < O
    j = tl.arange(0, NSV_PAD)[:, None, None]           # [NSV_PAD, 1, 1]
    u = tl.load(u_ptr + j * O + rows, mask=(j < NSV) & row_ok, other=0.0)
    _partial_products(w_ptr + rows * K, row_ok, part_ptr, u, block, K, kb_start, kb_end, NSV, NSV_PAD, BLOCK_K)


@triton.jit
def _sum_partials_kernel(
    part_ptr,   # [P, N] fp32, contiguous (N = NSV * K: P programs' partials of s)
    out_ptr,    # [N] fp32: s, the sum over P
    P, N,
    BLOCK_P: tl.constexpr, BLOCK_N: tl.constexpr, INDEX_64: tl.constexpr,
):
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)   # [BLOCK_N]
    acc = tl.zeros([BLOCK_P, BLOCK_N], dtype=tl.float32)
    for p0 in range(0, P, BLOCK_P):
        prow = p0 + tl.arange(0, BLOCK_P)               # [BLOCK_P]
        if INDEX_64:
            prow = prow.to(tl.int64)
        acc += tl.load(part_ptr + prow[:, None] * N + cols[None, :],
                       mask=(prow < P)[:, None] & (cols < N)[None, :], other=0.0)
    tl.store(out_ptr + cols, tl.sum(acc, axis=0), mask=cols < N)


# ---- launch configuration ----

TILE = 4096               # elements of W a program loads per step ([BLOCK_O, BLOCK_K])
ELEMS_PER_THREAD = 16     # of a full tile: 4 x 16-byte loads fp32, 2 fp16/bf16; 8 warps at TILE
MAX_WARPS = 8
TARGET_PROGRAMS = 512     # ~4 a streaming multiprocessor on A100 (108) / H100 (132)
MIN_ROWS = 4              # rows a matvec_gram program, at least (partials: 2 fp32 per column for 4 rows)
MIN_ROWS_T = 16           # rows a matvec_t program, at least (it finds parallelism along K instead)
MIN_BLOCK_K = 64          # columns a tile, at least, where K has them (256 contiguous bytes fp32)
MAX_NSV = 4               # vectors a pass; larger k takes several passes
SUM_TILE = 4096           # partials the reduction loads per step ([BLOCK_P, BLOCK_N])
SUM_BLOCK_N = 128         # its columns a program: N / 128 programs
INDEX_32_LIMIT = 2**31    # offsets past this take the int64 kernels (a module constant, so tests reach them)
# FMA contraction on, Triton's default; said explicitly because Triton 3.9 warns that the default will change.
_FP_FUSION = {"enable_fp_fusion": True}
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _num_warps(tile: int) -> int:
    return max(1, min(MAX_WARPS, tile // (32 * ELEMS_PER_THREAD)))


def plan(o: int, kk: int, kind: str) -> dict:
    """How programs cover W [o, kk]: BLOCK_O, BLOCK_K, row_blocks, num_kb (column chunks),
    kb_per_split and splits (column ranges a row block, matvec_t only), num_warps. kind is
    'gram' (matvec_gram: a program a row block) or 't' (matvec_t)."""
    k_pow = triton.next_power_of_2(kk)
    rows = max(MIN_ROWS_T if kind == "t" else MIN_ROWS, triton.next_power_of_2(triton.cdiv(o, TARGET_PROGRAMS)),
               TILE // k_pow)                            # narrow W: fill the tile with rows
    rows = min(rows, triton.next_power_of_2(o), TILE // min(k_pow, MIN_BLOCK_K))
    block_k = min(k_pow, TILE // rows)
    row_blocks = triton.cdiv(o, rows)
    num_kb = triton.cdiv(kk, block_k)
    kb_per_split = num_kb
    if kind == "t":
        kb_per_split = triton.cdiv(num_kb, max(1, min(num_kb, TARGET_PROGRAMS // row_blocks)))
    return dict(BLOCK_O=rows, BLOCK_K=block_k, row_blocks=row_blocks, num_kb=num_kb, kb_per_split=kb_per_split,
                splits=triton.cdiv(num_kb, kb_per_split), num_warps=_num_warps(rows * block_k))


def sum_plan(p: int, n: int) -> dict:
    """How _sum_partials_kernel covers [p, n] partials: BLOCK_P, BLOCK_N, programs, num_warps."""
    block_n = min(triton.next_power_of_2(n), SUM_BLOCK_N)
    block_p = min(triton.next_power_of_2(p), max(1, SUM_TILE // block_n))
    return dict(BLOCK_P=block_p, BLOCK_N=block_n, programs=triton.cdiv(n, block_n),
                num_warps=_num_warps(block_p * block_n))


def _launch(kind: str, o: int, kk: int, nsv: int) -> tuple[tuple[int], dict, dict, dict]:
    """(grid, runtime ints, constexprs, options) of one pass over W [o, kk] with nsv vectors:
    kind 'gram', 'gram-t' (matvec_gram without s) or 't'; the one place the launchers and
    aot_specs derive a launch from."""
    cfg = plan(o, kk, "t" if kind == "t" else "gram")
    rows, block_k = cfg["BLOCK_O"], cfg["BLOCK_K"]
    # Offsets of masked lanes past the ends must not wrap either: bound rows and columns padded
    # to whole blocks (and split ranges), and the partials likewise.
    padded_k = cfg["splits"] * cfg["kb_per_split"] * block_k
    bound = max((cfg["row_blocks"] + 1) * rows * padded_k, (cfg["row_blocks"] + 1) * nsv * padded_k)
    constexprs = dict(NSV=nsv, NSV_PAD=triton.next_power_of_2(nsv), BLOCK_O=rows, BLOCK_K=block_k,
                      INDEX_64=bound >= INDEX_32_LIMIT)
    ints = dict(O=o, K=kk)
    if kind == "t":
        ints["kb_per_split"] = cfg["kb_per_split"]
        grid = (cfg["row_blocks"] * cfg["splits"],)
    else:
        constexprs["GRAM"] = kind == "gram"
        grid = (cfg["row_blocks"],)
    return grid, ints, constexprs, dict(num_warps=cfg["num_warps"], **_FP_FUSION)


def _sum_launch(p: int, n: int) -> tuple[tuple[int], dict, dict, dict]:
    """(grid, runtime ints, constexprs, options) of _sum_partials_kernel over [p, n] partials."""
    cfg = sum_plan(p, n)
    bound = (triton.cdiv(p, cfg["BLOCK_P"]) * cfg["BLOCK_P"] + 1) * cfg["programs"] * cfg["BLOCK_N"]
    constexprs = dict(BLOCK_P=cfg["BLOCK_P"], BLOCK_N=cfg["BLOCK_N"], INDEX_64=bound >= INDEX_32_LIMIT)
    return (cfg["programs"],), dict(P=p, N=n), constexprs, dict(num_warps=cfg["num_warps"], **_FP_FUSION)


def _check_args(w: torch.Tensor, x: torch.Tensor, name: str, axis: int, fn: str) -> None:
    """w [O, K] contiguous fp16/bf16/fp32; x [k, w.shape[axis]] contiguous fp32 on w's device."""
    if not isinstance(w, torch.Tensor) or w.ndim != 2 or not w.is_contiguous():
        got = f"shape {list(w.shape)} strides {w.stride()}" if isinstance(w, torch.Tensor) else type(w).__name__
        raise ValueError(f"spectral_norm {fn} (triton): w must be a contiguous [O, K] matrix, got {got}")
    if w.dtype not in _DTYPES:
        raise TypeError(f"spectral_norm {fn} (triton): w must be float16, bfloat16 or float32, got {w.dtype}")
    n = w.shape[axis]
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != n or x.dtype != torch.float32 \
            or not x.is_contiguous() or x.device != w.device:
        got = f"{list(x.shape)} {x.dtype} on {x.device}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"spectral_norm {fn} (triton): {name} must be a contiguous [k, {n}] float32 tensor on "
                         f"{w.device} for w of shape {list(w.shape)}, got {got}")


def _device(w: torch.Tensor):
    return torch.cuda.device(w.device) if w.is_cuda else contextlib.nullcontext()


def _groups(k: int):
    """Row ranges [j0, j1) of the k vectors, MAX_NSV at most each: one pass over W each."""
    return [(j0, min(j0 + MAX_NSV, k)) for j0 in range(0, k, MAX_NSV)]


def _reduce_into(part: torch.Tensor, out: torch.Tensor) -> None:
    """out [nsv, K] = part [P, nsv, K] summed over P (nothing to do when part is out)."""
    if part is out:
        return
    grid, ints, constexprs, options = _sum_launch(part.shape[0], out.numel())
    _sum_partials_kernel[grid](part, out, **ints, **constexprs, **options)


def matvec_t(w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """The kernel contract of reference.matvec_t on Triton: s = u W.

    w: [O, K] contiguous fp16/bf16/fp32; u: [k, O] contiguous fp32 on w's device.
    Returns a new [k, K] fp32 tensor (fp32 accumulation). Reads w once (k <= MAX_NSV).
    """
    _check_args(w, u, "u", 0, "matvec_t")
    o, kk = w.shape
    s = torch.empty((u.shape[0], kk), dtype=torch.float32, device=w.device)
    if s.numel() == 0:
        return s
    if o == 0:
        return s.zero_()
    with _device(w):
        for j0, j1 in _groups(u.shape[0]):
            grid, ints, constexprs, options = _launch("t", o, kk, j1 - j0)
            row_blocks = triton.cdiv(o, constexprs["BLOCK_O"])
            out = s[j0:j1]
            part = out if row_blocks == 1 else torch.empty((row_blocks, j1 - j0, kk), dtype=torch.float32,
                                                           device=w.device)
            _matvec_t_kernel[grid](w, u[j0:j1], part, **ints, **constexprs, **options)
            _reduce_into(part, out)
    return s


def matvec_gram(w: torch.Tensor, v: torch.Tensor, gram: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The kernel contract of reference.matvec_gram on Triton: t = v W^T and, when gram, s = t W.

    w: [O, K] contiguous fp16/bf16/fp32; v: [k, K] contiguous fp32 on w's device.
    Returns new fp32 tensors t [k, O] and s [k, K] (None when not gram). Reads w once (k <= MAX_NSV).
    """
    _check_args(w, v, "v", 1, "matvec_gram")
    o, kk = w.shape
    k = v.shape[0]
    t = torch.empty((k, o), dtype=torch.float32, device=w.device)
    s = torch.empty((k, kk), dtype=torch.float32, device=w.device) if gram else None
    if k * o == 0 or kk == 0:
        # no rows: s is an empty sum; no columns: t is
        return t.zero_(), (s.zero_() if gram else None)
    with _device(w):
        for j0, j1 in _groups(k):
            grid, ints, constexprs, options = _launch("gram" if gram else "gram-t", o, kk, j1 - j0)
            out = s[j0:j1] if gram else t[j0:j1]  # t: an unused pointer still needs a tensor
            part = out if grid[0] == 1 or not gram else torch.empty((grid[0], j1 - j0, kk), dtype=torch.float32,
                                                                    device=w.device)
            _matvec_gram_kernel[grid](w, v[j0:j1], t[j0:j1], part, **ints, **constexprs, **options)
            if gram:
                _reduce_into(part, out)
    return t, s


# ---- configurations, for ahead-of-time checks (ganfast.testing.triton_aot) ----

_TRITON_DTYPE = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}


def _specialized(signature: dict, constexprs: dict, ints: dict) -> list[str]:
    """Adds ints to signature as the JIT specializes them (1 a constant, i32 or i64); returns
    the names it treats as multiples of 16 (every pointer is taken 16-byte aligned)."""
    aligned = list(signature)
    for name, value in ints.items():
        if value == 1:
            constexprs[name] = 1
            continue
        signature[name] = "i32" if -2**31 <= value < 2**31 else "i64"
        if value % 16 == 0:
            aligned.append(name)
    return aligned


def _spec(kind: str, dtype: torch.dtype, shape: tuple[int, int], nsv: int, index_64: bool = False) -> dict:
    """The spec of the pass `matvec_t` ('t') or `matvec_gram` ('gram', 'gram-t': gram=False)
    makes for W of `shape` [O, K] in dtype with nsv vectors."""
    o, kk = shape
    _, ints, constexprs, options = _launch(kind, o, kk, nsv)
    constexprs["INDEX_64"] = constexprs["INDEX_64"] or index_64
    d = f"*{_TRITON_DTYPE[dtype]}"
    if kind == "t":
        kernel, signature = "_matvec_t_kernel", dict(w_ptr=d, u_ptr="*fp32", part_ptr="*fp32")
    else:
        kernel, signature = "_matvec_gram_kernel", dict(w_ptr=d, v_ptr="*fp32", t_ptr="*fp32", part_ptr="*fp32")
    aligned = _specialized(signature, constexprs, ints)
    return dict(name=f"{kind} {_TRITON_DTYPE[dtype]} {o}x{kk} k={nsv} tile={constexprs['BLOCK_O']}x"
                     f"{constexprs['BLOCK_K']}{' int64' if constexprs['INDEX_64'] else ''}",
                kernel=f"{__name__}:{kernel}", signature=signature, constexprs=constexprs, aligned=aligned,
                options=options,
                # 16-byte loads of W need rows of a multiple of 16 elements (K % 16 == 0: each
                # row starts aligned) and a tile at least that wide.
                vector_loads=kk % 16 == 0 and min(constexprs["BLOCK_K"], kk) * dtype.itemsize >= 16)


def _sum_spec(p: int, n: int, index_64: bool = False) -> dict:
    """The spec of the reduction of [p, n] partials (n = k * K)."""
    _, ints, constexprs, options = _sum_launch(p, n)
    constexprs["INDEX_64"] = constexprs["INDEX_64"] or index_64
    signature = dict(part_ptr="*fp32", out_ptr="*fp32")
    aligned = _specialized(signature, constexprs, ints)
    return dict(name=f"sum-partials {p}x{n} tile={constexprs['BLOCK_P']}x{constexprs['BLOCK_N']}"
                     f"{' int64' if constexprs['INDEX_64'] else ''}",
                kernel=f"{__name__}:_sum_partials_kernel", signature=signature, constexprs=constexprs,
                aligned=aligned, options=options, vector_loads=n % 16 == 0)


# Real layers' W = weight.flatten(1), [O, K]: a 3x3 conv at 512 channels (SNGAN, BigGAN D at
# 64-128 px), BigGAN's class embedding / D's projection (1000 x 1536), D's final linear (O = 1),
# G's first linear (K = dim_z + shared dim: narrow, not a multiple of 16), and an RGB 3x3 conv
# (K = 27).
_CONV = (512, 4608)
_SHAPES = {"conv3x3-512": _CONV, "embed": (1000, 1536), "linear-out1": (1, 1536),
           "g-linear": (24576, 148), "rgb-conv": (96, 27)}


def aot_specs() -> list[dict]:
    """The launches of `matvec_t` and `matvec_gram`, as ganfast.testing.triton_aot specs.

    For every dtype: each pass (gram, gram-t, t) with k = 1 on every shape of _SHAPES (each a
    different tile); with k = 2, 3, 4 on the 3x3 conv in fp16 and fp32 (bf16 compiles as fp16:
    same sizes, same layouts); the int64-offset kernels on the conv (fp16). The reduction of the
    partials of the conv (k = 1 and 4) and G's linear (rows not 16-element aligned), and its
    int64 kernel.
    """
    specs = []
    for dtype in _TRITON_DTYPE:
        for kind in ("gram", "gram-t", "t"):
            for shape in _SHAPES.values():
                specs.append(_spec(kind, dtype, shape, 1))
            if dtype != torch.bfloat16:
                for nsv in range(2, MAX_NSV + 1):
                    specs.append(_spec(kind, dtype, _CONV, nsv))
    for kind in ("gram", "gram-t", "t"):
        specs.append(_spec(kind, torch.float16, _CONV, 1, index_64=True))
    conv_blocks = plan(*_CONV, "gram")["row_blocks"]
    glinear = _SHAPES["g-linear"]
    specs += [_sum_spec(conv_blocks, _CONV[1]),                                  # conv, k = 1
              _sum_spec(plan(*_CONV, "t")["row_blocks"], MAX_NSV * _CONV[1]),     # conv matvec_t, k = 4
              _sum_spec(plan(*glinear, "gram")["row_blocks"], glinear[1]),       # K = 148: rows unaligned
              _sum_spec(conv_blocks, _CONV[1], index_64=True)]
    return specs
