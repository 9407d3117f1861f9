"""modulated_conv2d's epilogue and demodulation on the CPU extension
(csrc/modulated_conv2d/modulated_conv2d_cpu.cpp): thin wrappers. The contracts (signatures,
shapes, dtypes, meaning) are reference.epilogue_forward, reference.epilogue_backward and
reference.demod_coefficients; `out` optionally hands the kernel its output (like a)."""
from __future__ import annotations

import functools
from typing import Optional

import torch

from ganfast import _ext
from ganfast.ops.bias_act.reference import ACTIVATIONS


def epilogue_forward_on_extension(kind: str, a: torch.Tensor, dcoef: Optional[torch.Tensor],
                                  noise: Optional[torch.Tensor], bias: Optional[torch.Tensor], act: str,
                                  alpha: float, gain: float, clamp: float,
                                  out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """reference.epilogue_forward on extension `kind` ("cpu" or "cuda")."""
    return _ext.extension(kind).modconv_epilogue_forward(a, dcoef, noise, bias, ACTIVATIONS[act].code, alpha,
                                                         gain, clamp, out)


def epilogue_backward_on_extension(kind: str, g: torch.Tensor, a: torch.Tensor, dcoef: Optional[torch.Tensor],
                                   noise: Optional[torch.Tensor], bias: Optional[torch.Tensor], act: str,
                                   alpha: float, gain: float, clamp: float,
                                   out: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """reference.epilogue_backward on extension `kind`: (da, sums)."""
    da, sums = _ext.extension(kind).modconv_epilogue_backward(g, a, dcoef, noise, bias, ACTIVATIONS[act].code,
                                                              alpha, gain, clamp, out)
    return da, sums


def demod_coefficients_on_extension(kind: str, weight: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
    """reference.demod_coefficients on extension `kind`: [N, Cout] float32 (float64 for float64 weight)."""
    return _ext.extension(kind).modconv_demod(weight, styles)


epilogue_forward = functools.partial(epilogue_forward_on_extension, "cpu")
epilogue_backward = functools.partial(epilogue_backward_on_extension, "cpu")
demod_coefficients = functools.partial(demod_coefficients_on_extension, "cpu")
