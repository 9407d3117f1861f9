"""The attention core on CPU tensors. Forward: PyTorch's own flash-attention CPU kernel (blocked,
online softmax, OpenMP; it never writes the [N, M] matrix). Backward: a blocked backward written
here with torch ops, which recomputes P = softmax(S) exactly, row by row (attention_backward).

Forward. The kernel wants one head width for queries, keys and values; SAGAN's queries and keys
are narrower (C/8) than its values (C/2). Zero columns appended to q and k leave every score
q.k unchanged, so q and k are padded to the value width: the score GEMM then does Dv/D times its
work (4x at C/8 vs C/2), against an eager path that writes, reads and differentiates the whole
[N, M] matrix. Measured in bench/results/self_attention.jsonl. self_attention2d pads without a
copy: it gives q, k and v one width already (zero rows in its projection weight; see _ROWS in
__init__.py), so for it the functions here only add and drop the head dimension.
The kernel reads each row of q, k, v and o as a contiguous vector whatever the strides say: a
transposed view (last-dim stride != 1) gives wrong results, seen here. Rows spaced apart (a row
stride larger than the width, as in column slices of a wider matrix) it reads correctly, so only
operands whose last dim is strided are copied (tests/ops/test_self_attention.py,
test_cpu_core_strided_rows). The ATen op (torch.ops.aten._scaled_dot_product_flash_attention_for_cpu)
is what F.scaled_dot_product_attention dispatches to on CPU, called directly for its log-sum-exp.

Backward, and why not the kernel's own (its _backward op, used until issue 26): that rebuilds P
as exp(s - lse) from the forward's fp32 log-sum-exp, whose rounding (an ulp of |lse|, ~1e-5 at
|s| ~ 100) is a relative error of every P that the reference's softmax normalizes away. The fuzz
tests found the block's first-order gradients over the accuracy rule (fast error <= 2x the
reference-in-dtype error + floor) on every dtype: in 300 drawn cases each, fp32 dw_theta up to
15x the budget, fp16 / bf16 dw_theta, dw_phi up to 2.4x; the core alone, dv 7x at |s| ~ 100 in fp32.
Here each block of query rows holds whole rows of S ([rows, M], about _BLOCK elements), so P is
exact per row: subtract the row max, exp, divide by the row sum (torch's softmax, as in the
reference), and dV += P^T dO, dP = dO V^T, dS = P * dP - P rowsum(P * dP), dQ = scale dS K,
dK += scale dS^T Q. rowsum(P * dP) equals the formulas' rowsum(dO * O) and is what the
reference's softmax backward computes (with one key it gives dS = 0 exactly); the forward's o,
rounded to fp16 / bf16, is not read. fp16 / bf16 inputs are upcast once and everything runs in
fp32; fp32 / fp64 in their own dtype. Now the core's gradients are within the rule on the tests'
cases (at most 0.35 of the budget in fp32, 0.14 in fp16 / bf16; tests/ops/test_self_attention.py),
and the fuzz tests' long profile passes cpu fp16 and bf16 (1,200 cases each) and fails fp32 in 1
of 900 cases (a second-order gradient; the same with the core in float64), where the flash
backward failed fp32 in 21 of 600.

Cost: the same five GEMMs as the flash backward, in fp32, with four passes over each block of
scores (softmax, P * dP, its row sums, dS). SAGAN 64x64 (B 4, N 4096, M 1024;
bench/self_attention_cpu_backward.py, rows in bench/results/self_attention_cpu_backward.jsonl;
the 2-core machine was shared with other jobs, load 2-3.7), speed relative to the flash backward:
1 thread, fp32 0.76-0.82x with D = Dv = 128 (the padded widths the forward kernel needs) and
1.25-1.27x with D = 32, Dv = 128 (attention()'s own widths, and since issue 26 the block's: its
backward passes q and k at Cq; this backward pads nothing); bf16 0.35-0.38x and
0.50-0.67x (the kernel's bf16 GEMMs, on a CPU with AMX, against fp32 ones here: the price of the
accuracy). 2 threads with the other core busy: 0.1-0.6x, and slower than 1 thread (each block's
nine ops are parallel regions of their own, each waiting for the busy core; the kernel has one);
fp32 D = Dv = 128 0.75x in an unrecorded run at load ~1.3.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
# elements of one block of scores in the backward ([rows, M]; fp32: 4 MiB, two such buffers); see
# attention_backward. At SAGAN 64x64 blocks of 2^18 were 1.1-1.3x slower, of 2^16 up to 2.5x
# (bench/self_attention_cpu_backward.py --blocks)
_BLOCK = 1 << 20

_flash_forward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default


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
    """heads_forward's backward: do, o [B, 1, N, Dv], q [B, 1, N, D], k [B, 1, M, D], v [B, 1, M, Dv],
    lse [B, 1, N] (o and lse unused: see attention_backward) -> (dq, dk, dv) as contiguous
    [B, 1, rows, width] in q's dtype."""
    dq, dk, dv = attention_backward(do.squeeze(1), q.squeeze(1), k.squeeze(1), v.squeeze(1), None, None, scale)
    return dq.unsqueeze(1), dk.unsqueeze(1), dv.unsqueeze(1)


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
    """attention_backward_ref(do, q, k, v, scale): do [B, N, Dv], q [B, N, D], k [B, M, D],
    v [B, M, Dv], any strides and widths (M >= 1) -> (dq, dk, dv), contiguous, in q's dtype.

    The forward's o [B, N, Dv] and lse [B, N] are not read: P is recomputed exactly per row (see
    the module docstring), and rowsum(dO * O) is taken as rowsum(P * dP) from the same P (equal
    in exact arithmetic; in fp16 / bf16 the saved O is rounded to the input dtype, P * dP is not)."""
    dtype = q.dtype
    acc = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    if acc != dtype:  # upcast once: every product and sum below in fp32
        do, q, k, v = do.to(acc), q.to(acc), k.to(acc), v.to(acc)
    b, n, d = q.shape
    m, d_v = k.shape[1], v.shape[2]
    dq = q.new_empty(b, n, d)
    dk = q.new_zeros(b, m, d)
    dv = q.new_zeros(b, m, d_v)
    if b and n:
        # rows x M score blocks of about _BLOCK elements (several batch elements at once when a
        # whole batch element's [N, M] is smaller). Every slice written with out= is contiguous:
        # blocks of fewer than N rows come one batch element at a time. beta=0 ignores what the
        # reused buffers held (a NaN of an earlier block included).
        rows = max(1, min(n, _BLOCK // m))
        group = max(1, min(b, _BLOCK // (rows * m)))
        s_buf = q.new_empty(group, rows, m)     # S, then dP, then dS
        p_buf = q.new_empty(group, rows, m)     # P
        for b0 in range(0, b, group):
            bs = slice(b0, b0 + group)
            k_b, v_b, dk_b, dv_b = k[bs], v[bs], dk[bs], dv[bs]
            for i in range(0, n, rows):
                q_i, do_i = q[bs, i:i + rows], do[bs, i:i + rows]
                g, r = q_i.shape[0], q_i.shape[1]
                s, p = s_buf[:g, :r], p_buf[:g, :r]
                torch.baddbmm(s, q_i, k_b.mT, beta=0.0, alpha=scale, out=s)       # S = scale q k^T
                torch.ops.aten._softmax.out(s, -1, False, out=p)                   # P = softmax(S), whole rows
                dv_b.baddbmm_(p.mT, do_i)                                         # dV += P^T dO
                torch.bmm(do_i, v_b.mT, out=s)                                    # dP = dO V^T
                e = s.mul_(p)                                                     # E = P * dP
                ds = e.addcmul_(p, e.sum(-1, keepdim=True), value=-1.0)           # dS = E - P rowsum(E)
                dq_i = dq[bs, i:i + r]
                torch.baddbmm(dq_i, ds, k_b, beta=0.0, alpha=scale, out=dq_i)     # dQ = scale dS K
                dk_b.baddbmm_(ds.mT, q_i, alpha=scale)                            # dK += scale dS^T Q
    return dq.to(dtype), dk.to(dtype), dv.to(dtype)
