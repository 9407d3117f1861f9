"""A small MLP generator / discriminator pair for points (the 2-D toy problems of the GAN
literature, e.g. the ring of 8 Gaussians) and as a template for users' own networks: they follow
the G/D interface of ganfast.models.common, so the training loop needs nothing else.

    G(z [N, z_dim]) -> points [N, dim]        D(x [N, dim]) -> logits [N]

Hidden layers are a bias-free nn.Linear followed by ganfast's fused bias + activation
(ganfast.nn.BiasAct), so set_backend(model, "reference") turns them into plain PyTorch too.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ganfast.models.common import labels_to_onehot
from ganfast.models.dcgan import check_positive_int
from ganfast.nn import BiasAct

__all__ = ["MLPGenerator", "MLPDiscriminator"]

_ACTS = ("relu", "lrelu", "tanh", "elu", "selu", "softplus", "swish")


def _hidden_stack(who: str, in_features: int, hidden: int, layers: int, act: str) -> nn.Sequential:
    """`layers` x (Linear without bias -> BiasAct(act, gain 1)): [N, in_features] -> [N, hidden]."""
    check_positive_int(who, "hidden", hidden)
    check_positive_int(who, "layers", layers)
    if act not in _ACTS:
        raise ValueError(f"{who}: act must be one of {_ACTS}, got {act!r}")
    blocks = []
    for i in range(layers):
        blocks += [nn.Linear(in_features if i == 0 else hidden, hidden, bias=False), BiasAct(hidden, act=act, gain=1.0)]
    return nn.Sequential(*blocks)


def _check_points(who: str, name: str, x: torch.Tensor, dim: int) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 2 or x.shape[1] != dim or not x.is_floating_point():
        got = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{who}: {name} must be a floating [N, {dim}] tensor, got {got}")


class MLPGenerator(nn.Module):
    """z [N, z_dim] -> points [N, dim]: `layers` hidden layers of width `hidden`, then a linear
    output layer (no output activation: points are unbounded)."""

    c_dim = 0

    def __init__(self, z_dim: int = 2, dim: int = 2, hidden: int = 128, layers: int = 3, act: str = "relu"):
        super().__init__()
        who = type(self).__name__
        self.z_dim, self.dim = check_positive_int(who, "z_dim", z_dim), check_positive_int(who, "dim", dim)
        self.hidden, self.layers, self.act = hidden, layers, act
        self.body = _hidden_stack(who, z_dim, hidden, layers, act)
        self.out = nn.Linear(hidden, dim)

    def forward(self, z: torch.Tensor, c: Optional[torch.Tensor] = None) -> torch.Tensor:
        who = type(self).__name__
        _check_points(who, "z", z, self.z_dim)
        labels_to_onehot(who, c, self.c_dim, z.shape[0], z.dtype)       # refuses labels
        return self.out(self.body(z))

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, dim={self.dim}, hidden={self.hidden}, layers={self.layers}, act={self.act!r}"


class MLPDiscriminator(nn.Module):
    """x [N, dim] -> logits [N]: `layers` hidden layers of width `hidden`, then a linear logit."""

    c_dim = 0

    def __init__(self, dim: int = 2, hidden: int = 128, layers: int = 3, act: str = "lrelu"):
        super().__init__()
        who = type(self).__name__
        self.dim = check_positive_int(who, "dim", dim)
        self.hidden, self.layers, self.act = hidden, layers, act
        self.body = _hidden_stack(who, dim, hidden, layers, act)
        self.out = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor, c: Optional[torch.Tensor] = None) -> torch.Tensor:
        who = type(self).__name__
        _check_points(who, "x", x, self.dim)
        labels_to_onehot(who, c, self.c_dim, x.shape[0], x.dtype)       # refuses labels
        return self.out(self.body(x))[:, 0]

    def extra_repr(self) -> str:
        return f"dim={self.dim}, hidden={self.hidden}, layers={self.layers}, act={self.act!r}"
