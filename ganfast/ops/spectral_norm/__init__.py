"""Spectral normalization: the power iteration (a fused pass per iteration) and sigma's gradient.

Two pieces, each a torch custom op (register_fake; the second with register_autograd) so they run
inside torch.compile, with a plain call for eager mode:

  ganfast::power_iteration  updates u and v in place and returns sigma (no gradient: u and v are
                            state, exactly as in SNGAN and torch's spectral_norm);
  ganfast::sn_sigma         sigma as a differentiable function of W with u, v held constant:
                            d sigma_i / dW = u_i v_i^T. Its backward is torch ops linear in the
                            incoming gradient, so gradients of any order flow (R1 through a
                            spectrally normalized D differentiates through it twice).

Nothing here writes W / sigma: ganfast.nn's SN layers apply 1 / sigma to the layer's output.
"""
from __future__ import annotations

from typing import Optional

import torch

from ganfast import _ext, backends
from ganfast.ops._layout import is_eager
from ganfast.ops.spectral_norm import reference
from ganfast.ops.spectral_norm.reference import acc_dtype, power_iteration_ref, sigma_grad

__all__ = ["power_iteration", "spectral_sigma", "sigma_estimate", "power_iteration_ref"]

OP = "spectral_norm"
backends.register_op(OP, backends.FUSED_OP_DTYPES,
                     grad_orders={"reference": None, "cpu": None, "triton": None, "cuda": None})


def _impl(name: str):
    """The module implementing the kernel contract (reference.matvec_t / matvec_gram) on `name`."""
    return reference if name == "reference" else backends.kernel_module(OP, name)


def _iterate(w_mat, u, v, n_iters, eps, u_first, backend):
    """(sigma [k], u [k, O], v [k, K]) as new tensors; u, v given as [k, .] views."""
    # fp32 state even under autocast (torch's spectral norm uses mv, which autocast leaves alone)
    with torch.no_grad(), torch.autocast(w_mat.device.type, enabled=False):
        return reference.power_iteration_step(_impl(backend), w_mat.detach(), u.detach().contiguous(),
                                              v.detach().contiguous(), n_iters, eps, u_first)


@torch.library.custom_op("ganfast::power_iteration", mutates_args=("u", "v"))
def _power_iteration_op(w_mat: torch.Tensor, u: torch.Tensor, v: torch.Tensor, n_iters: int, eps: float,
                        u_first: bool, backend: str) -> torch.Tensor:
    k = u.shape[0]
    sigma, un, vn = _iterate(w_mat, u, v, n_iters, eps, u_first, backend)
    u.copy_(un.view(k, -1))
    v.copy_(vn.view(k, -1))
    return sigma


@_power_iteration_op.register_fake
def _(w_mat, u, v, n_iters, eps, u_first, backend):
    return u.new_empty(u.shape[0])


@torch.library.custom_op("ganfast::sn_sigma", mutates_args=())
def _sn_sigma_op(w_mat: torch.Tensor, u: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return sigma.clone()


@_sn_sigma_op.register_fake
def _(w_mat, u, v, sigma):
    return torch.empty_like(sigma)


def _sigma_setup(ctx, inputs, output):
    w_mat, u, v, _ = inputs
    ctx.save_for_backward(u, v)
    ctx.w_dtype = w_mat.dtype


def _sigma_backward(ctx, g):
    u, v = ctx.saved_tensors
    return sigma_grad(g, u, v).to(ctx.w_dtype), None, None, None


_sn_sigma_op.register_autograd(_sigma_backward, setup_context=_sigma_setup)


class _SigmaFn(torch.autograd.Function):
    """ganfast::sn_sigma for eager calls (the torch.library wrapper costs ~50 us a call)."""

    @staticmethod
    def forward(ctx, w_mat, u, v, sigma):
        _sigma_setup(ctx, (w_mat, u, v, sigma), None)
        return sigma.clone()

    @staticmethod
    def backward(ctx, g):
        return _sigma_backward(ctx, g)


def _vectors(w_mat: torch.Tensor, u: torch.Tensor, v: torch.Tensor, who: str) -> int:
    """Checks w_mat [O, K], u [O] or [k, O], v [K] or [k, K] (acc dtype, w's device); returns k."""
    if not isinstance(w_mat, torch.Tensor) or w_mat.ndim != 2:
        got = f"shape {list(w_mat.shape)}" if isinstance(w_mat, torch.Tensor) else type(w_mat).__name__
        raise ValueError(f"{who}: w_mat must be a 2-D [out, in] matrix (the weight reshaped to [out, -1]), got {got}")
    o, kk = w_mat.shape
    if not w_mat.is_floating_point():
        raise ValueError(f"{who}: w_mat must be a floating tensor, got {w_mat.dtype}")
    acc = acc_dtype(w_mat)
    for name, t, n in (("u", u, o), ("v", v, kk)):
        if not isinstance(t, torch.Tensor) or t.ndim not in (1, 2) or t.shape[-1] != n:
            got = f"shape {list(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"{who}: {name} must be [{n}] or [num_svs, {n}] for w_mat of shape {list(w_mat.shape)}, got {got}")
        if t.dtype != acc:
            raise ValueError(f"{who}: {name} must be {str(acc).replace('torch.', '')} (power iteration state is "
                             f"fp32, fp64 for a fp64 weight), got {str(t.dtype).replace('torch.', '')}")
        if t.device != w_mat.device:
            raise ValueError(f"{who}: {name} must be on w_mat's device {w_mat.device}, got {t.device}")
    if u.ndim != v.ndim or (u.ndim == 2 and u.shape[0] != v.shape[0]):
        raise ValueError(f"{who}: u and v must hold the same number of vectors, got shapes {list(u.shape)} and {list(v.shape)}")
    if u.ndim == 2 and u.shape[0] == 0:
        raise ValueError(f"{who}: u and v must hold at least one vector (num_svs >= 1), got shapes "
                         f"{list(u.shape)} and {list(v.shape)}")
    return 1 if u.ndim == 1 else u.shape[0]


def power_iteration(w_mat: torch.Tensor, u: torch.Tensor, v: torch.Tensor, n_iters: int = 1, eps: float = 1e-12,
                    u_first: bool = False, backend: Optional[str] = None) -> torch.Tensor:
    """Power iteration for the largest singular value(s) of W; updates u and v in place.

    Args:
        w_mat: [O, K] the weight viewed as a matrix (``weight.flatten(1)``: no copy for a
            contiguous weight); fp16/bf16/fp32 (fp64 on cpu/reference).
        u: [O] or [num_svs, O] left vector(s), float32 (float64 for a float64 w_mat); updated in place.
        v: [K] or [num_svs, K] right vector(s), same dtype; updated in place.
        n_iters: iterations (>= 1). Each reads W once (num_svs = 1; v-first adds one pass for its
            first W^T u); with num_svs > 1, twice (Gram-Schmidt sits between the products).
        eps: normalize(x) = x / max(||x||, eps).
        u_first: False: v = normalize(W^T u), u = normalize(W v) (SNGAN, BigGAN); True:
            u = normalize(W v), v = normalize(W^T u) (torch.nn.utils.parametrizations.spectral_norm).
        backend: None (automatic), 'reference', 'cpu', 'triton' or 'cuda'.

    Returns: sigma = u^T W v, [] (or [num_svs]) in u's dtype, without gradient (see spectral_sigma).
    """
    k = _vectors(w_mat, u, v, "ganfast.ops.power_iteration")
    if isinstance(n_iters, bool) or not isinstance(n_iters, int) or n_iters < 1:
        raise ValueError(f"ganfast.ops.power_iteration: n_iters must be an int >= 1, got {n_iters!r}")
    if not eps > 0:
        raise ValueError(f"ganfast.ops.power_iteration: eps must be > 0, got {eps!r}")
    name = backends.select(OP, (w_mat,), backend)
    w = w_mat.detach()
    w = w if w.is_contiguous() else w.contiguous()
    u2, v2 = u.view(k, -1), v.view(k, -1)
    if k == 1 and name in backends.EXTENSION_BACKENDS and is_eager(w, u, v):
        # one extension call: the same passes and vector ops as _iterate, u and v updated in place
        sigma = _ext.extension(name).sn_power_iteration(w, u2, v2, n_iters, float(eps), bool(u_first))
    elif is_eager(w, u, v):
        sigma, un, vn = _iterate(w, u2, v2, n_iters, float(eps), bool(u_first), name)
        with torch.no_grad():
            u2.copy_(un)
            v2.copy_(vn)
    else:
        sigma = torch.ops.ganfast.power_iteration(w, u2, v2, n_iters, float(eps), bool(u_first), name)
    return sigma if u.ndim == 2 else sigma[0]


def sigma_estimate(w_mat: torch.Tensor, u: torch.Tensor, v: torch.Tensor, backend: Optional[str] = None) -> torch.Tensor:
    """u^T W v for the stored vectors, without updating them (eval mode): one pass over W.

    Shapes as power_iteration; returns [] or [num_svs] without gradient."""
    k = _vectors(w_mat, u, v, "ganfast.ops.sigma_estimate")
    name = backends.select(OP, (w_mat,), backend)
    w = w_mat.detach()
    with torch.no_grad(), torch.autocast(w.device.type, enabled=False):
        t, _ = _impl(name).matvec_gram(w if w.is_contiguous() else w.contiguous(), v.detach().reshape(k, -1).contiguous(), False)
        sigma = (t * u.detach().reshape(k, -1)).sum(dim=1)
    return sigma if u.ndim == 2 else sigma[0]


def spectral_sigma(w_mat: torch.Tensor, u: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """sigma (from power_iteration or sigma_estimate) as a differentiable function of w_mat.

    The value is `sigma`; its gradient is d sigma_i / dW = u_i v_i^T (u, v constant), the
    gradient of u^T W v, without reading W again. w_mat [O, K] (any view of the weight that
    autograd can map back), u [O] / [k, O], v [K] / [k, K] (as power_iteration's), sigma [] / [k]. Pass copies of u and v
    if they will be updated in place before the backward runs. Differentiable to any order.
    """
    k = _vectors(w_mat, u, v, "ganfast.ops.spectral_sigma")
    if not isinstance(sigma, torch.Tensor) or sigma.numel() != k or sigma.device != w_mat.device:
        got = f"shape {list(sigma.shape)} on {sigma.device}" if isinstance(sigma, torch.Tensor) else type(sigma).__name__
        raise ValueError(f"ganfast.ops.spectral_sigma: sigma must hold {k} value(s), one per vector of u (shape [] or "
                         f"[{k}]), on w_mat's device {w_mat.device}, got {got}")
    return spectral_sigma_checked(w_mat, u, v, sigma)


def spectral_sigma_checked(w_mat: torch.Tensor, u: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """spectral_sigma for arguments already checked: u, v, sigma as power_iteration /
    sigma_estimate just took and returned them for this w_mat (ganfast.nn.SpectralNorm's every
    forward, which should not pay for the same checks twice)."""
    k = 1 if u.ndim == 1 else u.shape[0]
    u2, v2 = u.detach().reshape(k, w_mat.shape[0]), v.detach().reshape(k, w_mat.shape[1])
    s = sigma.detach().reshape(k)
    if is_eager(w_mat, u, v, sigma):
        out = _SigmaFn.apply(w_mat, u2, v2, s)
    else:
        out = torch.ops.ganfast.sn_sigma(w_mat, u2, v2, s)
    return out.reshape(sigma.shape)
