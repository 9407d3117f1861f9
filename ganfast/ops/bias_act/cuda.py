"""bias_act on the CUDA extension (csrc/bias_act/bias_act_cuda.cu): thin wrapper."""
from __future__ import annotations

from typing import Optional

import torch

from ganfast import _ext
from ganfast.ops.bias_act.reference import ACTIVATIONS


def run(order: int, x: torch.Tensor, b: Optional[torch.Tensor], g: Optional[torch.Tensor],
        gg: Optional[torch.Tensor], dim: int, act: str, alpha: float, gain: float, clamp: float, want_db: bool,
        out: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """cpu.run_on_extension("cuda", ...), one call shorter: this is on every bias_act call's path."""
    return _ext.extension("cuda").bias_act(x, b, g, gg, order, dim, ACTIVATIONS[act].code, alpha, gain, clamp,
                                           want_db, out)
