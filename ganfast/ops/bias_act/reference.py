"""bias_act in plain PyTorch: the specification and the universal fallback.

y = clamp(act(x + b broadcast along dim, alpha) * gain, -clamp, clamp). Differentiable to any
order by autograd. Never imports Triton or the extensions.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F


class ActSpec(NamedTuple):
    code: int          # ganfast::Act in csrc/common/bias_act_math.h
    def_alpha: float
    def_gain: float
    zero_second_derivative: bool  # f'' == 0 wherever it exists


# The bias_act convention of the StyleGAN2/StyleGAN3 codebases (alpha is lrelu's slope; ganfast
# also lets it set elu's alpha, default 1, which is what those codebases compute).
ACTIVATIONS = {
    "linear": ActSpec(0, 0.0, 1.0, True),
    "relu": ActSpec(1, 0.0, math.sqrt(2), True),
    "lrelu": ActSpec(2, 0.2, math.sqrt(2), True),
    "tanh": ActSpec(3, 0.0, 1.0, False),
    "sigmoid": ActSpec(4, 0.0, 1.0, False),
    "elu": ActSpec(5, 1.0, 1.0, False),
    "selu": ActSpec(6, 0.0, 1.0, False),
    "softplus": ActSpec(7, 0.0, 1.0, False),
    "swish": ActSpec(8, 0.0, math.sqrt(2), False),
}


def activation(z: torch.Tensor, act: str, alpha: float, inplace: bool = False) -> torch.Tensor:
    """act(z, alpha). inplace=True lets relu and lrelu (alpha > 0) overwrite z, a temporary the
    caller owns and nothing else reads (their backward reads the output, so autograd allows it)."""
    if act == "linear":
        return z
    if act == "relu":
        return F.relu(z, inplace=inplace)
    if act == "lrelu":
        # torch refuses the in-place backward for a slope <= 0 (the output does not give the sign)
        return F.leaky_relu(z, alpha, inplace=inplace and alpha > 0)
    if act == "tanh":
        return torch.tanh(z)
    if act == "sigmoid":
        return torch.sigmoid(z)
    if act == "elu":
        return F.elu(z, alpha)
    if act == "selu":
        return F.selu(z)
    if act == "softplus":
        return F.softplus(z)
    if act == "swish":
        return z * torch.sigmoid(z)
    raise ValueError(f"act must be one of {sorted(ACTIVATIONS)}, got {act!r}")


# act(gain * z) == gain * act(z) for gain > 0: the gain can be applied before the activation.
POSITIVELY_HOMOGENEOUS = ("linear", "relu", "lrelu")


def bias_shape(x: torch.Tensor, dim: int) -> list[int]:
    """Shape that broadcasts a [C] bias along `dim` of x: [1, ..., C, ..., 1]."""
    return [-1 if i == dim else 1 for i in range(x.ndim)]


def bias_act_ref(x: torch.Tensor, b: Optional[torch.Tensor], dim: int, act: str, alpha: float,
                 gain: float, clamp: float, upcast: bool = False) -> torch.Tensor:
    """Reference bias_act with resolved arguments (clamp < 0: no clamp).

    x: [..., C (at dim), ...]; b: [C] or None. upcast=True computes in float32 for fp16/bf16 input
    and returns x's dtype.
    """
    out_dtype = x.dtype
    x_in = x
    if upcast and x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
        b = b.float() if b is not None else None
    # NVIDIA's _bias_act_ref order (x + b, act, * gain, clamp) with fewer temporaries: for relu,
    # lrelu and linear the gain scales z in place before the activation, which then overwrites z.
    # act(gain z) = gain act(z) for gain > 0, with the same kink (z == 0 stays 0: relu'(0) = 0,
    # lrelu'(0) = alpha); only the negative branch rounds differently, (gain z) alpha for
    # (alpha z) gain. On CPU a fresh [N, C, H, W] temporary costs its page faults, about a pass.
    z = x if b is None else x + b.reshape(bias_shape(x, dim))
    owned = z is not x                        # z is ours to overwrite (never the caller's x)
    fold = act in POSITIVELY_HOMOGENEOUS and gain > 0 and gain != 1
    if fold:
        z = z.mul_(gain) if owned else z * gain
        owned = True
    y = activation(z, act, alpha, inplace=owned)
    if gain != 1 and not fold:
        y = y * gain
    if clamp >= 0:
        y = y.clamp(-clamp, clamp)
    y = y.to(out_dtype)
    # an identity call (linear, no bias, gain 1, no clamp) returns a copy, as the fused backends
    # do: the result never aliases x, so writing into it cannot change the caller's tensor
    return y.clone() if y is x_in else y


def run(order: int, x: torch.Tensor, b: Optional[torch.Tensor], g: Optional[torch.Tensor],
        gg: Optional[torch.Tensor], dim: int, act: str, alpha: float, gain: float, clamp: float,
        want_db: bool) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The kernel contract every backend implements (see ganfast/ops/bias_act/__init__.py).

    order 0: out = y; order 1: out = dL/dx given g = dL/dy; order 2: out = d/dx <order-1 out, gg>.
    db = out summed over every dim but `dim` (when want_db and b is given). Computed here by
    torch.func.vjp through bias_act_ref, so the fallback needs no second copy of the derivatives.
    """
    if order == 0:
        out = bias_act_ref(x, b, dim, act, alpha, gain, clamp)
    else:
        # torch.func, not torch.autograd: this runs inside a custom op, below the autograd keys.
        def f(x_):
            return bias_act_ref(x_, b, dim, act, alpha, gain, clamp)

        def first(x_):
            return torch.func.vjp(f, x_)[1](g)[0]

        out = first(x) if order == 1 else torch.func.vjp(first, x)[1](gg)[0]
    db = None
    if want_db and b is not None:
        dims = [i for i in range(x.ndim) if i != dim]
        acc = torch.float64 if x.dtype == torch.float64 else torch.float32
        # sum(dim=[]) would reduce everything: a 1-D x has nothing to reduce over.
        db = (out.sum(dim=dims, dtype=acc) if dims else out.to(acc)).to(b.dtype)
    return out, db
