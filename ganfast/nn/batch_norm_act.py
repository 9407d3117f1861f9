"""BatchNormAct2d: torch's BatchNorm2d with a fused activation, over ganfast.ops.conditional_batch_norm
(its batch_norm: one gain and shift per channel)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ganfast.ops.bias_act import bias_act
from ganfast.ops.conditional_batch_norm import batch_norm


class BatchNormAct2d(nn.BatchNorm2d):
    """torch's BatchNorm2d (affine, running statistics; the same parameters, buffers, state-dict
    keys and momentum rule) followed by act in {'linear', 'relu', 'lrelu'}, run on
    ganfast.ops.conditional_batch_norm with gamma and beta as every sample's gain and shift.

    'relu' is fused into the normalization pass; 'lrelu' (slope alpha, default 0.2) is a
    ganfast.ops.bias_act after it, as the batch-norm op fuses no other activation.
    process_group: batch statistics over that torch.distributed group (sync batch norm). Use it
    rather than nn.SyncBatchNorm.convert_sync_batchnorm, which would replace this module by a
    plain SyncBatchNorm and drop the activation.
    x: [N, C, H, W] -> [N, C, H, W].
    """

    ACTS = ("linear", "relu", "lrelu")

    def __init__(self, num_features: int, act: str = "relu", alpha: Optional[float] = None, eps: float = 1e-5,
                 momentum: Optional[float] = 0.1, process_group=None, backend: Optional[str] = None):
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features <= 0:
            raise ValueError(f"BatchNormAct2d: num_features must be a positive int, got {num_features!r}")
        if act not in self.ACTS:
            raise ValueError(f"BatchNormAct2d: act must be one of {self.ACTS}, got {act!r}")
        if alpha is not None and act != "lrelu":
            raise ValueError(f"BatchNormAct2d: alpha is lrelu's slope; act={act!r} takes none, got {alpha!r}")
        super().__init__(num_features, eps=eps, momentum=momentum, affine=True, track_running_stats=True)
        self.act, self.process_group, self.backend = act, process_group, backend
        self.alpha = (0.2 if alpha is None else float(alpha)) if act == "lrelu" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != self.num_features:
            got = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"BatchNormAct2d: x must be [N, {self.num_features}, H, W], got {got}")
        momentum = 0.0
        if self.training:
            self.num_batches_tracked.add_(1)
            # momentum None: cumulative average, as torch's BatchNorm
            momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
        # conditional_batch_norm with gamma / beta [C] as every sample's gain and shift
        y = batch_norm(x, self.weight, self.bias, self.running_mean, self.running_var, self.training, momentum,
                       self.eps, "relu" if self.act == "relu" else None, self.process_group, self.backend)
        if self.act == "lrelu":
            y = bias_act(y, None, act="lrelu", alpha=self.alpha, gain=1.0, backend=self.backend)
        return y

    def extra_repr(self) -> str:
        s = super().extra_repr() + f", act={self.act!r}"
        if self.alpha is not None:
            s += f", alpha={self.alpha}"
        return s if self.backend is None else s + f", backend={self.backend!r}"
