"""Helpers shared by every op's Python side: memory layouts, and whether a call runs eagerly."""
from __future__ import annotations

import torch


def is_dense(t: torch.Tensor) -> bool:
    """Non-overlapping and dense: the dims, ordered by stride, tile the storage exactly
    (contiguous, channels_last, or any permutation of them)."""
    if t.numel() == 0 or t.is_contiguous():
        return True
    expected = 1
    for stride, size in sorted((st, sz) for sz, st in zip(t.shape, t.stride()) if sz != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def dense(t: torch.Tensor) -> torch.Tensor:
    """t itself when non-overlapping and dense, else a copy in the layout torch.empty_like picks."""
    return t if is_dense(t) else torch.empty_like(t).copy_(t)


def layout_of(t: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """t with exactly ref's strides (ref dense); copies only when they differ."""
    return t if t.stride() == ref.stride() else torch.empty_like(ref).copy_(t)


def is_eager(*tensors) -> bool:
    """True outside torch.compile / tracing: plain tensors only (no fake or proxy subclasses).

    The ops then call their autograd.Functions directly: torch.library's autograd wrapper costs
    ~50 us a call in eager mode, which dominates small layers.
    """
    if torch.compiler.is_compiling():
        return False
    for t in tensors:
        if t is not None and type(t) is not torch.Tensor and type(t) is not torch.nn.Parameter:
            return False
    return True
