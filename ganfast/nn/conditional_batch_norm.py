"""ConditionalBatchNorm2d (BigGAN's ccbn) over ganfast.ops.conditional_batch_norm, and standing statistics."""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

from ganfast.nn.spectral_norm import SNLinear, SpectralNorm
from ganfast.ops.conditional_batch_norm import conditional_batch_norm
from ganfast.ops.conditional_batch_norm.reference import ACTIVATIONS

__all__ = ["ConditionalBatchNorm2d", "accumulate_standing_stats"]


class ConditionalBatchNorm2d(nn.Module):
    """Batch norm whose per-sample scale and shift come from a conditioning vector.

    forward(x [N, C, H, W], cond [N, cond_dim]) = act((x - mean) * rsqrt(var + eps) * gain + bias)
    with gain = 1 + gain_linear(cond) and bias = bias_linear(cond) ([N, C] each; BigGAN: cond is
    the shared class embedding concatenated with this block's z chunk). The two linears have no
    bias and are spectrally normalized when sn=True (BigGAN's G), plain nn.Linear otherwise.

    Running statistics as torch's BatchNorm2d (running_mean, running_var, num_batches_tracked;
    momentum=None: cumulative average, which accumulate_standing_stats uses). process_group:
    cross-replica statistics over that torch.distributed group (gloo or NCCL).
    """

    def __init__(self, num_features: int, cond_dim: int, sn: bool = True, eps: float = 1e-5,
                 momentum: Optional[float] = 0.1, act: Optional[str] = None, process_group=None,
                 num_svs: int = 1, num_itrs: int = 1, sn_eps: float = 1e-12, backend: Optional[str] = None):
        super().__init__()
        for name, v in (("num_features", num_features), ("cond_dim", cond_dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                raise ValueError(f"ConditionalBatchNorm2d: {name} must be a positive int, got {v!r}")
        if act not in ACTIVATIONS:
            raise ValueError(f"ConditionalBatchNorm2d: act must be one of {ACTIVATIONS}, got {act!r}")
        if momentum is not None and not 0 <= momentum <= 1:
            raise ValueError(f"ConditionalBatchNorm2d: momentum must be in [0, 1] or None, got {momentum!r}")
        self.num_features, self.cond_dim = num_features, cond_dim
        self.eps, self.momentum, self.act = float(eps), momentum, act
        self.process_group, self.backend, self.sn = process_group, backend, sn
        if sn:
            self.gain = SNLinear(cond_dim, num_features, bias=False, num_svs=num_svs, num_itrs=num_itrs, eps=sn_eps,
                                  backend=backend)
            self.bias = SNLinear(cond_dim, num_features, bias=False, num_svs=num_svs, num_itrs=num_itrs, eps=sn_eps,
                                  backend=backend)
        else:
            self.gain = nn.Linear(cond_dim, num_features, bias=False)
            self.bias = nn.Linear(cond_dim, num_features, bias=False)
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def reset_running_stats(self) -> None:
        self.running_mean.zero_()
        self.running_var.fill_(1)
        self.num_batches_tracked.zero_()

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        if cond.ndim != 2 or cond.shape[0] != x.shape[0] or cond.shape[1] != self.cond_dim:
            raise ValueError(f"ConditionalBatchNorm2d: cond must be [N, cond_dim] = [{x.shape[0]}, {self.cond_dim}], "
                             f"got shape {list(cond.shape)}")
        gain = 1 + self.gain(cond)
        bias = self.bias(cond)
        factor = 0.0
        if self.training:
            self.num_batches_tracked.add_(1)
            factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        return conditional_batch_norm(x, gain, bias, self.running_mean, self.running_var, self.training, factor,
                                      self.eps, self.act, self.process_group, self.backend)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, cond_dim={self.cond_dim}, sn={self.sn}, eps={self.eps}, "
                f"momentum={self.momentum}, act={self.act}")


@torch.no_grad()
def accumulate_standing_stats(model: nn.Module, run_batch: Callable[[], object], num_batches: int = 16) -> None:
    """BigGAN's standing statistics: the running statistics of every ConditionalBatchNorm2d and
    torch BatchNorm in `model` become the average over `num_batches` batches of fresh samples.

    Resets them, calls run_batch() (which runs the model forward, e.g. G(z, y) for new z, y)
    num_batches times in training mode with a cumulative average (momentum None), then restores
    each module's momentum and the model's training mode. Spectral-norm power iterations do not
    run meanwhile (their u, v are left as they were). Evaluate in eval mode afterwards.
    """
    if num_batches < 1:
        raise ValueError(f"accumulate_standing_stats: num_batches must be >= 1, got {num_batches!r}")
    norms = [m for m in model.modules() if isinstance(m, (ConditionalBatchNorm2d, nn.modules.batchnorm._BatchNorm))]
    was_training = model.training
    saved = [(m, m.momentum) for m in norms]
    try:
        model.train()
        # Spectral norms stay in eval: gathering statistics must not advance their power iteration
        for m in model.modules():
            if isinstance(m, SpectralNorm):
                m.eval()
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
        for _ in range(num_batches):
            run_batch()
    finally:
        for m, momentum in saved:
            m.momentum = momentum
        model.train(was_training)
