"""SelfAttention2d: SAGAN / BigGAN's attention block over ganfast.ops.self_attention2d."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ganfast.nn.spectral_norm import SNConv2d
from ganfast.ops.self_attention import self_attention2d


class SelfAttention2d(nn.Module):
    """y = x + gamma * o(g softmax(theta^T phi)^T), x [B, C, H, W] -> [B, C, H, W].

    theta, phi: 1x1 convolutions C -> C / qk_ratio; g: C -> C / v_ratio; o: C / v_ratio -> C; all
    without bias, as in BigGAN. phi and g are max-pooled by `pool` (keys and values: 1/pool^2 of the
    positions). gamma starts at 0, so a fresh block is the identity. sn=True puts spectral norm
    on the four convolutions (ganfast.nn.SNConv2d: one power iteration per forward in training);
    sn=False uses plain nn.Conv2d. backend picks the attention kernel (see ganfast.backends).
    """

    def __init__(self, channels: int, qk_ratio: int = 8, v_ratio: int = 2, pool: int = 2, sn: bool = True,
                 num_svs: int = 1, num_itrs: int = 1, eps: float = 1e-12, backend: Optional[str] = None):
        super().__init__()
        for name, val in (("channels", channels), ("qk_ratio", qk_ratio), ("v_ratio", v_ratio), ("pool", pool)):
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ValueError(f"{name} must be an int >= 1, got {val!r}")
        if channels % qk_ratio or channels % v_ratio:
            raise ValueError(f"channels ({channels}) must be divisible by qk_ratio ({qk_ratio}) and v_ratio ({v_ratio})")
        self.channels, self.qk_ratio, self.v_ratio, self.pool, self.sn = channels, qk_ratio, v_ratio, pool, sn
        self.backend = backend
        cq, cv = channels // qk_ratio, channels // v_ratio
        if sn:
            conv = lambda i, o: SNConv2d(i, o, 1, bias=False, num_svs=num_svs, num_itrs=num_itrs, eps=eps, backend=backend)
        else:
            conv = lambda i, o: nn.Conv2d(i, o, 1, bias=False)
        self.theta, self.phi, self.g, self.o = conv(channels, cq), conv(channels, cq), conv(channels, cv), conv(cv, channels)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # .weight of an SN layer is W / sigma (after this step's power iteration in training)
        return self_attention2d(x, self.theta.weight, self.phi.weight, self.g.weight, self.o.weight, self.gamma,
                                pool=self.pool, backend=self.backend)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, qk_ratio={self.qk_ratio}, v_ratio={self.v_ratio}, pool={self.pool}, "
                f"sn={self.sn}" + (f", backend={self.backend!r}" if self.backend else ""))
