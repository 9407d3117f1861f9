"""upfirdn2d on the CPU extension (csrc/upfirdn2d/upfirdn2d_cpu.cpp): thin wrapper, plus the
kernel chooser between it and oneDNN's depthwise convolution (the reference formulation)."""
from __future__ import annotations

import functools
from typing import Optional

import torch

from ganfast import _ext
from ganfast.ops.upfirdn2d import reference

# Where oneDNN's depthwise convolution beats the C++ kernel (bench/results/upfirdn2d.jsonl, CPU
# fp32, one thread, issue 28): filtering / decimating (up = 1) planes of at most 32x32 while the
# whole tensor stays in cache: down2 at 8-32 px 2.3-4.5x, the blur before StyleGAN2's 3x3 down
# convolution at 8-32 px 1.2-4x. The C++ kernel wins every upsampling (polyphase: it skips the
# zeros, 2-6x) and large planes (64x64 and up, 2x).
ONEDNN_MAX_PLANE = 32 * 32
ONEDNN_MAX_NUMEL = 1 << 22
ONEDNN_DTYPES = (torch.float32, torch.float64)


def run_on_extension(kind: str, x: torch.Tensor, f: torch.Tensor, upx: int, upy: int, downx: int, downy: int,
                     px0: int, px1: int, py0: int, py1: int, flip_filter: bool, gain: float,
                     out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The kernel contract (see reference.run) on extension `kind` ("cpu" or "cuda").

    out: optional preallocated [N, C, out_h, out_w] output (the tests pass a NaN-filled one)."""
    return _ext.extension(kind).upfirdn2d(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip_filter, gain, out)


kernel = functools.partial(run_on_extension, "cpu")   # the C++ kernel alone (what the kernel tests check)


def prefers_onednn(x: torch.Tensor, upx: int, upy: int) -> bool:
    """Whether oneDNN's depthwise convolution is the faster CPU path for x (see ONEDNN_*)."""
    return (upx == 1 and upy == 1 and x.dtype in ONEDNN_DTYPES and x.shape[2] * x.shape[3] <= ONEDNN_MAX_PLANE
            and x.numel() <= ONEDNN_MAX_NUMEL)


def run(x: torch.Tensor, f: torch.Tensor, upx: int, upy: int, downx: int, downy: int, px0: int, px1: int,
        py0: int, py1: int, flip_filter: bool, gain: float, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The kernel contract on the CPU: the C++ kernel, or oneDNN's depthwise convolution (through
    the reference formulation, same contract) where that is faster; `out` always takes the kernel."""
    if out is None and prefers_onednn(x, upx, upy):
        return reference.run(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip_filter, gain).contiguous()
    return kernel(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip_filter, gain, out)
