"""The attention core on CPU tensors: PyTorch's own flash-attention CPU kernel (blocked, online
softmax, OpenMP; it never writes the [N, M] matrix).

That kernel wants one head width for queries, keys and values; SAGAN's queries and keys are
narrower (C/8) than its values (C/2). Zero columns appended to q and k leave every score
q.k unchanged, so q and k are padded to the value width: the score GEMM then does Dv/D times its
work (4x at C/8 vs C/2), against an eager path that writes, reads and differentiates the whole
[N, M] matrix. Measured in bench/results/self_attention.jsonl.

The two ATen ops used (torch.ops.aten._scaled_dot_product_flash_attention_for_cpu and its
_backward) are what F.scaled_dot_product_attention dispatches to on CPU; they are called directly
because the public function neither returns the log-sum-exp nor exposes the backward on its own.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def _heads(q, k, v):
    """[B, 1, N, Dv]-shaped q, k (zero-padded to Dv) and v, each with unit stride along its last
    dim (the CPU flash kernel reads rows as contiguous vectors whatever the strides say: a
    transposed view gives wrong results, seen here)."""
    pad = v.shape[-1] - q.shape[-1]
    if pad > 0:
        q, k = F.pad(q, (0, pad)), F.pad(k, (0, pad))
    return tuple(t.contiguous().unsqueeze(1) for t in (q, k, v))


def attention_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float = 1.0):
    if q.shape[-1] > v.shape[-1]:  # wider queries than values: pad v instead, drop its extra columns
        vp = F.pad(v, (0, q.shape[-1] - v.shape[-1]))
        o, lse = attention_forward(q, k, vp, scale)
        return o[..., :v.shape[-1]].contiguous(), lse
    qh, kh, vh = _heads(q, k, v)
    o, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(qh, kh, vh, 0.0, False, scale=scale)
    return o.squeeze(1), lse.squeeze(1)


def attention_backward(do, q, k, v, o, lse, scale: float = 1.0):
    d, dv_width = q.shape[-1], v.shape[-1]
    if d > dv_width:
        pad = d - dv_width
        dq, dk, dvp = attention_backward(F.pad(do, (0, pad)), q, k, F.pad(v, (0, pad)), F.pad(o, (0, pad)), lse, scale)
        return dq, dk, dvp[..., :dv_width].contiguous()
    qh, kh, vh = _heads(q, k, v)
    dq, dk, dv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
        do.contiguous().unsqueeze(1), qh, kh, vh, o.contiguous().unsqueeze(1), lse.unsqueeze(1), 0.0, False,
        scale=scale)
    return dq.squeeze(1)[..., :d].contiguous(), dk.squeeze(1)[..., :d].contiguous(), dv.squeeze(1)
