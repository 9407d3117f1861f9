"""bias_act on the CPU extension (csrc/bias_act/bias_act_cpu.cpp): thin wrapper."""
from __future__ import annotations

from typing import Callable, Optional

import torch

from ganfast import _ext
from ganfast.ops.bias_act.reference import ACTIVATIONS


def runner(kind: str) -> Callable:
    """The kernel contract's run (see reference.run) on extension `kind` ("cpu" or "cuda"), one
    Python call deep: it is on every bias_act call's path."""

    def run(order: int, x: torch.Tensor, b: Optional[torch.Tensor], g: Optional[torch.Tensor],
            gg: Optional[torch.Tensor], dim: int, act: str, alpha: float, gain: float, clamp: float, want_db: bool,
            out: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        return _ext.extension(kind).bias_act(x, b, g, gg, order, dim, ACTIVATIONS[act].code, alpha, gain, clamp,
                                             want_db, out)

    return run


run = runner("cpu")
