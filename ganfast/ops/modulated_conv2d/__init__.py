"""modulated_conv2d: StyleGAN2's weight-modulated, demodulated convolution with up/down-sampling
and the bias_act epilogue.

Status: the reference (both StyleGAN2 formulations, any gradient order) behind the public API, so
models can use it now; the fused implicit-GEMM Triton kernel, the CUDA and CPU paths are the rest
of issue 4. Asking for a fused backend explicitly raises ganfast.BackendNotSupported naming why.
"""
from __future__ import annotations

from typing import Optional

import torch

from ganfast import backends
from ganfast.ops.bias_act.reference import ACTIVATIONS
from ganfast.ops.modulated_conv2d.reference import (conv2d_resample_ref, demod_coefficients, fp16_prenormalize,
                                                    modulated_conv2d_ref)
from ganfast.ops.upfirdn2d.reference import IntPair

__all__ = ["modulated_conv2d", "conv2d_resample_ref", "demod_coefficients", "fp16_prenormalize"]

OP = "modulated_conv2d"
backends.register_op(OP, {"reference": (torch.float16, torch.bfloat16, torch.float32, torch.float64)})


def _shape(t) -> str:
    return str(list(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor,
                     noise: Optional[torch.Tensor] = None, up: int = 1, down: int = 1, padding: IntPair = 0,
                     resample_filter: Optional[torch.Tensor] = None, demodulate: bool = True,
                     flip_weight: bool = True, fused_modconv: bool = True, bias: Optional[torch.Tensor] = None,
                     act: str = "linear", alpha: Optional[float] = None, gain: float = 1.0,
                     clamp: Optional[float] = None, fp16_safeguard: Optional[bool] = None,
                     backend: Optional[str] = None) -> torch.Tensor:
    """Modulated (and demodulated) 2-D convolution with resampling and a fused epilogue.

    Args:
        x: [N, Cin, H, W]. weight: [Cout, Cin, kh, kw]. styles: [N, Cin].
        noise: broadcastable to the output [N, Cout, H', W'] (already scaled), or None.
        up, down: resampling factors (ints >= 1) through resample_filter (see setup_filter).
        padding: int, [x, y] or [x0, x1, y0, y1], relative to the upsampled image.
        demodulate: divide each (sample, output channel) by the norm of its modulated weights.
        flip_weight: True = correlation (torch's conv2d), False = true convolution.
        fused_modconv: the reference's formulation (grouped conv or scale-conv-scale); the same math.
        bias, act, alpha, gain, clamp: the epilogue, as bias_act (gain default 1; clamp None: none).
        fp16_safeguard: pre-normalize weight and styles (StyleGAN2's fp16 recipe); None: when x is
            fp16 and demodulate.
        backend: None or 'reference' (the fused backends are not built yet for this op).

    Returns: [N, Cout, H', W'], differentiable to any order.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"modulated_conv2d: x must be a floating [N, Cin, H, W] tensor, got {_shape(x)}")
    n, cin = x.shape[:2]
    if not isinstance(weight, torch.Tensor) or weight.ndim != 4 or weight.shape[1] != cin:
        raise ValueError(f"modulated_conv2d: weight must be [Cout, {cin}, kh, kw] (Cin from x), got {_shape(weight)}")
    cout = weight.shape[0]
    if not isinstance(styles, torch.Tensor) or tuple(styles.shape) != (n, cin):
        raise ValueError(f"modulated_conv2d: styles must be [{n}, {cin}] ([N, Cin]), got {_shape(styles)}")
    if bias is not None and (not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (cout,)):
        raise ValueError(f"modulated_conv2d: bias must be [{cout}] ([Cout]), got {_shape(bias)}")
    if act not in ACTIVATIONS:
        raise ValueError(f"modulated_conv2d: act must be one of {list(ACTIVATIONS)}, got {act!r}")
    if clamp is not None and clamp != -1 and clamp < 0:
        raise ValueError(f"modulated_conv2d: clamp must be None or >= 0, got {clamp}")
    for t, name in ((weight, "weight"), (styles, "styles"), (bias, "bias"), (noise, "noise"), (resample_filter, "resample_filter")):
        if isinstance(t, torch.Tensor) and t.device != x.device:
            raise ValueError(f"modulated_conv2d: {name} must be on x's device {x.device}, got {t.device}")
    requested = backends.requested_backend(backend)
    if requested is not None and requested != "reference":
        backends.select(OP, (x, weight, styles), requested)  # raises BackendNotSupported with the reasons
    alpha = float(ACTIVATIONS[act].def_alpha if alpha is None else alpha)
    clamp = -1.0 if clamp is None else float(clamp)
    if fp16_safeguard is None:
        fp16_safeguard = x.dtype == torch.float16 and demodulate
    return modulated_conv2d_ref(x, weight, styles, noise, up, down, padding, resample_filter, demodulate,
                                flip_weight, fused_modconv, bias, act, alpha, float(gain), clamp, fp16_safeguard)
