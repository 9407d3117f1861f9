"""Pieces the Triton kernels of several ops share (imported only where Triton is)."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ganfast import backends


@triton.jit
def round_bf16(v, ROUND_BF16: tl.constexpr):
    """v (fp32) rounded to the nearest bfloat16 value (ties to even), still fp32, when ROUND_BF16;
    v itself otherwise. The compiled fp32 -> bf16 cast (cvt.rn) rounds to nearest, but the Triton
    3.9 interpreter's cast truncates toward zero: an error of up to a whole ulp, all of one sign, in
    every bf16 a kernel writes or feeds to a dot. Under the interpreter (ROUND_BF16) the value is
    put on the bf16 grid here, after which the truncating cast is exact, so the CPU tests see the
    numbers a GPU computes. NaN stays NaN (the integer add could carry its payload into the sign)."""
    if ROUND_BF16:
        bits = v.to(tl.uint32, bitcast=True)
        bits = (bits + (0x7FFF + ((bits >> 16) & 1))) & 0xFFFF0000
        v = tl.where(v != v, v, bits.to(tl.float32, bitcast=True))
    return v


def rounds_bf16(dtype: torch.dtype) -> bool:
    """ROUND_BF16 for kernels whose casts go to `dtype`: only bf16 under TRITON_INTERPRET (the
    compiled kernels never take the branch)."""
    return dtype == torch.bfloat16 and backends.triton_interpret()
