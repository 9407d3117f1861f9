"""BiasAct module: a learnable per-channel bias followed by the fused activation."""
from __future__ import annotations

from typing import Optional

import torch

from ganfast.ops.bias_act import bias_act, resolve_args


class BiasAct(torch.nn.Module):
    """y = clamp(act(x + bias along `dim`) * gain). x: [N, C, ...] with C == channels at `dim`.

    bias_init sets the bias' initial value; lr_multiplier scales the stored bias at use time
    (the equalized-learning-rate convention of StyleGAN), so the stored value is bias_init / lr_multiplier.
    """

    def __init__(self, channels: int, act: str = "linear", bias: bool = True, bias_init: float = 0.0,
                 lr_multiplier: float = 1.0, dim: int = 1, alpha: Optional[float] = None,
                 gain: Optional[float] = None, clamp: Optional[float] = None, backend: Optional[str] = None):
        super().__init__()
        if not isinstance(channels, int) or channels <= 0:
            raise ValueError(f"BiasAct: channels must be a positive int, got {channels!r}")
        if lr_multiplier <= 0:
            raise ValueError(f"BiasAct: lr_multiplier must be > 0, got {lr_multiplier}")
        probe = torch.empty([1] * dim + [channels])  # validates act / alpha / gain / clamp now
        resolve_args(probe, None, dim, act, alpha, gain, clamp)
        self.channels, self.act, self.dim = channels, act, dim
        self.alpha, self.gain, self.clamp, self.backend = alpha, gain, clamp, backend
        self.lr_multiplier = lr_multiplier
        self.bias = torch.nn.Parameter(torch.full([channels], float(bias_init) / lr_multiplier)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = None
        if self.bias is not None:
            b = self.bias.to(x.dtype)
            if self.lr_multiplier != 1:
                b = b * self.lr_multiplier
        return bias_act(x, b, dim=self.dim, act=self.act, alpha=self.alpha, gain=self.gain,
                        clamp=self.clamp, backend=self.backend)

    def extra_repr(self) -> str:
        s = f"{self.channels}, act={self.act!r}, bias={self.bias is not None}, dim={self.dim}"
        for k in ("alpha", "gain", "clamp", "backend"):
            v = getattr(self, k)
            if v is not None:
                s += f", {k}={v!r}"
        if self.lr_multiplier != 1:
            s += f", lr_multiplier={self.lr_multiplier}"
        return s
