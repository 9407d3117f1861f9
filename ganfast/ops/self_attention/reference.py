"""SAGAN / BigGAN self-attention in plain PyTorch: the specification and the fallback.

x [B, C, H, W]; weights as 1x1 convolution weights (or 2-D [out, in]):
w_theta, w_phi [Cq, C] (Cq = C/8 in SAGAN/BigGAN), w_g [Cv, C] (Cv = C/2), w_o [C, Cv];
gamma a 0-dim tensor (initialized to 0 by the module). With N = H*W queries and, after a
`pool` x `pool` max-pool of the key and value maps (floor, as F.max_pool2d), M = (H//pool)*(W//pool)
keys:

    theta = w_theta x                       [B, Cq, N]   queries
    phi   = maxpool(w_phi x)                [B, Cq, M]   keys
    g     = maxpool(w_g x)                  [B, Cv, M]   values
    beta  = softmax over keys of theta^T phi [B, N, M]   (no 1/sqrt(Cq) scale: SAGAN's formula)
    o     = w_o (g beta^T)                  [B, C, N]
    y     = x + gamma * o

The attention core, on [B, N, Cq] queries, [B, M, Cq] keys and [B, M, Cv] values, is
`attention_ref` (the contract of the fast kernels, with its log-sum-exp). Queries and keys have a
different width from values, which is why flash-attention's kernels (one head width) do not apply.

Everything here is differentiable to any order. The eager form materializes beta: B*N*M floats
(at 64x64 and batch 32: 32 * 4096 * 1024 * 4 B = 512 MiB in fp32).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def as_matrix(w: torch.Tensor, name: str) -> torch.Tensor:
    """A 1x1 convolution weight [out, in, 1, 1] or a matrix [out, in] as [out, in]."""
    if w.dim() == 4:
        if w.shape[2:] != (1, 1):
            raise ValueError(f"{name} must be a 1x1 convolution weight [out, in, 1, 1] or a matrix [out, in], "
                             f"got shape {tuple(w.shape)}")
        return w.flatten(1)
    if w.dim() != 2:
        raise ValueError(f"{name} must be a 1x1 convolution weight [out, in, 1, 1] or a matrix [out, in], "
                         f"got shape {tuple(w.shape)}")
    return w


def project(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """1x1 convolution of x [B, C, H, W] by w [O, C]: [B, O, H, W] (F.conv2d: oneDNN / cuDNN read
    x in place, where an einsum first permutes it into a GEMM operand)."""
    return F.conv2d(x, w[:, :, None, None])


def queries_keys_values(x, w_theta, w_phi, w_g, pool: int):
    """(q [B, N, Cq], k [B, M, Cq], v [B, M, Cv]) of x [B, C, H, W], as views of [B, *, N] maps."""
    theta = project(x, w_theta)
    phi, g = project(x, w_phi), project(x, w_g)
    if pool > 1:
        phi, g = F.max_pool2d(phi, pool), F.max_pool2d(g, pool)
    return theta.flatten(2).transpose(1, 2), phi.flatten(2).transpose(1, 2), g.flatten(2).transpose(1, 2)


def attention_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float = 1.0,
                  return_lse: bool = False):
    """softmax(scale * q k^T) v: q [B, N, D], k [B, M, D], v [B, M, Dv] -> o [B, N, Dv], and the
    log-sum-exp lse [B, N] of the scaled scores (natural log) when return_lse. Computed in q's
    dtype as written (the kernels accumulate in fp32; the oracle is this in float64)."""
    s = torch.matmul(q, k.transpose(1, 2)) * scale            # [B, N, M]
    o = torch.matmul(torch.softmax(s, dim=-1), v)
    if return_lse:
        return o, torch.logsumexp(s, dim=-1)
    return o


def attention_backward_ref(do, q, k, v, scale: float = 1.0):
    """(dq, dk, dv) of attention_ref for the incoming gradient do [B, N, Dv], written out (the
    formulas a flash backward recomputes: P = softmax(S), dV = P^T dO, dP = dO V^T,
    dS = P * (dP - rowsum(P * dP)), dQ = scale dS K, dK = scale dS^T Q). Differentiable.

    rowsum(P * dP) equals rowsum(dO * O) (a flash backward's delta); it is the form autograd's
    softmax backward takes, whose rows of dS sum to 0 up to their own rounding (one key: dS = 0
    exactly, as the scores then have no gradient); from O they differ by a rounding of dO . V."""
    s = torch.matmul(q, k.transpose(1, 2)) * scale
    p = torch.softmax(s, dim=-1)
    dv = torch.matmul(p.transpose(1, 2), do)
    dp = torch.matmul(do, v.transpose(1, 2))
    ds = p * (dp - (p * dp).sum(-1, keepdim=True))
    return torch.matmul(ds, k) * scale, torch.matmul(ds.transpose(1, 2), q) * scale, dv


def self_attention2d_ref(x: torch.Tensor, w_theta: torch.Tensor, w_phi: torch.Tensor, w_g: torch.Tensor,
                         w_o: torch.Tensor, gamma: torch.Tensor, pool: int = 2) -> torch.Tensor:
    """y = x + gamma * w_o (g softmax(theta^T phi)^T), shapes as in the module docstring."""
    b, c, h, w = x.shape
    wt, wp, wg, wo = (as_matrix(t, n) for t, n in ((w_theta, "w_theta"), (w_phi, "w_phi"), (w_g, "w_g"), (w_o, "w_o")))
    q, k, v = queries_keys_values(x, wt, wp, wg, pool)
    o = attention_ref(q, k, v)                                 # [B, N, Cv]
    # gamma folded into the small w_o (as BigGAN's gamma * conv(o, w_o), one [B, C, H, W] pass fewer)
    # Cv spelled out: a -1 cannot be inferred from an empty batch (B = 0)
    return x + project(o.transpose(1, 2).reshape(b, wo.shape[1], h, w), (wo * gamma).reshape(wo.shape))


# ---- the kernel contract (cpu.py and triton.py implement the same two functions) ----

def attention_forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float = 1.0):
    """(o [B, N, Dv] in q's dtype, lse [B, N] fp32; fp64 for fp64 q)."""
    o, lse = attention_ref(q, k, v, scale, return_lse=True)
    return o, lse.to(torch.float64 if q.dtype == torch.float64 else torch.float32)


def attention_backward(do, q, k, v, o, lse, scale: float = 1.0):
    """(dq, dk, dv) in the dtypes of q, k, v (o and lse are what a flash kernel recomputes from;
    the reference recomputes everything)."""
    return attention_backward_ref(do, q, k, v, scale)
