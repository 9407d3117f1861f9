"""Spectral normalization's power iteration in plain PyTorch: the specification and the fallback.

W is a weight viewed as a matrix [O, K] (out features by everything else; a conv weight
[Cout, Cin, kh, kw] flattened without a copy). With num_svs = k singular directions held as the
rows of u [k, O] and v [k, K] (k = 1: plain vectors [O], [K]), one iteration is, in SNGAN's and
BigGAN's order ("v first", the default):

    v_i = normalize(GS(W^T u_i; v_0 .. v_{i-1}))      (20) of SNGAN's Algorithm 1
    u_i = normalize(GS(W v_i;   u_0 .. u_{i-1}))      (21)
    sigma_i = u_i^T W v_i                              (22)

and in torch.nn.utils.parametrizations.spectral_norm's order ("u first", u_first=True):

    u_i = normalize(GS(W v_i; u_0 .. u_{i-1})),  v_i = normalize(GS(W^T u_i; v_0 .. v_{i-1})),
    sigma_i = u_i^T W v_i

GS(x; y_0 ..) subtracts x's projections on the y_j (Gram-Schmidt, BigGAN's num_svs > 1);
normalize(x) = x / max(||x||, eps), as F.normalize. Everything is in float32 (float64 for a
float64 W) whatever W's dtype: u, v and sigma are fp32 state even for fp16/bf16 weights.

No extra pass over W is needed for sigma: with u_i = t / max(||t||, eps) for t = W v_i (GS is the
identity for i = 0), sigma_0 = ||t||^2 / max(||t||, eps); in the u-first order likewise with
s = W^T u_i. For k = 1, one pass over W gives both t = W v and W^T t (each row of W is used twice
while it is in cache or registers: t_r = W_r . v, then s += t_r W_r), so an iteration reads W
once: u-first costs n passes for n iterations, v-first n + 1 (its first W^T u). For k > 1 the
Gram-Schmidt between the two products needs them in two passes.

The kernels (cpu.py, triton.py, cuda.py) implement the two passes below (`matvec_t`,
`matvec_gram`); the iteration itself (normalize, GS, sigma: O(k^2 (O + K)) work on vectors) is
common Python in __init__.py and uses these same functions on every backend.
"""
from __future__ import annotations

from typing import Optional

import torch


def acc_dtype(w: torch.Tensor) -> torch.dtype:
    """The dtype of u, v, sigma and every accumulation: float64 for a float64 W, else float32."""
    return torch.float64 if w.dtype == torch.float64 else torch.float32


def normalize(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Rows of x [k, D] divided by max(||row||, eps) (F.normalize(x, dim=-1, eps=eps))."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)


def gram_schmidt_rows(x: torch.Tensor, eps: float, ortho: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Rows of x [k, D] made orthonormal in order: row i minus its projections on the (already
    orthonormalized) rows 0 .. i-1, then normalized. Row 0 is only normalized."""
    rows = []
    for i in range(x.shape[0]):
        r = x[i]
        for q in rows:
            r = r - torch.dot(r, q) / torch.dot(q, q) * q
        rows.append(r / r.norm().clamp_min(eps))
    return torch.stack(rows)


# ---- the kernel contract: two passes over W ----

def matvec_t(w: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """s = u W: s[j, c] = sum_r u[j, r] * w[r, c].

    w: [O, K] contiguous, fp16/bf16/fp32 (fp64 on cpu); u: [k, O] contiguous in acc_dtype(w).
    Returns a new [k, K] tensor in acc_dtype(w), accumulated in it. Reads w once.
    """
    return u @ w.to(u.dtype)


def matvec_gram(w: torch.Tensor, v: torch.Tensor, gram: bool) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """t = v W^T (t[j, r] = sum_c v[j, c] * w[r, c]) and, when gram, s = t W (= v W^T W).

    w: [O, K] contiguous, fp16/bf16/fp32 (fp64 on cpu); v: [k, K] contiguous in acc_dtype(w).
    Returns new tensors t [k, O] and s [k, K] (None when not gram) in acc_dtype(w), accumulated
    in it. Reads w once: the fused kernels use each row block for t and then for s while it is
    still on chip (s is a sum over rows: per-block partials, then a reduction).
    """
    wa = w.to(v.dtype)
    t = v @ wa.t()
    return t, (t @ wa if gram else None)


# ---- the iteration, on any backend's passes ----

def power_iteration_step(kernel, w_mat: torch.Tensor, u: torch.Tensor, v: torch.Tensor, n_iters: int,
                         eps: float, u_first: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """n_iters power iterations (see the module docstring) with `kernel`'s matvec_t / matvec_gram.

    w_mat [O, K] contiguous; u [k, O], v [k, K] in acc_dtype(w_mat). Returns (sigma [k], u, v):
    new tensors, the inputs are not modified. The number of passes over W is n_iters when
    u_first and k == 1, n_iters + 1 when v-first and k == 1, 2 * n_iters when k > 1.
    """
    k = u.shape[0]
    if k == 1:
        return _power_iteration_single(kernel, w_mat, u, v, n_iters, eps, u_first)
    for _ in range(n_iters):
        if u_first:
            t, _ = kernel.matvec_gram(w_mat, v, False)
            u = gram_schmidt_rows(t, eps)
            s = kernel.matvec_t(w_mat, u)
            v = gram_schmidt_rows(s, eps)
            sigma = (s * v).sum(dim=1)
        else:
            s = kernel.matvec_t(w_mat, u)
            v = gram_schmidt_rows(s, eps)
            t, _ = kernel.matvec_gram(w_mat, v, False)
            u = gram_schmidt_rows(t, eps)
            sigma = (t * u).sum(dim=1)
    return sigma, u, v


def _power_iteration_single(kernel, w_mat, u, v, n_iters, eps, u_first):
    if u_first:
        for _ in range(n_iters):
            t, s = kernel.matvec_gram(w_mat, v, True)
            tn = t.norm(dim=1, keepdim=True).clamp_min(eps)
            u = t / tn
            s = s / tn                       # W^T u, as the definition computes it
            sn = s.norm(dim=1, keepdim=True)
            v = s / sn.clamp_min(eps)
            sigma = (sn * sn / sn.clamp_min(eps)).squeeze(1)   # u^T W v = s . v
        return sigma, u, v
    s = kernel.matvec_t(w_mat, u)             # W^T u
    for i in range(n_iters):
        v = normalize(s, eps)
        t, s = kernel.matvec_gram(w_mat, v, i + 1 < n_iters)
        tn = t.norm(dim=1, keepdim=True)
        u = t / tn.clamp_min(eps)
        if s is not None:
            s = s / tn.clamp_min(eps)         # W^T t / max(||t||, eps) = W^T u
    sigma = (tn * tn / tn.clamp_min(eps)).squeeze(1)           # u^T W v = t . u
    return sigma, u, v


def power_iteration_ref(w_mat: torch.Tensor, u: torch.Tensor, v: torch.Tensor, n_iters: int = 1,
                        eps: float = 1e-12, u_first: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The definition, step by step in acc_dtype(w_mat): (sigma [k], u [k, O], v [k, K]).

    u [k, O] and v [k, K] (k = num_svs); nothing is fused, sigma is u^T W v computed as written.
    """
    w = w_mat.to(acc_dtype(w_mat))
    u = u.to(w.dtype)
    v = v.to(w.dtype)
    for _ in range(n_iters):
        if u_first:
            u = gram_schmidt_rows(v @ w.t(), eps)
            v = gram_schmidt_rows(u @ w, eps)
        else:
            v = gram_schmidt_rows(u @ w, eps)
            u = gram_schmidt_rows(v @ w.t(), eps)
    sigma = ((u @ w) * v).sum(dim=1)
    return sigma, u, v


def sigma_grad(g: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """d(sum_i g_i sigma_i) / dW with u and v held constant: sum_i g_i u_i v_i^T, [O, K].

    Differentiable in g (linear), independent of W: the second derivative of sigma in W is zero
    in this formulation, exactly as in the standard one (u, v are buffers there too).
    """
    return (u * g.to(u.dtype).unsqueeze(1)).t() @ v
