"""conditional_batch_norm's kernel contract on the CPU extension
(csrc/conditional_batch_norm/conditional_batch_norm_cpu.cpp): thin wrappers. cuda.py binds the
same functions to the CUDA extension."""
from __future__ import annotations

import functools
from typing import Optional

import torch

from ganfast import _ext


def channel_stats_on_extension(kind: str, x: torch.Tensor) -> torch.Tensor:
    """reference.channel_stats on extension `kind` ("cpu" or "cuda"): [C, 2] (mean, M2)."""
    return _ext.extension(kind).cbn_channel_stats(x)


def forward_apply_on_extension(kind: str, x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor,
                               gain: torch.Tensor, bias: torch.Tensor, relu: bool,
                               out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """reference.forward_apply on extension `kind`. out: optional preallocated y like x (the tests
    pass a NaN-filled one)."""
    return _ext.extension(kind).cbn_forward_apply(x, mean, rstd, gain, bias, relu, out)


def backward_sums_on_extension(kind: str, dy: torch.Tensor, x: torch.Tensor, mean: torch.Tensor,
                               rstd: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor,
                               relu: bool) -> torch.Tensor:
    """reference.backward_sums on extension `kind`: [N, C, 2] (sum dz, sum dz * xhat) per plane."""
    return _ext.extension(kind).cbn_backward_sums(dy, x, mean, rstd, gain, bias, relu)


def backward_dx_on_extension(kind: str, dy: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor,
                             gain: torch.Tensor, bias: torch.Tensor, relu: bool, c1: torch.Tensor, c2: torch.Tensor,
                             out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """reference.backward_dx on extension `kind`. out: optional preallocated dx like x."""
    return _ext.extension(kind).cbn_backward_dx(dy, x, mean, rstd, gain, bias, relu, c1, c2, out)


channel_stats = functools.partial(channel_stats_on_extension, "cpu")
forward_apply = functools.partial(forward_apply_on_extension, "cpu")
backward_sums = functools.partial(backward_sums_on_extension, "cpu")
backward_dx = functools.partial(backward_dx_on_extension, "cpu")
