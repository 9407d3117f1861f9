"""Fuzz upfirdn2d (issue 26): every backend and dtype, random shapes / layouts / up / down /
padding (negative: crops) / filters (none, one tap, separable, 2-D) / flip_filter / gain against the
float64 reference; non-finite inputs; hostile arguments."""
from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ganfast import backends
from ganfast.ops import upfirdn2d
from tests.fuzz.harness import (check_nonfinite, check_op, fuzz_backends, fuzz_dtypes, fuzz_settings, layouts,
                                make_tensor, plant_nonfinite)

OP = "upfirdn2d"
BACKENDS = fuzz_backends(OP)
SIZES = (1, 2, 3, 5, 7, 13)


@st.composite
def _pair_or_int(draw, values):
    if draw(st.booleans()):
        return draw(st.sampled_from(values))
    return [draw(st.sampled_from(values)), draw(st.sampled_from(values))]


@st.composite
def _case(draw):
    backend = draw(st.sampled_from(BACKENDS))
    dtype = draw(st.sampled_from(fuzz_dtypes(OP, backend)))
    interpreted = backend == "triton"   # the Triton interpreter: smaller shapes
    sizes = SIZES[:4] if interpreted else SIZES
    if draw(st.integers(0, 15)) == 0:
        shape = (1, 1, 41, 37) if interpreted else (1, 1, 181, 173)   # a large plane (rare)
    else:
        shape = (draw(st.sampled_from((0, 1, 2, 3))), draw(st.sampled_from((0, 1, 2, 3, 5))),
                 draw(st.sampled_from(sizes)), draw(st.sampled_from(sizes)))
    kind = draw(st.sampled_from(["none", "one_tap", "separable", "2d"]))
    if kind == "separable":
        f_shape = (draw(st.integers(1, 8)),)
    elif kind == "2d":
        f_shape = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    else:
        f_shape = {"none": None, "one_tap": (1,)}[kind]
    pad = draw(st.sampled_from(["int", "pair", "quad"]))
    pads = range(-3, 5)
    padding = {"int": draw(st.sampled_from(pads)),
               "pair": [draw(st.sampled_from(pads)) for _ in range(2)],
               "quad": [draw(st.sampled_from(pads)) for _ in range(4)]}[pad]
    return dict(backend=backend, dtype=dtype, shape=shape, layout=draw(layouts(4, broadcastable=True)),
                f_shape=f_shape, f_dtype=draw(st.sampled_from([torch.float32, torch.float64, dtype])),
                up=draw(_pair_or_int((1, 1, 2, 3, 4))), down=draw(_pair_or_int((1, 1, 2, 3))), padding=padding,
                flip_filter=draw(st.booleans()), gain=draw(st.sampled_from([1.0, 0.5, 4.0, -2.0])),
                seed=draw(st.integers(0, 2**31 - 1)))


def _inputs(c, nonfinite=False):
    x = make_tensor(c["seed"], c["shape"], c["layout"], c["dtype"])
    f = make_tensor(c["seed"] + 1, c["f_shape"], "contiguous", c["f_dtype"]) if c["f_shape"] else None
    if nonfinite:
        x = plant_nonfinite(x, c["seed"])
    return dict(x=x, f=f, up=c["up"], down=c["down"], padding=c["padding"], flip_filter=c["flip_filter"],
                gain=c["gain"])


@fuzz_settings(300)
@given(c=_case())
def test_fuzz_upfirdn2d(c):
    # the fused backends take the filter as a constant; only the reference differentiates it
    diff = ("x", "f") if c["backend"] == "reference" else ("x",)
    order = backends.op_grad_order(OP, c["backend"])
    check_op(OP, functools.partial(upfirdn2d, backend=c["backend"]), functools.partial(upfirdn2d, backend="reference"),
             _inputs(c), dtype=c["dtype"], diff=diff, second_order=order is None or order >= 2, seed=c["seed"],
             backend=c["backend"])


@fuzz_settings(100)
@given(c=_case())
def test_fuzz_upfirdn2d_nonfinite(c):
    check_nonfinite(OP, functools.partial(upfirdn2d, backend=c["backend"]),
                    functools.partial(upfirdn2d, backend="reference"), _inputs(c, nonfinite=True), dtype=c["dtype"],
                    backend=c["backend"])


# (case, keyword arguments replacing the good ones, exception, what the message must name)
HOSTILE = [
    ("x of rank 3", dict(x=torch.ones(3, 8, 8)), ValueError, r"\bx\b must be \[N, C, H, W\]"),
    ("integer x", dict(x=torch.ones(1, 3, 8, 8, dtype=torch.long)), ValueError, r"\bx\b must be \[N, C, H, W\]"),
    ("3-D filter", dict(f=torch.ones(2, 2, 2)), ValueError, r"\bf\b must be None, a \[taps\] or a \[fh, fw\]"),
    ("empty filter", dict(f=torch.ones(0)), ValueError, r"\bf\b must have at least one tap"),
    ("filter on the meta device", dict(f=torch.ones(3, device="meta")), ValueError, r"\bf\b must be on"),
    ("up of zero", dict(up=0), ValueError, r"\bup\b must be >= 1"),
    ("down of three values", dict(down=[1, 2, 3]), ValueError, r"\bdown\b must be an int or a pair"),
    ("padding of three values", dict(padding=[1, 2, 3]), ValueError, r"\bpadding\b must be an int"),
    ("crop to nothing", dict(padding=-5), ValueError, r"output would be empty"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case, kwargs, error, names", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_upfirdn2d_hostile_arguments_raise_naming_the_argument(backend, case, kwargs, error, names):
    args = dict(x=torch.randn(1, 3, 8, 8), f=torch.ones(3))
    args.update(kwargs)
    with pytest.raises(error, match=names):
        upfirdn2d(**args, backend=backend)


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "reference"])
def test_upfirdn2d_filter_gradient_on_a_fused_backend_names_f(backend):
    with pytest.raises(backends.BackendNotSupported, match=r"gradient with respect to f"):
        upfirdn2d(torch.randn(1, 3, 8, 8), torch.ones(3, requires_grad=True), backend=backend)
