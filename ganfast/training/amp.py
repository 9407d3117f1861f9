"""Mixed precision for the training loop: `--amp none | bf16 | fp16`.

    none  float32 everywhere (the default; what CPUs run best).
    bf16  torch.autocast with bfloat16: bf16 has float32's exponent range, so no loss scaling.
    fp16  torch.autocast with float16 and one torch.amp.GradScaler per network: the loss is scaled
          before backward so small fp16 gradients do not flush to zero; a step whose gradients
          overflow is skipped by the scaler and the scale lowered. The regularization passes take
          the scaler too (ganfast.training.regularizers), so the inner gradient of R1 is scaled
          and unscaled correctly.

NVIDIA's StyleGAN2 recipe (num_fp16_res / conv_clamp inside the model, float32 elsewhere, no
autocast) is a model option (ganfast.models, CUDA only) and combines with amp="none".
"""
from __future__ import annotations

import contextlib
from typing import Optional

import torch

__all__ = ["AMP_MODES", "check_amp", "autocast", "make_grad_scaler"]

AMP_MODES = ("none", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_amp(amp: str) -> str:
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {AMP_MODES}, got {amp!r}")
    return amp


def autocast(amp: str, device: torch.device, cache_enabled: bool = True):
    """The autocast context for `amp` on `device` (a null context for amp='none'). cache_enabled
    False inside a CUDA graph capture (the cast weights must be recomputed at every replay)."""
    if check_amp(amp) == "none":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=_DTYPES[amp], cache_enabled=cache_enabled)


def make_grad_scaler(amp: str, device: torch.device) -> Optional[torch.amp.GradScaler]:
    """A GradScaler for fp16, None otherwise (bf16 and fp32 need no loss scaling)."""
    if check_amp(amp) != "fp16":
        return None
    return torch.amp.GradScaler(torch.device(device).type)
