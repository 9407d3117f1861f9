"""Fuzz bias_act (issue 26): every backend and dtype, random shapes / layouts / dims / activations /
alpha / gain / clamp against the float64 reference; non-finite inputs; hostile arguments."""
from __future__ import annotations

import functools
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ganfast import backends
from ganfast.ops import bias_act
from ganfast.ops.bias_act.reference import ACTIVATIONS, activation
from tests.fuzz.harness import (check_nonfinite, check_op, fuzz_backends, fuzz_dtypes, fuzz_settings, lay_out,
                                layouts, make_tensor, plant_nonfinite, NO_NEG_INF)

OP = "bias_act"
BACKENDS = fuzz_backends(OP)
ACTS = sorted(ACTIVATIONS)
# sizes that bite: empty, 1, odd, prime, a block-and-a-bit
SIZES = (0, 1, 1, 2, 3, 5, 7, 13, 17)


def _second_order(backend: str) -> bool:
    order = backends.op_grad_order(OP, backend)
    return order is None or order >= 2


@st.composite
def _case(draw, nonfinite: bool = False):
    backend = draw(st.sampled_from(BACKENDS))
    dtype = draw(st.sampled_from(fuzz_dtypes(OP, backend)))
    ndim = draw(st.integers(1, 4))
    if ndim == 4 and draw(st.integers(0, 15)) == 0:
        shape = (1, 1, 181, 173)   # a large plane (rare): rows longer than any block or chunk
    else:
        shape = tuple(draw(st.sampled_from(SIZES)) for _ in range(ndim))
    return dict(
        backend=backend, dtype=dtype, shape=shape, dim=draw(st.integers(-ndim, ndim - 1)),
        x_layout=draw(layouts(ndim, broadcastable=True)), b_layout=draw(layouts(1)),
        has_b=draw(st.booleans()), act=draw(st.sampled_from(ACTS)),
        alpha=draw(st.sampled_from([None, 0.0, 0.2, 1.0, -0.3, 1.7])),
        gain=draw(st.sampled_from([None, 1.0, 0.5, -1.3, 0.0, 2.0])),
        clamp=draw(st.sampled_from([None, -1, 0.0, 0.5, 2.0, 256.0])),
        seed=draw(st.integers(0, 2**31 - 1)))


def _off_kinks(x: torch.Tensor, b, dim: int, act: str, alpha, gain, clamp) -> torch.Tensor:
    """x (contiguous) with every element whose z = x + b sits on the activation's kink at 0, or
    whose output lies within rounding of +-clamp, moved away: there a derivative jumps and
    a fast path and the float64 oracle may both be right on different sides (the op tests pin
    the kinks themselves)."""
    spec = ACTIVATIONS[act]
    alpha = spec.def_alpha if alpha is None else alpha
    gain = spec.def_gain if gain is None else gain
    rel = 8 * torch.finfo(x.dtype).eps
    shape = [-1 if i == dim % x.ndim else 1 for i in range(x.ndim)]
    for _ in range(8):
        z = x.double() + (b.double().reshape(shape) if b is not None else 0)
        bad = z.abs() < rel
        if clamp is not None and clamp >= 0:
            y = activation(z, act, alpha) * gain
            bad |= (y.abs() - clamp).abs() < rel * max(1.0, clamp)
        if not bool(bad.any()):
            break
        x = torch.where(bad, x + 0.3125, x)
    return x


def _inputs(c, nonfinite=False):
    dtype, shape = c["dtype"], c["shape"]
    dim = c["dim"] % len(shape)
    b = make_tensor(c["seed"] + 1, (shape[dim],), "contiguous", dtype) if c["has_b"] else None
    x = make_tensor(c["seed"], shape, "contiguous", dtype, scale=2.0)
    if nonfinite:
        kinds = NO_NEG_INF if c["act"] == "swish" and c["backend"] == "cpu" else (math.nan, math.inf, -math.inf)
        x = plant_nonfinite(x, c["seed"], kinds)
        b = plant_nonfinite(b, c["seed"] + 1, kinds) if b is not None else None
    else:
        x = _off_kinks(x, b, dim, c["act"], c["alpha"], c["gain"], c["clamp"])
    return dict(x=lay_out(x, c["x_layout"]), b=lay_out(b, c["b_layout"]) if b is not None else None,
                dim=c["dim"], act=c["act"], alpha=c["alpha"], gain=c["gain"], clamp=c["clamp"])


@fuzz_settings(300)
@given(c=_case())
def test_fuzz_bias_act(c):
    inputs = _inputs(c)
    check_op(OP, functools.partial(bias_act, backend=c["backend"]), functools.partial(bias_act, backend="reference"),
             inputs, dtype=c["dtype"], diff=("x", "b"), second_order=_second_order(c["backend"]), seed=c["seed"],
             backend=c["backend"])


@fuzz_settings(100)
@given(c=_case())
def test_fuzz_bias_act_nonfinite(c):
    check_nonfinite(OP, functools.partial(bias_act, backend=c["backend"]),
                    functools.partial(bias_act, backend="reference"), _inputs(c, nonfinite=True), dtype=c["dtype"],
                    backend=c["backend"])


# (case, keyword arguments, exception, what the message must name)
HOSTILE = [
    ("bias of another dtype", lambda x: dict(b=torch.zeros(3, dtype=torch.float16)), TypeError, r"\bb\b.*dtype"),
    ("bias of the wrong size", lambda x: dict(b=torch.zeros(4)), ValueError, r"\bb\b must have shape \[3\]"),
    ("bias of the wrong rank", lambda x: dict(b=torch.zeros(1, 3)), ValueError, r"\bb\b must have shape"),
    ("bias on the meta device", lambda x: dict(b=torch.zeros(3, device="meta")), ValueError, r"\bb\b must be on"),
    ("x not a tensor", lambda x: dict(x=[1.0, 2.0]), TypeError, r"\bx\b must be a torch.Tensor"),
    ("integer x", lambda x: dict(x=x.long(), b=None), TypeError, r"\bx\b must be a floating"),
    ("0-d x", lambda x: dict(x=x[0, 0], b=None), ValueError, r"\bx\b must have at least one dimension"),
    ("dim out of range", lambda x: dict(dim=2), ValueError, r"\bdim\b must be an int"),
    ("unknown activation", lambda x: dict(act="gelu"), ValueError, r"\bact\b must be one of"),
    ("negative clamp", lambda x: dict(clamp=-2.0), ValueError, r"\bclamp\b must be None or >= 0"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case, kwargs, error, names", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_bias_act_hostile_arguments_raise_naming_the_argument(backend, case, kwargs, error, names):
    x = torch.randn(2, 3)
    args = dict(x=x, b=torch.zeros(3), dim=1, act="lrelu")
    args.update(kwargs(x))
    with pytest.raises(error, match=names):
        bias_act(**args, backend=backend)
