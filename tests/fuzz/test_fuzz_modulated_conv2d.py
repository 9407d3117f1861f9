"""Fuzz modulated_conv2d and conv2d_resample (issue 26): every backend and dtype, random shapes /
layouts / kernel sizes (1 included) / up / down / padding / resample filters / demodulate /
flip_weight / fused_modconv / noise / the epilogue (bias, every activation, alpha, gain, clamp) /
fp16_safeguard against the float64 reference; non-finite inputs; hostile arguments."""
from __future__ import annotations

import functools
import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ganfast import backends
from ganfast.ops import conv2d_resample, modulated_conv2d, setup_filter
from ganfast.ops.bias_act.reference import ACTIVATIONS, activation
from tests.fuzz.harness import (check_nonfinite, check_op, fuzz_backends, fuzz_dtypes, fuzz_settings, layouts,
                                make_tensor, plant_nonfinite, NO_NEG_INF)

OP = "modulated_conv2d"
BACKENDS = fuzz_backends(OP)
ACTS = sorted(ACTIVATIONS)
FILTERS = {"none": None, "box2": [1, 1], "binomial3": [1, 2, 1], "stylegan": [1, 3, 3, 1]}
PADDINGS = (0, 1, 2, [1, 0], [1, 1, 2, 0], [0, 2, 1, 1], -1)


def _second_order(backend: str) -> bool:
    order = backends.op_grad_order(OP, backend)
    return order is None or order >= 2


def _output_size(c) -> tuple[int, int]:
    """(H', W') of a case, from the reference on a zero input (the sizes' definition); (0, 0)
    when the reference refuses the arguments (the test then checks the fast path refuses them)."""
    x = torch.zeros(1, 1, c["h"], c["w"], dtype=torch.float64)
    w = torch.zeros(1, 1, c["kh"], c["kw"], dtype=torch.float64)
    f = FILTERS[c["filter"]]
    try:
        y = modulated_conv2d(x, w, torch.ones(1, 1, dtype=torch.float64), up=c["up"], down=c["down"],
                             padding=c["padding"], resample_filter=None if f is None else setup_filter(f).double(),
                             demodulate=False, backend="reference")
    except (ValueError, RuntimeError):
        return 0, 0
    return tuple(y.shape[2:])


@st.composite
def _case(draw):
    backend = draw(st.sampled_from(BACKENDS))
    dtype = draw(st.sampled_from(fuzz_dtypes(OP, backend)))
    interpreted = backend == "triton"   # the Triton interpreter: smaller shapes
    sizes = (1, 2, 3, 4, 5) if interpreted else (1, 2, 3, 4, 5, 7, 8)
    channels = (1, 2, 3) if interpreted else (1, 2, 3, 5)
    c = dict(backend=backend, dtype=dtype,
             n=draw(st.sampled_from((0, 1, 2, 3) if not interpreted else (0, 1, 2))),
             cin=draw(st.sampled_from(channels)), cout=draw(st.sampled_from(channels)),
             h=draw(st.sampled_from(sizes)), w=draw(st.sampled_from(sizes)),
             kh=draw(st.sampled_from((1, 2, 3))), up=draw(st.sampled_from((1, 1, 2))),
             down=draw(st.sampled_from((1, 1, 2))), padding=draw(st.sampled_from(PADDINGS)),
             filter=draw(st.sampled_from(sorted(FILTERS))),
             x_layout=draw(layouts(4, broadcastable=True)), w_layout=draw(layouts(4)),
             s_layout=draw(layouts(2, broadcastable=True)),
             demodulate=draw(st.booleans()), flip_weight=draw(st.booleans()),
             fused_modconv=draw(st.sampled_from([None, True, False])),
             noise=draw(st.sampled_from(["none", "per_sample", "shared", "per_channel"])),
             has_bias=draw(st.booleans()), act=draw(st.sampled_from(ACTS)),
             alpha=draw(st.sampled_from([None, 0.2, 0.0, -0.3, 1.0])),
             gain=draw(st.sampled_from([1.0, math.sqrt(2), 0.5, -1.0])),
             clamp=draw(st.sampled_from([None, None, 0.5, 256.0])),
             fp16_safeguard=draw(st.sampled_from([None, True, False])), seed=draw(st.integers(0, 2**31 - 1)))
    c["kw"] = draw(st.sampled_from((1, 2, 3))) if draw(st.booleans()) else c["kh"]
    if not interpreted and draw(st.integers(0, 15)) == 0:
        c.update(n=1, cin=1, cout=1, h=181, w=173)   # a large plane (rare)
    return c


def _inputs(c, nonfinite=False):
    s, dtype = c["seed"], c["dtype"]
    n, cin, cout = c["n"], c["cin"], c["cout"]
    x = make_tensor(s, (n, cin, c["h"], c["w"]), c["x_layout"], dtype)
    weight = make_tensor(s + 1, (cout, cin, c["kh"], c["kw"]), c["w_layout"], dtype,
                         scale=1 / math.sqrt(cin * c["kh"] * c["kw"]))
    styles = make_tensor(s + 2, (n, cin), c["s_layout"], dtype, positive=True)
    oh, ow = _output_size(c)
    noise = {"none": None,
             "per_sample": lambda: make_tensor(s + 3, (n, 1, oh, ow), "contiguous", dtype, scale=0.3),
             "shared": lambda: make_tensor(s + 3, (1, 1, oh, ow), "slice", dtype, scale=0.3),
             "per_channel": lambda: make_tensor(s + 3, (1, cout, 1, 1), "contiguous", dtype, scale=0.3)}[c["noise"]]
    noise = noise() if noise is not None else None
    bias = make_tensor(s + 4, (cout,), "contiguous", dtype, scale=0.2) if c["has_bias"] else None
    f = FILTERS[c["filter"]]
    if nonfinite:
        kinds = NO_NEG_INF if c["act"] == "swish" and c["backend"] == "cpu" else (math.nan, math.inf, -math.inf)
        x = plant_nonfinite(x, s, kinds)
        if c["backend"] != "triton":
            # triton's fused convolution multiplies the zero padding by the modulated weights, so
            # a non-finite style or weight gives NaN (inf * 0) where torch's convolution, which
            # skips padded taps, stays finite: documented in modulated_conv2d's docstring
            weight = plant_nonfinite(weight, s + 1, kinds)
            styles = plant_nonfinite(styles, s + 2, kinds)
    elif (c["act"] in KINKED or c["clamp"] is not None) and n > 0 and oh > 0:
        noise = _noise_off_kinks(c, x, weight, styles, noise, bias)
    return dict(x=x, weight=weight, styles=styles, noise=noise, up=c["up"], down=c["down"], padding=c["padding"],
                resample_filter=None if f is None else setup_filter(f), demodulate=c["demodulate"],
                flip_weight=c["flip_weight"], fused_modconv=c["fused_modconv"], bias=bias, act=c["act"],
                alpha=c["alpha"], gain=c["gain"], clamp=c["clamp"], fp16_safeguard=c["fp16_safeguard"])


def _scaled_reference(**kwargs):
    """The reference in the formulation the fused backends compute (x * styles, one convolution,
    then * dcoef: fused_modconv=False), whatever the case asked of the reference. Its error in the
    dtype is the fused paths' budget: the grouped formulation sums in another order, which on a
    large plane is several times more (or less) accurate than the scaled one (seen: 1x1x181x173,
    elu, second-order weight gradient in float32, cpu 9.3e-4 against grouped 1.7e-4; the scaled
    reference's error is of the cpu's size)."""
    return modulated_conv2d(**dict(kwargs, fused_modconv=False), backend="reference")


# activations whose first or second derivative jumps at 0 (lrelu: unless alpha == 1; elu: f'')
KINKED = ("relu", "lrelu", "elu", "selu")


def _noise_off_kinks(c, x, weight, styles, noise, bias):
    """A noise input (widened to the full [N, Cout, H', W'] where it must be) that moves every
    pre-activation z away from the activation's kink at 0 and every output away from +-clamp.
    There a derivative jumps, and a fast path that rounds z differently (its own summation order)
    may take the other side than the float64 oracle; both are right for their z. The tests in
    tests/ops pin the kinks themselves. Noise is added right before the epilogue, so it moves z
    without touching the convolution."""
    f = FILTERS[c["filter"]]
    with torch.no_grad():
        a = modulated_conv2d(x.double(), weight.double(), styles.double(), up=c["up"], down=c["down"],
                             padding=c["padding"], resample_filter=None if f is None else setup_filter(f).double(),
                             demodulate=c["demodulate"], flip_weight=c["flip_weight"],
                             fp16_safeguard=c["fp16_safeguard"] if c["fp16_safeguard"] is not None else
                             (x.dtype == torch.float16 and c["demodulate"]), backend="reference")
    rest = ((noise.double() if noise is not None else 0)
            + (bias.double().reshape(1, -1, 1, 1) if bias is not None else 0))
    spec = ACTIVATIONS[c["act"]]
    alpha = spec.def_alpha if c["alpha"] is None else c["alpha"]
    tol = 32 * torch.finfo(x.dtype).eps * (1 + a.abs())
    nudge = torch.zeros_like(a)
    for _ in range(12):
        z = a + rest + nudge
        bad = torch.zeros_like(z, dtype=torch.bool)
        if c["act"] in KINKED:
            bad |= z.abs() < tol
        if c["clamp"] is not None:
            y = activation(z, c["act"], alpha) * c["gain"]
            bad |= (y.abs() - c["clamp"]).abs() < tol * max(1.0, c["clamp"])
        if not bool(bad.any()):
            break
        nudge = torch.where(bad, nudge + 0.25, nudge)
    if not bool(nudge.any()):
        return noise
    full = (noise.double() if noise is not None else torch.zeros((), dtype=torch.float64)) + nudge
    return full.to(x.dtype)


@fuzz_settings(120)
@given(c=_case())
def test_fuzz_modulated_conv2d(c):
    reference = (functools.partial(modulated_conv2d, backend="reference") if c["backend"] == "reference"
                 else _scaled_reference)
    check_op(OP, functools.partial(modulated_conv2d, backend=c["backend"]), reference, _inputs(c), dtype=c["dtype"],
             diff=("x", "weight", "styles", "noise", "bias"), second_order=_second_order(c["backend"]),
             seed=c["seed"], backend=c["backend"])


@fuzz_settings(80)
@given(c=_case())
def test_fuzz_modulated_conv2d_nonfinite(c):
    # the two reference formulations spread non-finite styles differently (see modulated_conv2d's
    # docstring); the fused backends follow the scaled one
    reference = (functools.partial(modulated_conv2d, backend="reference") if c["backend"] == "reference"
                 else _scaled_reference)
    check_nonfinite(OP, functools.partial(modulated_conv2d, backend=c["backend"]), reference,
                    _inputs(c, nonfinite=True), dtype=c["dtype"], backend=c["backend"])


@st.composite
def _resample_case(draw):
    backend = draw(st.sampled_from(fuzz_backends("upfirdn2d")))   # conv2d_resample's resampling
    dtype = draw(st.sampled_from(fuzz_dtypes("upfirdn2d", backend)))
    interpreted = backend == "triton"
    groups = draw(st.sampled_from((1, 1, 2, 3)))
    return dict(backend=backend, dtype=dtype, n=draw(st.sampled_from((0, 1, 2))),
                cin=groups * draw(st.sampled_from((1, 2))), cout=groups * draw(st.sampled_from((1, 2))), groups=groups,
                h=draw(st.sampled_from((1, 2, 3, 5) if interpreted else (1, 2, 3, 5, 8))),
                w=draw(st.sampled_from((1, 2, 3, 4))), kh=draw(st.sampled_from((1, 2, 3))),
                kw=draw(st.sampled_from((1, 2, 3))), up=draw(st.sampled_from((1, 2))),
                down=draw(st.sampled_from((1, 2))),
                padding=draw(st.sampled_from(PADDINGS)), filter=draw(st.sampled_from(sorted(FILTERS))),
                layout=draw(layouts(4, broadcastable=True)), flip_weight=draw(st.booleans()),
                flip_filter=draw(st.booleans()), seed=draw(st.integers(0, 2**31 - 1)))


@fuzz_settings(150)
@given(c=_resample_case())
def test_fuzz_conv2d_resample(c):
    s = c["seed"]
    f = FILTERS[c["filter"]]
    inputs = dict(x=make_tensor(s, (c["n"], c["cin"], c["h"], c["w"]), c["layout"], c["dtype"]),
                  w=make_tensor(s + 1, (c["cout"], c["cin"] // c["groups"], c["kh"], c["kw"]), "contiguous",
                                c["dtype"]),
                  f=None if f is None else setup_filter(f), up=c["up"], down=c["down"], padding=c["padding"],
                  groups=c["groups"], flip_weight=c["flip_weight"], flip_filter=c["flip_filter"])
    check_op("conv2d_resample", functools.partial(conv2d_resample, backend=c["backend"]),
             functools.partial(conv2d_resample, backend="reference"), inputs, dtype=c["dtype"], diff=("x", "w"),
             second_order=True, seed=s, backend=c["backend"])


def _good():
    return dict(x=torch.randn(2, 3, 6, 6), weight=torch.randn(4, 3, 3, 3), styles=torch.ones(2, 3), padding=1)


# (case, keyword arguments replacing the good ones, exception, what the message must name)
HOSTILE = [
    ("x of rank 3", dict(x=torch.randn(3, 6, 6)), ValueError, r"\bx\b must be a floating \[N, Cin, H, W\]"),
    ("integer x", dict(x=torch.ones(2, 3, 6, 6, dtype=torch.long)), ValueError, r"\bx\b must be a floating"),
    ("weight of the wrong Cin", dict(weight=torch.randn(4, 2, 3, 3)), ValueError, r"\bweight\b must be \[Cout, 3"),
    ("weight of rank 2", dict(weight=torch.randn(4, 3)), ValueError, r"\bweight\b must be"),
    ("styles of the wrong size", dict(styles=torch.ones(2, 4)), ValueError, r"\bstyles\b must be \[2, 3\]"),
    ("bias of the wrong size", dict(bias=torch.zeros(3)), ValueError, r"\bbias\b must be \[4\]"),
    ("weight on the meta device", dict(weight=torch.randn(4, 3, 3, 3, device="meta")), ValueError,
     r"\bweight\b must be on"),
    ("styles on the meta device", dict(styles=torch.ones(2, 3, device="meta")), ValueError, r"\bstyles\b must be on"),
    ("noise on the meta device", dict(noise=torch.ones(2, 1, 6, 6, device="meta")), ValueError,
     r"\bnoise\b must be on"),
    ("up of zero", dict(up=0), ValueError, r"\bup\b must be an int >= 1"),
    ("down of 1.5", dict(down=1.5), ValueError, r"\bdown\b must be an int >= 1"),
    ("negative clamp", dict(clamp=-3.0), ValueError, r"\bclamp\b must be None or >= 0"),
    ("unknown activation", dict(act="gelu"), ValueError, r"\bact\b must be one of"),
    ("padding of three values", dict(padding=[1, 2, 3]), ValueError, r"\bpadding\b must be"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case, kwargs, error, names", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_modulated_conv2d_hostile_arguments_raise_naming_the_argument(backend, case, kwargs, error, names):
    args = _good()
    args.update(kwargs)
    with pytest.raises(error, match=names):
        modulated_conv2d(**args, backend=backend)


@pytest.mark.parametrize("backend", fuzz_backends("upfirdn2d"))
@pytest.mark.parametrize("kwargs, names", [
    (dict(x=torch.randn(3, 6, 6)), r"\bx\b must be a floating \[N, C, H, W\]"),
    (dict(w=torch.randn(4, 2, 3, 3)), r"\bw\b must be \[Cout, 3"),
    (dict(up=0), r"\bup\b must be an int >= 1"),
])
def test_conv2d_resample_hostile_arguments_raise_naming_the_argument(backend, kwargs, names):
    args = dict(x=torch.randn(2, 3, 6, 6), w=torch.randn(4, 3, 3, 3))
    args.update(kwargs)
    with pytest.raises(ValueError, match=names):
        conv2d_resample(**args, backend=backend)
