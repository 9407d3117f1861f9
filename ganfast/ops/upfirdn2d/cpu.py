"""upfirdn2d on the CPU extension (csrc/upfirdn2d/upfirdn2d_cpu.cpp): thin wrapper."""
from __future__ import annotations

import functools
from typing import Optional

import torch

from ganfast import _ext


def run_on_extension(kind: str, x: torch.Tensor, f: torch.Tensor, upx: int, upy: int, downx: int, downy: int,
                     px0: int, px1: int, py0: int, py1: int, flip_filter: bool, gain: float,
                     out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The kernel contract (see reference.run) on extension `kind` ("cpu" or "cuda").

    out: optional preallocated [N, C, out_h, out_w] output (the tests pass a NaN-filled one)."""
    return _ext.extension(kind).upfirdn2d(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip_filter, gain, out)


run = functools.partial(run_on_extension, "cpu")
