"""Fuzz adain_noise (issue 26): every backend and dtype, random shapes / layouts / noise kinds /
noise strengths / bias / activations / alpha / gain / eps against the float64 reference;
non-finite inputs; hostile arguments."""
from __future__ import annotations

import functools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ganfast import backends
from ganfast.ops import adain_noise, draw_noise
from ganfast.ops.bias_act.reference import ACTIVATIONS
from tests.fuzz.harness import (check_nonfinite, check_op, fuzz_backends, fuzz_dtypes, fuzz_settings, lay_out, layouts,
                                make_tensor, plant_nonfinite)

OP = "adain_noise"
BACKENDS = fuzz_backends(OP)
ACTS = sorted(ACTIVATIONS)
SIZES = (1, 1, 2, 3, 4, 5, 7, 13)
NOISE_KINDS = ("none", "per_sample", "shared", "plane", "seed")
STRENGTHS = ("none", "float", "scalar_tensor", "per_channel")


@st.composite
def _case(draw):
    backend = draw(st.sampled_from(BACKENDS))
    dtype = draw(st.sampled_from(fuzz_dtypes(OP, backend)))
    interpreted = backend == "triton"   # the Triton interpreter: ~0.1 s a launch, smaller shapes
    sizes = SIZES[:6] if interpreted else SIZES
    if draw(st.integers(0, 15)) == 0:
        # a large plane (rare): past every fused tile (the interpreter's: just past one). Several
        # planes, not one: the per-plane sums (style gradients) cancel heavily, and the error of
        # one such sum is as likely to be small by luck for the reference as for any fast path
        # (67x67, fp32: median 6e-6 for the reference, cpu and triton alike); the rule compares
        # the largest error over the output, which needs more than one sample to mean much
        shape = (1, 2, 65, 65) if interpreted else (2, 2, 181, 173)
    else:
        # batch and channels may be empty; a plane of one pixel has variance 0 (out = style_bias)
        n, c = draw(st.sampled_from((0,) + sizes[:4])), draw(st.sampled_from((0,) + sizes))
        shape = (n, c, draw(st.sampled_from(sizes)), draw(st.sampled_from(sizes)))
    small = draw(st.sampled_from([dtype, torch.float32]))   # styles / bias: x's dtype or float32
    return dict(
        backend=backend, dtype=dtype, shape=shape, small_dtype=small,
        x_layout=draw(layouts(4, broadcastable=True)), s_layout=draw(layouts(2, broadcastable=True)),
        t_layout=draw(layouts(2)), noise_layout=draw(layouts(4)),
        noise=draw(st.sampled_from(NOISE_KINDS)), strength=draw(st.sampled_from(STRENGTHS)),
        has_bias=draw(st.booleans()), act=draw(st.sampled_from(ACTS)),
        alpha=draw(st.sampled_from([0.2, 0.0, 1.0, -0.3])), gain=draw(st.sampled_from([1.0, 1.41, -0.7, 0.0])),
        eps=draw(st.sampled_from([1e-8, 1e-5, 0.1, 3.0])), seed=draw(st.integers(0, 2**31 - 1)))


def _off_kink(x, noise, strength, bias, seed, eps_dtype):
    """x (contiguous) with every element whose pre-activation z = x + strength * noise + bias lies
    near 0 moved away: lrelu, relu, elu (alpha != 1) and selu have a derivative that jumps there,
    and a fast path that rounds z differently (fp32 fma, noise drawn in fp32) may take the other
    branch than the float64 oracle; both are right for their own z (tests/ops pins the kinks)."""
    n, c, h, w = x.shape
    if noise is None and seed is not None:
        noise = draw_noise(seed, n, h, w, dtype=torch.float64)
    z_rest = torch.zeros((), dtype=torch.float64)
    if noise is not None:
        nz = noise.double().reshape(-1, 1, h, w)
        st_ = 1.0 if strength is None else (strength if isinstance(strength, float) else strength.double())
        z_rest = z_rest + nz * (st_.reshape(-1, 1, 1) if isinstance(st_, torch.Tensor) else st_)
    if bias is not None:
        z_rest = z_rest + bias.double().reshape(1, c, 1, 1)
    tol = 8 * torch.finfo(eps_dtype).eps * (2 + z_rest.abs())
    for _ in range(10):
        bad = (x.double() + z_rest).abs() < tol
        if not bool(bad.any()):
            break
        x = torch.where(bad, x + 0.3125, x)
    return x


def _inputs(c, nonfinite=False):
    dtype, small = c["dtype"], c["small_dtype"]
    n, ch, h, w = c["shape"]
    s = c["seed"]
    x = make_tensor(s, c["shape"], "contiguous", dtype, scale=2.0)
    scale = make_tensor(s + 1, (n, ch), c["s_layout"], small)
    bias_t = make_tensor(s + 2, (n, ch), c["t_layout"], small)
    noise, seed = None, None
    if c["noise"] == "per_sample":
        noise = make_tensor(s + 3, (n, 1, h, w), c["noise_layout"], dtype)
    elif c["noise"] == "shared":
        noise = make_tensor(s + 3, (1, 1, h, w), c["noise_layout"], dtype)
    elif c["noise"] == "plane":
        noise = make_tensor(s + 3, (h, w), "transpose" if c["noise_layout"] == "transpose" else "contiguous", dtype)
    elif c["noise"] == "seed":
        seed = s
    strength = {"none": None, "float": 0.7,
                "scalar_tensor": make_tensor(s + 4, (), "contiguous", small),
                "per_channel": make_tensor(s + 4, (ch,), "slice", small)}[c["strength"]]
    bias = make_tensor(s + 5, (ch,), "contiguous", small, scale=0.5) if c["has_bias"] else None
    if not nonfinite:
        x = _off_kink(x, noise, strength, bias, seed, dtype)
    x = lay_out(x, c["x_layout"])
    if nonfinite:
        x = plant_nonfinite(x, s)
        scale = plant_nonfinite(scale, s + 1)
        if noise is not None:
            noise = plant_nonfinite(noise, s + 3)
    return dict(x=x, style_scale=scale, style_bias=bias_t, noise=noise, noise_strength=strength, bias=bias,
                act=c["act"], alpha=c["alpha"], gain=c["gain"], eps=c["eps"], seed=seed)


@fuzz_settings(120)
@given(c=_case())
def test_fuzz_adain_noise(c):
    order = backends.op_grad_order(OP, c["backend"])
    check_op(OP, functools.partial(adain_noise, backend=c["backend"]),
             functools.partial(adain_noise, backend="reference"),
             _inputs(c), dtype=c["dtype"], diff=("x", "style_scale", "style_bias", "noise", "noise_strength", "bias"),
             second_order=order is None or order >= 2, seed=c["seed"], backend=c["backend"])


@fuzz_settings(120)
@given(c=_case())
def test_fuzz_adain_noise_nonfinite(c):
    check_nonfinite(OP, functools.partial(adain_noise, backend=c["backend"]),
                    functools.partial(adain_noise, backend="reference"), _inputs(c, nonfinite=True), dtype=c["dtype"],
                    backend=c["backend"])


# (case, keyword arguments replacing the good ones, exception, what the message must name)
HOSTILE = [
    ("x of rank 3", lambda a: dict(x=a["x"][0]), ValueError, r"\bx\b must be a floating \[N, C, H, W\]"),
    ("integer x", lambda a: dict(x=a["x"].long()), ValueError, r"\bx\b must be a floating"),
    ("style_scale of the wrong size", lambda a: dict(style_scale=torch.ones(2, 4)), ValueError,
     r"style_scale must have shape \[2, 3\]"),
    ("style_bias of the wrong rank", lambda a: dict(style_bias=torch.ones(6)), ValueError,
     r"style_bias must have shape \[2, 3\]"),
    ("integer style_scale", lambda a: dict(style_scale=torch.ones(2, 3, dtype=torch.long)), TypeError,
     r"style_scale must be a floating"),
    ("style_bias on the meta device", lambda a: dict(style_bias=torch.ones(2, 3, device="meta")), ValueError,
     r"style_bias must be on"),
    ("bias of the wrong size", lambda a: dict(bias=torch.ones(4)), ValueError, r"\bbias\b must have shape \[3\]"),
    ("noise of the wrong plane", lambda a: dict(noise=torch.ones(2, 1, 4, 4)), ValueError,
     r"\bnoise\b must have shape"),
    ("noise with channels", lambda a: dict(noise=torch.ones(2, 3, 4, 5)), ValueError, r"\bnoise\b must have shape"),
    ("noise on the meta device", lambda a: dict(noise=torch.ones(2, 1, 4, 5, device="meta")), ValueError,
     r"\bnoise\b must be on"),
    ("noise_strength of the wrong size", lambda a: dict(noise=torch.ones(4, 5), noise_strength=torch.ones(2)),
     ValueError, r"noise_strength must be"),
    ("noise and seed", lambda a: dict(noise=torch.ones(4, 5), seed=3), ValueError, r"\bnoise\b or \bseed\b"),
    ("negative seed", lambda a: dict(seed=-1), ValueError, r"\bseed\b must be an int"),
    ("eps of zero", lambda a: dict(eps=0.0), ValueError, r"\beps\b must be > 0"),
    ("unknown activation", lambda a: dict(act="gelu"), ValueError, r"\bact\b must be one of"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case, kwargs, error, names", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_adain_noise_hostile_arguments_raise_naming_the_argument(backend, case, kwargs, error, names):
    args = dict(x=torch.randn(2, 3, 4, 5), style_scale=torch.ones(2, 3), style_bias=torch.zeros(2, 3))
    args.update(kwargs(args))
    with pytest.raises(error, match=names):
        adain_noise(**args, backend=backend)
