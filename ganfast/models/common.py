"""What every ganfast model shares: the G/D interface, label handling, backend switching, init.

Interface (every family follows it, so the training engine needs no per-model code):
    G.z_dim, G.c_dim (0: unconditional), G.img_resolution, G.img_channels
    G(z [N, z_dim], c=None, **family_options) -> images [N, img_channels, R, R], about [-1, 1]
    D.c_dim, D.img_resolution, D.img_channels
    D(img [N, img_channels, R, R], c=None) -> logits [N]
    Models with auxiliary heads (ACGAN, InfoGAN) also have D.forward_aux(img, c) -> (logits [N], dict).
Labels c: int64 class indices [N] or float one-hot / soft labels [N, c_dim]; `labels_to_onehot`
and `labels_to_index` convert. A conditional model called without c raises.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn


def check_latent(name: str, z: torch.Tensor, z_dim: int) -> None:
    if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[1] != z_dim or not z.is_floating_point():
        got = list(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise ValueError(f"{name}: z must be a floating [N, {z_dim}] tensor, got {got}")


def check_images(name: str, img: torch.Tensor, channels: int, resolution: int) -> None:
    if (not isinstance(img, torch.Tensor) or img.ndim != 4 or img.shape[1] != channels
            or tuple(img.shape[2:]) != (resolution, resolution)):
        got = list(img.shape) if isinstance(img, torch.Tensor) else type(img).__name__
        raise ValueError(f"{name}: img must be [N, {channels}, {resolution}, {resolution}], got {got}")


def labels_to_onehot(name: str, c: Optional[torch.Tensor], c_dim: int, n: int, dtype: torch.dtype) -> Optional[torch.Tensor]:
    """c (int64 [N] class indices, or float [N, c_dim]) as float [N, c_dim]; None when c_dim == 0."""
    if c_dim == 0:
        if c is not None and c.numel():
            raise ValueError(f"{name}: this model is unconditional (c_dim=0) but got labels c")
        return None
    if c is None:
        raise ValueError(f"{name}: this model is conditional (c_dim={c_dim}); pass labels c "
                         f"(int64 [N] class indices or float [N, {c_dim}])")
    if not c.is_floating_point():
        if c.shape != (n,):
            raise ValueError(f"{name}: integer labels c must be [{n}], got {list(c.shape)}")
        # one_hot checks the range itself where that is free (CPU tensors; on CUDA a device-side
        # assert), so no host read of the labels here: a synchronization in every G and D call
        try:
            onehot = nn.functional.one_hot(c.long(), c_dim)
        except RuntimeError as e:
            raise ValueError(f"{name}: labels c must lie in [0, {c_dim}), got [{int(c.min())}, {int(c.max())}]") from e
        return onehot.to(dtype)
    if c.shape != (n, c_dim):
        raise ValueError(f"{name}: float labels c must be [{n}, {c_dim}], got {list(c.shape)}")
    return c.to(dtype)


def labels_to_index(name: str, c: Optional[torch.Tensor], c_dim: int, n: int) -> Optional[torch.Tensor]:
    """c as int64 class indices [N] (argmax of one-hot / soft labels); None when c_dim == 0."""
    onehot = labels_to_onehot(name, c, c_dim, n, torch.float32)
    if onehot is None:
        return None
    return c.long() if not c.is_floating_point() else onehot.argmax(dim=1)


def set_backend(module: nn.Module, backend: Optional[str]) -> nn.Module:
    """Point every ganfast layer in `module` at `backend` ('reference' turns the model into plain
    PyTorch; None: automatic). Every ganfast.nn layer (and each model block that calls an op
    directly) keeps its choice in a `backend` attribute; returns module."""
    if backend is not None:
        from ganfast import backends
        backends.get_backend(backend)   # validate the name now
    for m in module.modules():
        if hasattr(m, "backend") and not isinstance(getattr(type(m), "backend", None), property):
            m.backend = backend
    return module


def count_parameters(module: nn.Module) -> int:
    """Trainable parameters (what the papers report; buffers such as noise maps, running
    statistics and spectral-norm vectors are not counted)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
