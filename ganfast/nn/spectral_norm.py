"""Spectral normalization with sigma folded into the layer's output (W / sigma is never written).

`spectral_norm(module)` is a drop-in for torch.nn.utils.parametrizations.spectral_norm: the same
parametrization structure and state-dict entries (parametrizations.<name>.original, ._u, ._v), so
checkpoints move both ways; u and v updated only in training mode, the stored ones used in eval;
the same initialization (random u and v from torch's RNG, normalized, 15 power iterations), so
the same seed gives the same u, v and outputs. What differs is the cost:

  - the power iteration is ganfast.ops.power_iteration: one pass over W per iteration, sigma
    from the same pass (torch reads W twice per iteration and once more for sigma);
  - for Linear, Conv1d/2d/3d, ConvTranspose1d/2d/3d and Embedding (the weight parametrized, the
    stock forward), the layer runs on the raw weight and scales its output by 1 / sigma before
    the bias (one fused multiply-add), instead of materializing W / sigma (a read and a write of
    W, and two more passes over W in the backward). The gradient is the standard one: sigma's
    gradient is u v^T with u, v held constant (ganfast.ops.spectral_sigma).

Reading `module.weight` still gives W / sigma (computed on demand), as with torch's version.
BigGAN's options are here too: num_svs singular values (Gram-Schmidt), n_power_iterations, and
the last sigma estimate(s) for logging (`sigma_of(module)`, `SNConv2d.sigma`).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from ganfast.ops.spectral_norm import power_iteration, sigma_estimate, spectral_sigma_checked
from ganfast.ops.spectral_norm.reference import acc_dtype

__all__ = ["SpectralNorm", "spectral_norm", "remove_spectral_norm", "sigma_of", "SNLinear", "SNConv2d",
           "SNEmbedding", "SNConvTranspose2d"]

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_FOLDABLE = (nn.Linear,) + _CONV + _CONV_T + (nn.Embedding,)


class SpectralNorm(nn.Module):
    """The parametrization: W -> W / sigma(W), sigma from a power iteration on W reshaped to
    [W.shape[dim], -1]. Buffers _u [O] and _v [K] ([num_svs, O], [num_svs, K] when num_svs > 1),
    float32 state (float64 for a float64 weight); _sigma [num_svs] (not saved): the last estimate.

    u_first=True is torch's order (u = normalize(W v) first); False is SNGAN's / BigGAN's.
    """

    def __init__(self, weight: torch.Tensor, n_power_iterations: int = 1, dim: int = 0, eps: float = 1e-12,
                 num_svs: int = 1, u_first: bool = True, backend: Optional[str] = None):
        super().__init__()
        ndim = weight.ndim
        if dim >= ndim or dim < -ndim:
            raise IndexError(f"spectral_norm: dim must be in [{-ndim}, {ndim - 1}] for a weight of shape "
                             f"{list(weight.shape)}, got {dim}")
        if isinstance(n_power_iterations, bool) or not isinstance(n_power_iterations, int) or n_power_iterations <= 0:
            raise ValueError(f"spectral_norm: n_power_iterations must be a positive int, got {n_power_iterations!r}")
        if isinstance(num_svs, bool) or not isinstance(num_svs, int) or num_svs <= 0:
            raise ValueError(f"spectral_norm: num_svs must be a positive int, got {num_svs!r}")
        if not eps > 0:
            raise ValueError(f"spectral_norm: eps must be > 0, got {eps!r}")
        self.dim = dim if dim >= 0 else dim + ndim
        self.eps = float(eps)
        self.n_power_iterations = n_power_iterations
        self.num_svs = num_svs
        self.u_first = bool(u_first)
        self.backend = backend
        if ndim > 1:
            w_mat = self._matrix(weight.detach())
            h, w = w_mat.shape
            if num_svs > min(h, w):
                raise ValueError(f"spectral_norm: num_svs ({num_svs}) must be at most min(out, in) = {min(h, w)} "
                                 f"for a weight of shape {list(weight.shape)}")
            lead = () if num_svs == 1 else (num_svs,)
            acc = acc_dtype(weight)
            # torch's initialization, draw for draw: u then v, N(0, 1), normalized
            u = w_mat.new_empty(lead + (h,)).normal_(0, 1).to(acc)
            v = w_mat.new_empty(lead + (w,)).normal_(0, 1).to(acc)
            self.register_buffer("_u", F.normalize(u, dim=-1, eps=self.eps))
            self.register_buffer("_v", F.normalize(v, dim=-1, eps=self.eps))
            self.register_buffer("_sigma", torch.ones(num_svs, dtype=acc, device=weight.device), persistent=False)
            self._power_method(w_mat, 15)

    def _matrix(self, weight: torch.Tensor) -> torch.Tensor:
        """[W.shape[dim], -1]: a view for dim = 0 and a contiguous weight (autograd maps it back)."""
        if self.dim != 0:
            weight = weight.permute(self.dim, *(d for d in range(weight.ndim) if d != self.dim))
        return weight.flatten(1)

    @torch.no_grad()
    def _power_method(self, w_mat: torch.Tensor, n_iters: int) -> None:
        sigma = power_iteration(w_mat.detach(), self._u, self._v, n_iters, self.eps, self.u_first, self.backend)
        self._sigma.copy_(sigma.reshape(-1))

    @torch.no_grad()
    def reconverge(self, weight: torch.Tensor, n_iters: int = 15) -> None:
        """Run n_iters power iterations on `weight` now, in any mode: after the weight was
        overwritten (re-initialized, loaded), so eval mode does not divide by a stale sigma."""
        if weight.ndim > 1:
            self._power_method(self._matrix(weight.detach()), n_iters)

    def sigmas(self, weight: torch.Tensor) -> torch.Tensor:
        """[num_svs] singular value estimates, differentiable in weight (d sigma_i / dW = u_i v_i^T).
        Training mode runs n_power_iterations (updating _u, _v); eval uses the stored vectors."""
        w_mat = self._matrix(weight)
        # power_iteration and sigma_estimate record no graph: no no_grad context needed (it costs
        # a few microseconds, on every layer and step)
        if self.training:
            sigma = power_iteration(w_mat.detach(), self._u, self._v, self.n_power_iterations, self.eps, self.u_first,
                                    self.backend).reshape(-1)
        else:
            sigma = sigma_estimate(w_mat.detach(), self._u, self._v, self.backend).reshape(-1)
        self._sigma.copy_(sigma)
        if not (torch.is_grad_enabled() and w_mat.requires_grad):
            return sigma      # a new tensor: nothing to differentiate, no copies of u and v needed
        # copies: the buffers move on at the next training call, maybe before this backward
        # (power_iteration / sigma_estimate have just checked u, v and w_mat)
        return spectral_sigma_checked(w_mat, self._u.clone(), self._v.clone(), sigma)

    def sigma(self, weight: torch.Tensor) -> torch.Tensor:
        """The largest singular value estimate (what W is divided by), [] and differentiable."""
        return self.sigmas(weight)[0]

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if weight.ndim == 1:
            return F.normalize(weight, dim=0, eps=self.eps)   # torch's rule for 1-D weights
        return weight / self.sigma(weight).to(weight.dtype)

    def right_inverse(self, value: torch.Tensor) -> torch.Tensor:
        return value

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, n_power_iterations={self.n_power_iterations}, num_svs={self.num_svs}, "
                f"eps={self.eps}, u_first={self.u_first}")


def _stock_type(module: nn.Module) -> Optional[type]:
    """The torch layer type whose stock forward `module` runs (None: not foldable)."""
    cls = type(module)
    base = cls.__mro__[1] if parametrize.is_parametrized(module) else cls
    for t in _FOLDABLE:
        if isinstance(module, t) and base.forward is t.forward:
            if t is nn.Embedding and module.max_norm is not None:
                return None    # max_norm renormalizes the weight in place: keep the materialized path
            return t
    return None


def _scale_bias(y: torch.Tensor, inv_sigma: torch.Tensor, bias: Optional[torch.Tensor], channel_dim: int) -> torch.Tensor:
    """y / sigma + bias in one pass (addcmul), bias broadcast along channel_dim, in y's dtype."""
    inv_sigma = inv_sigma.to(y.dtype)
    if bias is None:
        return y * inv_sigma
    # [C] for Linear, [C, 1, ..] (the spatial dims) for convolutions: broadcast from the right,
    # so unbatched inputs work too
    b = bias.to(y.dtype)
    if channel_dim != -1:
        b = b.reshape([-1] + [1] * (y.ndim - channel_dim - 1))
    return torch.addcmul(b, y, inv_sigma)


def _folded_forward(self, input, *args, **kwargs):
    """The stock forward of a Linear / Conv / ConvTranspose / Embedding with W / sigma folded into
    the output: layer(x; W) * (1 / sigma) + bias."""
    plist = self.parametrizations["weight"]
    w = plist.original
    inv_sigma = 1.0 / plist[0].sigma(w)
    if isinstance(self, nn.Embedding):
        y = F.embedding(input, w, self.padding_idx, None, self.norm_type, self.scale_grad_by_freq, self.sparse)
        return y * inv_sigma.to(y.dtype)
    if isinstance(self, nn.Linear):
        return _scale_bias(F.linear(input, w), inv_sigma, self.bias, -1)
    if isinstance(self, _CONV_T):
        nd = len(self.kernel_size)
        output_size = args[0] if args else kwargs.get("output_size")
        if self.padding_mode != "zeros":
            raise ValueError(f"Only 'zeros' padding mode is supported for {type(self).__name__}")
        output_padding = self._output_padding(input, output_size, self.stride, self.padding, self.kernel_size,
                                              nd, self.dilation)
        conv_t = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[nd - 1]
        y = conv_t(input, w, None, self.stride, self.padding, output_padding, self.groups, self.dilation)
        return _scale_bias(y, inv_sigma, self.bias, 1)
    return _scale_bias(self._conv_forward(input, w, None), inv_sigma, self.bias, 1)


def spectral_norm(module: nn.Module, name: str = "weight", n_power_iterations: int = 1, eps: float = 1e-12,
                  dim: Optional[int] = None, num_svs: int = 1, u_first: bool = True, fold: bool = True,
                  backend: Optional[str] = None) -> nn.Module:
    """Spectral normalization of `module`'s parameter `name`, in place; returns the module.

    Same signature, semantics and state-dict entries as torch.nn.utils.parametrizations.spectral_norm
    (dim defaults to 1 for ConvTranspose, else 0). Extras: num_svs (BigGAN: several singular
    values with Gram-Schmidt; W is divided by the first), u_first (False: SNGAN's/BigGAN's
    order), fold (False: always materialize W / sigma), backend (of the power iteration).
    """
    weight = getattr(module, name, None)
    if not isinstance(weight, torch.Tensor):
        raise ValueError(f"spectral_norm: module {type(module).__name__} has no parameter or buffer named {name!r}")
    if dim is None:
        dim = 1 if isinstance(module, _CONV_T) else 0
    sn = SpectralNorm(weight, n_power_iterations, dim, eps, num_svs, u_first, backend)
    fold_type = _stock_type(module) if (fold and name == "weight" and weight.ndim > 1) else None
    already = parametrize.is_parametrized(module, name)
    parametrize.register_parametrization(module, name, sn)
    if fold_type is not None and not already:
        # register_parametrization gave the module its own class; the folded forward goes there
        # (remove_parametrizations restores the original class, and with it the stock forward)
        type(module).forward = _folded_forward
    return module


def remove_spectral_norm(module: nn.Module, name: str = "weight") -> nn.Module:
    """Undo spectral_norm: the parameter becomes W / sigma (as torch's remove_parametrizations)."""
    parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return module


@torch.no_grad()
def reconverge_spectral_norms(module: nn.Module, n_iters: int = 15) -> nn.Module:
    """SpectralNorm.reconverge on every ganfast spectral-norm parametrization in `module` (e.g.
    after a custom weight initialization); returns module."""
    for m in module.modules():
        if not parametrize.is_parametrized(m):
            continue
        for name, plist in m.parametrizations.items():
            for p in plist:
                if isinstance(p, SpectralNorm):
                    p.reconverge(plist.original, n_iters)
    return module


def sigma_of(module: nn.Module, name: str = "weight") -> torch.Tensor:
    """The last sigma estimate(s) of a spectrally normalized module, [num_svs], for logging."""
    if not parametrize.is_parametrized(module, name):
        raise ValueError(f"sigma_of: {type(module).__name__}.{name} is not spectrally normalized")
    for p in module.parametrizations[name]:
        if isinstance(p, SpectralNorm):
            return p._sigma.detach().clone()
    raise ValueError(f"sigma_of: {type(module).__name__}.{name} has no ganfast SpectralNorm parametrization")


class _SNMixin:
    """BigGAN-style SN layers: spectral norm built in (num_svs, num_itrs, eps), sigma exposed."""

    def _init_sn(self, num_svs: int, num_itrs: int, eps: float, u_first: bool, backend: Optional[str]) -> None:
        spectral_norm(self, n_power_iterations=num_itrs, eps=eps, num_svs=num_svs, u_first=u_first, backend=backend)

    @property
    def sigma(self) -> torch.Tensor:
        """The last estimate of the largest singular value (the divisor), [] float32."""
        return sigma_of(self)[0]


class SNLinear(_SNMixin, nn.Linear):
    """nn.Linear with spectral normalization (sigma folded into the output)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, num_svs: int = 1, num_itrs: int = 1,
                 eps: float = 1e-12, u_first: bool = True, backend: Optional[str] = None, **kwargs):
        super().__init__(in_features, out_features, bias, **kwargs)
        self._init_sn(num_svs, num_itrs, eps, u_first, backend)


class SNConv2d(_SNMixin, nn.Conv2d):
    """nn.Conv2d with spectral normalization (sigma folded into the output)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", num_svs: int = 1, num_itrs: int = 1,
                 eps: float = 1e-12, u_first: bool = True, backend: Optional[str] = None, **kwargs):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode,
                         **kwargs)
        self._init_sn(num_svs, num_itrs, eps, u_first, backend)


class SNConvTranspose2d(_SNMixin, nn.ConvTranspose2d):
    """nn.ConvTranspose2d with spectral normalization over dim 1 (torch's choice), folded."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, output_padding=0,
                 groups: int = 1, bias: bool = True, dilation=1, num_svs: int = 1, num_itrs: int = 1,
                 eps: float = 1e-12, u_first: bool = True, backend: Optional[str] = None, **kwargs):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, output_padding, groups, bias,
                         dilation, **kwargs)
        self._init_sn(num_svs, num_itrs, eps, u_first, backend)


class SNEmbedding(_SNMixin, nn.Embedding):
    """nn.Embedding with spectral normalization of its [num_embeddings, dim] table (BigGAN's
    projection discriminator), folded into the looked-up rows."""

    def __init__(self, num_embeddings: int, embedding_dim: int, num_svs: int = 1, num_itrs: int = 1,
                 eps: float = 1e-12, u_first: bool = True, backend: Optional[str] = None, **kwargs):
        super().__init__(num_embeddings, embedding_dim, **kwargs)
        self._init_sn(num_svs, num_itrs, eps, u_first, backend)
