"""The attention core on CPU tensors: PyTorch's own flash-attention CPU kernel (blocked, online
softmax, OpenMP; it never writes the [N, M] matrix).

That kernel wants one head width for queries, keys and values; SAGAN's queries and keys are
narrower (C/8) than its values (C/2). Zero columns appended to q and k leave every score
q.k unchanged, so q and k are padded to the value width: the score GEMM then does Dv/D times its
work (4x at C/8 vs C/2), against an eager path that writes, reads and differentiates the whole
[N, M] matrix. Measured in bench/results/self_attention.jsonl. self_attention2d pads without a
copy: it gives q, k and v one width already (zero rows in its projection weight; see _ROWS in
__init__.py), so for it the functions here only add and drop the head dimension.

The kernel reads each row of q, k, v, do and o as a contiguous vector whatever the strides say:
a transposed view (last-dim stride != 1) gives wrong results, seen here. Rows spaced apart (a
row stride larger than the width, as in column slices of a wider matrix) it reads correctly, so
only operands whose last dim is strided are copied (tests/ops/test_self_attention.py,
test_cpu_core_strided_rows).

The two ATen ops used (torch.ops.aten._scaled_dot_product_flash_attention_for_cpu and its
_backward) are what F.scaled_dot_product_attention dispatches to on CPU; they are called directly
because the public function neither returns the log-sum-exp nor exposes the backward on its own.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)

_flash_forward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default
_flash_backward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward.default


def _rows(t: torch.Tensor) -> torch.Tensor:
    """t with unit stride along its last dim (copied only if not): the kernel reads rows that way."""
    return t if t.stride(-1) == 1 else t.contiguous()


def heads_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float = 1.0):
    """The kernel on heads q [B, 1, N, D], k, v [B, 1, M, D] of one width, any strides (rows are
    made unit-stride where they are not: the max-pool writes channels_last or not, e.g. at batch 1).
    Returns (o [B, 1, N, D], lse [B, 1, N]).

    The kernel gives a query row holding NaN or -inf the output 0 (as a fully masked row), where
    the definition gives NaN: 0 * the row's sum (NaN for such a row, else 0) puts the NaN back
    (found by tests/fuzz/test_fuzz_self_attention.py)."""
    o, lse = _flash_forward(_rows(q), _rows(k), _rows(v), 0.0, False, scale=scale)[:2]
    return o + q.sum(-1, keepdim=True) * 0.0, lse


def heads_backward(do, q, k, v, o, lse, scale: float = 1.0):
    """heads_forward's backward: do, o [B, 1, N, D], lse [B, 1, N] -> (dq, dk, dv) as [B, 1, rows, D]."""
    return _flash_backward(_rows(do), _rows(q), _rows(k), _rows(v), _rows(o), lse, 0.0, False, scale=scale)


def _head(t: torch.Tensor) -> torch.Tensor:
    """[B, rows, width] as [B, 1, rows, width] (heads_forward makes the rows unit-stride)."""
    return t.unsqueeze(1)


def attention_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float = 1.0):
    """attention_ref(q, k, v, scale, return_lse=True): q [B, N, D], k [B, M, D], v [B, M, Dv], any
    strides and widths -> (o [B, N, Dv], lse [B, N])."""
    d, d_v = q.shape[-1], v.shape[-1]
    if d < d_v:    # narrower queries and keys (SAGAN): zero columns
        q, k = F.pad(q, (0, d_v - d)), F.pad(k, (0, d_v - d))
    elif d > d_v:  # wider queries than values: pad v instead, drop its extra columns
        o, lse = attention_forward(q, k, F.pad(v, (0, d - d_v)), scale)
        return o[..., :d_v].contiguous(), lse
    o, lse = heads_forward(_head(q), _head(k), _head(v), scale)
    return o.squeeze(1), lse.squeeze(1)


def attention_backward(do, q, k, v, o, lse, scale: float = 1.0):
    """attention_backward_ref(do, q, k, v, scale) from the forward's o and lse: (dq, dk, dv), contiguous."""
    d, d_v = q.shape[-1], v.shape[-1]
    if d > d_v:
        pad = d - d_v
        dq, dk, dvp = attention_backward(F.pad(do, (0, pad)), q, k, F.pad(v, (0, pad)), F.pad(o, (0, pad)), lse, scale)
        return dq, dk, dvp[..., :d_v].contiguous()
    if d < d_v:
        dq, dk, dv = attention_backward(do, F.pad(q, (0, d_v - d)), F.pad(k, (0, d_v - d)), v, o, lse, scale)
        return dq[..., :d].contiguous(), dk[..., :d].contiguous(), dv
    dq, dk, dv = heads_backward(_head(do), _head(q), _head(k), _head(v), _head(o), lse.unsqueeze(1), scale)
    return dq.squeeze(1), dk.squeeze(1), dv.squeeze(1)
