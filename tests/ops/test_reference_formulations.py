"""The rewritten references against their old formulations (tests/ops/reference_v0.py).

bias_act, adain_noise, conditional_batch_norm and self_attention2d had their plain-PyTorch
reference rewritten into a faster formulation of the same computation (gain folded before the
activation, in-place activations on owned temporaries, F.layer_norm / F.batch_norm, 1x1 conv
projections, gamma folded into w_o). Each must compute what its v0 computed: in float64 on fresh
random inputs, the values, the first derivatives of every floating input and the second
derivatives (of a random-weighted sum of the first) agree to rounding (the float64 floor of
ganfast.testing, 1e-10 x the largest magnitude), over every branch the rewrite touched. The caller's
tensors are never written, and in fp32 / bf16 the new reference with upcast stays within the
accuracy rule of v0 computed in float64.
"""
from __future__ import annotations

import math
import os
import zlib

import pytest
import torch

from ganfast.ops.adain_noise.reference import adain_noise_ref
from ganfast.ops.bias_act.reference import bias_act_ref
from ganfast.ops.conditional_batch_norm.reference import conditional_batch_norm_ref
from ganfast.ops.self_attention.reference import self_attention2d_ref
from ganfast.testing import assert_matches_oracle

from .reference_v0 import (adain_noise_ref_v0, bias_act_ref_v0, conditional_batch_norm_ref_v0,
                           self_attention2d_ref_v0)

F64 = torch.float64
SMOKE_DTYPES = [torch.float32, torch.bfloat16]


def _gen(*key) -> torch.Generator:
    """A generator seeded by the case (and GANFAST_TEST_SEED, as the global seed in conftest)."""
    seed = zlib.crc32(repr(key).encode()) ^ int(os.environ.get("GANFAST_TEST_SEED", "0"))
    return torch.Generator().manual_seed(seed)


def _randn(g: torch.Generator, *shape, scale: float = 1.0, dtype=F64) -> torch.Tensor:
    return (torch.randn(shape, generator=g, dtype=F64) * scale).to(dtype)


def _derivatives(fn, inputs: dict, g: torch.Generator) -> dict:
    """{"y", "d/d<name>", "d2/d<name>"}: fn(**leaves), the first derivatives of every input for a
    random cotangent (create_graph) and the derivatives of a random-weighted sum of those."""
    leaves = {k: v.detach().clone().requires_grad_() for k, v in inputs.items()}
    y = fn(**leaves)
    for k, v in leaves.items():   # a leaf written in place would have raised; this pins the values
        assert torch.equal(v.detach(), inputs[k]), f"{k} was modified in place"
    cot = _randn(g, *y.shape)
    ts = list(leaves.values())
    first = torch.autograd.grad(y, ts, cot, create_graph=True, allow_unused=True, materialize_grads=True)
    loss = sum((d * _randn(g, *d.shape)).sum() for d in first)
    if loss.requires_grad:
        second = torch.autograd.grad(loss, ts, allow_unused=True, materialize_grads=True)
    else:   # the first derivatives no longer depend on the inputs (linear in all of them)
        second = [torch.zeros_like(t) for t in ts]
    out = {"y": y.detach()}
    for k, d1, d2 in zip(leaves, first, second):
        out[f"d/d{k}"], out[f"d2/d{k}"] = d1.detach(), d2.detach()
    return out


def _assert_same_computation(new, old, inputs: dict, key, name: str, skip: tuple = ()) -> dict:
    """new and old agree in float64: values, first and second derivatives of every input (but the
    keys in skip, or starting with one). Returns new's {"y", "d/d<name>", "d2/d<name>"}."""
    assert all(t.dtype == F64 for t in inputs.values())
    got = _derivatives(new, inputs, _gen("cotangents", key))
    want = _derivatives(old, inputs, _gen("cotangents", key))
    for k in want:
        if not k.startswith(skip):
            assert_matches_oracle(got[k], want[k], dtype=F64, name=f"{name} {k}")
    return got


def _assert_not_written(fn, inputs: dict) -> None:
    """fn(**inputs) without autograd leaves every input as it was (the in-place paths own their tensors)."""
    before = {k: v.clone() for k, v in inputs.items()}
    fn(**inputs)
    for k, v in inputs.items():
        assert torch.equal(v, before[k]), f"the caller's {k} was modified in place"


# ---------------------------------------------------------------- bias_act

# (act, alpha): the positively homogeneous acts take the gain fold; lrelu with a slope <= 0 may not
# run in place; tanh and swish keep the gain after the activation.
BIAS_ACTS = [
    pytest.param("linear", 0.0, id="linear"),
    pytest.param("relu", 0.0, id="relu"),
    pytest.param("lrelu", 0.2, id="lrelu0.2"),
    pytest.param("lrelu", -0.1, id="lrelu-0.1"),     # negative slope: in-place refused
    pytest.param("lrelu", 0.0, id="lrelu0"),         # zero slope: in-place refused
    pytest.param("tanh", 0.0, id="tanh"),
    pytest.param("swish", 0.0, id="swish"),
]
GAINS = [
    pytest.param(1.0, id="g1"),                      # no gain: nothing folded
    pytest.param(math.sqrt(2), id="gsqrt2"),         # the StyleGAN default: folded
    pytest.param(0.5, id="g0.5"),                    # gain < 1: folded
    pytest.param(-1.0, id="g-1"),                    # negative gain: act(-z) != -act(z), must not fold
]
# (shape, dim, layout) of x; the bias runs along dim.
BIAS_LAYOUTS = [
    ((3, 5, 7, 9), 1, "contiguous"),                 # odd C and plane
    ((3, 5, 1, 1), 1, "contiguous"),                 # 1x1 planes
    ((3, 5, 7, 9), 2, "transposed"),                 # bias along H, x a non-contiguous view
]


def _bias_act_x(g, shape, layout):
    if layout == "transposed":
        return _randn(g, shape[0], shape[3], shape[2], shape[1], scale=2.0).transpose(1, 3)
    return _randn(g, *shape, scale=2.0)


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("clamp", [-1.0, 0.7], ids=["noclamp", "clamp0.7"])
@pytest.mark.parametrize("gain", GAINS)
@pytest.mark.parametrize("act, alpha", BIAS_ACTS)
def test_bias_act_ref_equals_v0(act, alpha, gain, clamp, with_bias):
    for shape, dim, layout in BIAS_LAYOUTS:
        key = ("bias_act", act, alpha, gain, clamp, with_bias, shape, dim)
        g = _gen(key)
        inputs = {"x": _bias_act_x(g, shape, layout)}
        if with_bias:
            inputs["b"] = _randn(g, shape[dim], scale=0.5)
        kw = dict(dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)
        name = f"bias_act {act}({alpha}) gain={gain} clamp={clamp} {layout}{shape} dim={dim}"
        _assert_same_computation(lambda x, b=None: bias_act_ref(x, b, **kw),
                                 lambda x, b=None: bias_act_ref_v0(x, b, **kw), inputs, key, name)
        # Without autograd nothing may be overwritten; without b, z is the caller's x itself.
        _assert_not_written(lambda x, b=None: bias_act_ref(x, b, **kw), inputs)
        if with_bias:
            _assert_not_written(lambda x: bias_act_ref(x, None, **kw), {"x": inputs["x"]})


@pytest.mark.parametrize("dtype", SMOKE_DTYPES)
@pytest.mark.parametrize("act, alpha, gain", [("lrelu", 0.2, math.sqrt(2)), ("relu", 0.0, -1.0), ("swish", 0.0, 0.5)])
def test_bias_act_ref_upcast_within_dtype_tolerance_of_v0(dtype, act, alpha, gain):
    g = _gen("bias_act smoke", dtype, act, gain)
    x, b = _randn(g, 3, 5, 7, 9, scale=2.0, dtype=dtype), _randn(g, 5, scale=0.5, dtype=dtype)
    kw = dict(dim=1, act=act, alpha=alpha, gain=gain, clamp=-1.0)
    x0 = x.clone()
    got = bias_act_ref(x, b, **kw, upcast=True)
    assert torch.equal(x, x0) and got.dtype == dtype
    assert_matches_oracle(got, bias_act_ref_v0(x.double(), b.double(), **kw),
                          bias_act_ref_v0(x, b, **kw, upcast=True), dtype=dtype, name=f"bias_act {act} upcast")


# ---------------------------------------------------------------- adain_noise

N, C, H, W = 3, 5, 7, 9

NOISE_KINDS = [
    pytest.param("none", id="nonoise"),
    pytest.param("plain", id="noise"),               # noise without strength: z + noise
    pytest.param("strength", id="noise_strength"),   # addcmul(z, noise, strength)
]
ADAIN_ACTS = [
    pytest.param("linear", 0.0, 1.0, id="linear"),
    pytest.param("lrelu", 0.2, math.sqrt(2), id="lrelu0.2-gsqrt2"),   # in place when z is owned
    pytest.param("lrelu", -0.1, 1.0, id="lrelu-0.1"),                 # in place refused
    pytest.param("relu", 0.0, 0.5, id="relu-g0.5"),
    pytest.param("tanh", 0.0, -1.5, id="tanh-g-1.5"),
]


def _adain_inputs(g, n, c, h, w, noise, with_bias):
    inputs = {"x": _randn(g, n, c, h, w), "style_scale": _randn(g, n, c) + 1, "style_bias": _randn(g, n, c)}
    if noise != "none":
        inputs["noise"] = _randn(g, n, 1, h, w)
    if noise == "strength":
        inputs["noise_strength"] = _randn(g, c, scale=0.3)
    if with_bias:
        inputs["bias"] = _randn(g, c, scale=0.5)
    return inputs


@pytest.mark.parametrize("hw", [(H, W), (1, 1)], ids=["7x9", "1x1"])
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("noise", NOISE_KINDS)
@pytest.mark.parametrize("act, alpha, gain", ADAIN_ACTS)
def test_adain_noise_ref_equals_v0(act, alpha, gain, noise, with_bias, hw):
    key = ("adain", act, alpha, gain, noise, with_bias, hw)
    inputs = _adain_inputs(_gen(key), N, C, *hw, noise, with_bias)
    kw = dict(act=act, alpha=alpha, gain=gain)
    _assert_same_computation(lambda **t: adain_noise_ref(**t, **kw), lambda **t: adain_noise_ref_v0(**t, **kw),
                             inputs, key, f"adain_noise {act}({alpha}) gain={gain} noise={noise} bias={with_bias} {hw}")
    _assert_not_written(lambda **t: adain_noise_ref(**t, **kw), inputs)


def _constant_plane_inputs(key, with_bias, dyadic):
    """adain inputs without noise whose every (n, c) plane of x is constant: random values, or
    multiples of 1/8 (with such a bias too) that every formulation's plane mean gets exactly."""
    g = _gen(key)
    inputs = _adain_inputs(g, N, C, H, W, "none", with_bias)
    if dyadic:
        plane = torch.randint(-16, 17, (N, C, 1, 1), generator=g).to(F64) / 8
        if with_bias:
            inputs["bias"] = torch.randint(-8, 9, (C,), generator=g).to(F64) / 8
    else:
        plane = _randn(g, N, C, 1, 1, scale=3.0)
    inputs["x"] = plane.expand(N, C, H, W).contiguous()
    return inputs


def _assert_style_bias(out, style_bias):
    # y - mean(y) == 0 on a constant plane: out == style_bias. The new reference centres before it
    # scales, so only ulps of style_bias remain; a y * k + (t - mean * k) normalization would leave
    # ~rstd = 1e4 ulps of y (and v0's rounded mean leaves ~1e-12).
    t = style_bias[:, :, None, None].expand_as(out)
    torch.testing.assert_close(out, t, rtol=0, atol=16 * torch.finfo(F64).eps * float(t.abs().max()))


def _assert_bias_gradient_cancels(got: dict, order: str) -> None:
    """On constant planes d/dbias (order "d/d") and d2/dbias ("d2/d"), sums over (N, H, W) of the
    x-derivatives, are 0 by definition (the normalization's gradient has zero mean over a plane):
    zero to the rounding of summing those ~rstd-sized terms, which may take either sign."""
    bound = 8 * torch.finfo(F64).eps * got[f"{order}x"].abs().sum(dim=(0, 2, 3))
    d = got[f"{order}bias"]
    assert (d.abs() <= bound).all(), f"{order}bias {d.tolist()} not within {bound.tolist()} of 0"


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("act, alpha, gain", ADAIN_ACTS)
def test_adain_noise_ref_constant_plane_gives_style_bias(act, alpha, gain, with_bias):
    # Random plane values, where v0's plane mean misses y by an ulp: what is 0 by definition v0
    # gets as rstd-amplified rounding, the new reference as 0 or the rounding of a cancelling sum.
    # d/dstyle_scale = sum(dy * yhat): v0 ~ rstd = 1e4 ulps (1e-10 here), new exactly 0. d/dbias =
    # the sum of d/dx over (N, H, W), whose ~1e4-sized terms cancel: both ~1e-10, either sign.
    # The x-x part of the second derivatives, rstd^3 (y - mean(y)) terms: v0 ~ 1e12 ulps (1e-4, 5e-9
    # of the mixed terms beside it), new exactly 0. Those are held to the definition; the rest
    # equals v0's. The dyadic test below compares every order.
    key = ("adain constant", act, alpha, gain, with_bias)
    inputs = _constant_plane_inputs(key, with_bias, dyadic=False)
    kw = dict(act=act, alpha=alpha, gain=gain)
    got = _assert_same_computation(lambda **a: adain_noise_ref(**a, **kw), lambda **a: adain_noise_ref_v0(**a, **kw),
                                   inputs, key, f"adain_noise constant plane {act} gain={gain}",
                                   skip=("d2/", "d/dstyle_scale", "d/dbias"))
    _assert_style_bias(got["y"], inputs["style_bias"])
    torch.testing.assert_close(got["d/dstyle_scale"], torch.zeros(N, C, dtype=F64), rtol=0, atol=1e-13)
    if with_bias:
        _assert_bias_gradient_cancels(got, "d/d")


# Acts and gains that keep a plane of multiples of 1/8 exact (so its mean is exact in any order).
DYADIC_ACTS = [
    pytest.param("linear", 0.0, 1.0, id="linear"),
    pytest.param("relu", 0.0, 0.5, id="relu-g0.5"),
    pytest.param("lrelu", 0.25, 2.0, id="lrelu0.25-g2"),
    pytest.param("lrelu", -0.125, -1.5, id="lrelu-0.125-g-1.5"),
]


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("act, alpha, gain", DYADIC_ACTS)
def test_adain_noise_ref_constant_dyadic_plane_equals_v0_to_second_order(act, alpha, gain, with_bias):
    key = ("adain constant dyadic", act, alpha, gain, with_bias)
    inputs = _constant_plane_inputs(key, with_bias, dyadic=True)
    kw = dict(act=act, alpha=alpha, gain=gain)
    _assert_style_bias(adain_noise_ref(**inputs, **kw), inputs["style_bias"])
    _assert_style_bias(adain_noise_ref_v0(**inputs, **kw), inputs["style_bias"])
    got = _assert_same_computation(lambda **a: adain_noise_ref(**a, **kw), lambda **a: adain_noise_ref_v0(**a, **kw),
                                   inputs, key, f"adain_noise constant 1/8-plane {act} gain={gain}",
                                   skip=("d/dbias", "d2/dbias"))
    if with_bias:
        _assert_bias_gradient_cancels(got, "d/d")
        _assert_bias_gradient_cancels(got, "d2/d")


@pytest.mark.parametrize("dtype", SMOKE_DTYPES)
def test_adain_noise_ref_upcast_within_dtype_tolerance_of_v0(dtype):
    inputs = _adain_inputs(_gen("adain smoke", dtype), N, C, H, W, "strength", True)
    low = {k: v.to(dtype) for k, v in inputs.items()}
    x0 = low["x"].clone()
    got = adain_noise_ref(**low, upcast=True)
    assert torch.equal(low["x"], x0) and got.dtype == dtype
    assert_matches_oracle(got, adain_noise_ref_v0(**{k: v.double() for k, v in low.items()}),
                          adain_noise_ref_v0(**low, upcast=True), dtype=dtype, name="adain_noise upcast")


# ---------------------------------------------------------------- conditional_batch_norm

# (shape, training, running statistics): which path of the new reference each one takes.
CBN_CASES = [
    pytest.param((3, 5, 7, 9), True, "fp64", id="train-stats"),             # fused F.batch_norm + update
    pytest.param((3, 5, 7, 9), True, None, id="train-nostats"),             # fused, nothing to update
    pytest.param((3, 5, 7, 9), True, "fp32", id="train-stats-fp32"),        # other dtype: written out
    pytest.param((3, 5, 7, 9), True, "mean-only", id="train-mean-only"),    # one absent: written out
    pytest.param((3, 5, 1, 1), True, "fp64", id="train-1x1-batch3"),        # 1x1 maps, 3 values per channel
    pytest.param((1, 5, 1, 1), True, "fp64", id="train-one-value"),         # one value per channel: written out
    pytest.param((1, 5, 1, 1), True, None, id="train-one-value-nostats"),   # same, no statistics
    pytest.param((3, 5, 7, 9), False, "fp64", id="eval-stats"),             # F.batch_norm eval
    pytest.param((3, 5, 7, 9), False, "fp32", id="eval-stats-fp32"),
]


def _cbn_stats(g, c, kind):
    """(running_mean, running_var) of the kind, var positive."""
    if kind is None:
        return None, None
    mean, var = _randn(g, c), torch.rand(c, generator=g, dtype=F64) + 0.5
    if kind == "fp32":
        return mean.float(), var.float()
    if kind == "mean-only":
        return mean, None
    return mean, var


def _clone(t):
    return None if t is None else t.clone()


@pytest.mark.parametrize("act", [None, "relu"], ids=["noact", "relu"])
@pytest.mark.parametrize("shape, training, stats", CBN_CASES)
def test_conditional_batch_norm_ref_equals_v0(shape, training, stats, act):
    key = ("cbn", shape, training, stats, act)
    g = _gen(key)
    n, c = shape[:2]
    inputs = {"x": _randn(g, *shape, scale=2.0) + 0.5, "gain": _randn(g, n, c) + 1, "bias": _randn(g, n, c)}
    rm, rv = _cbn_stats(g, c, stats)
    kw = dict(training=training, momentum=0.3, act=act)
    # Each reference updates its own copy of the running statistics, once (one forward each).
    new_rm, new_rv, old_rm, old_rv = _clone(rm), _clone(rv), _clone(rm), _clone(rv)
    _assert_same_computation(
        lambda **t: conditional_batch_norm_ref(**t, running_mean=new_rm, running_var=new_rv, **kw),
        lambda **t: conditional_batch_norm_ref_v0(**t, running_mean=old_rm, running_var=old_rv, **kw),
        inputs, key, f"conditional_batch_norm {shape} training={training} stats={stats} act={act}")
    for name, new, old, start in (("running_mean", new_rm, old_rm, rm), ("running_var", new_rv, old_rv, rv)):
        if start is None:
            continue
        assert new.dtype == start.dtype
        assert_matches_oracle(new, old, dtype=start.dtype, name=f"{name} after the step")
        if training:
            assert not torch.equal(new, start), f"{name} was not updated"
        else:
            assert torch.equal(new, start), f"{name} was modified in eval"
    # Without autograd too: x, gain and bias are never written; the statistics are only updated.
    _assert_not_written(lambda **t: conditional_batch_norm_ref(**t, running_mean=_clone(rm),
                                                               running_var=_clone(rv), **kw), inputs)


@pytest.mark.parametrize("upcast", [True, False], ids=["upcast", "acc"])
@pytest.mark.parametrize("dtype", SMOKE_DTYPES)
def test_conditional_batch_norm_ref_within_dtype_tolerance_of_v0(dtype, upcast):
    # fp32 running statistics, the module's: with upcast (float64) the written-out path, without
    # it the fused one on the float32 computation.
    g = _gen("cbn smoke", dtype, upcast)
    x = _randn(g, 3, 5, 7, 9, scale=2.0, dtype=dtype)
    gain, bias = _randn(g, 3, 5, dtype=dtype) + 1, _randn(g, 3, 5, dtype=dtype)
    rm, rv = _cbn_stats(g, 5, "fp32")
    stats = {"new": (rm.clone(), rv.clone()), "same": (rm.clone(), rv.clone()), "oracle": (rm.double(), rv.double())}
    got = conditional_batch_norm_ref(x, gain, bias, *stats["new"], training=True, act="relu", upcast=upcast)
    same = conditional_batch_norm_ref_v0(x, gain, bias, *stats["same"], training=True, act="relu", upcast=upcast)
    oracle = conditional_batch_norm_ref_v0(x.double(), gain.double(), bias.double(), *stats["oracle"],
                                           training=True, act="relu")
    assert got.dtype == dtype
    assert_matches_oracle(got, oracle, same, dtype=dtype, name="conditional_batch_norm")
    for i, name in enumerate(("running_mean", "running_var")):
        assert_matches_oracle(stats["new"][i], stats["oracle"][i], stats["same"][i], dtype=torch.float32, name=name)


# ---------------------------------------------------------------- self_attention2d

# (shape [B, C, H, W], pool, weights as 4-D 1x1 conv weights or matrices); Cq = 2, Cv = 3.
SA_CASES = [
    pytest.param((3, 5, 6, 4), 2, False, id="6x4-pool2"),
    pytest.param((2, 5, 8, 6), 2, True, id="8x6-pool2-conv-weights"),
    pytest.param((3, 5, 7, 9), 1, False, id="7x9-pool1"),   # odd plane, keys = queries
    pytest.param((3, 5, 1, 1), 1, True, id="1x1-pool1"),    # one query, one key
]


@pytest.mark.parametrize("shape, pool, conv_weights", SA_CASES)
def test_self_attention2d_ref_equals_v0(shape, pool, conv_weights):
    key = ("self_attention", shape, pool, conv_weights)
    g = _gen(key)
    c, cq, cv = shape[1], 2, 3
    weight = lambda o, i: _randn(g, o, i, *((1, 1) if conv_weights else ()), scale=i ** -0.5)
    gamma = torch.rand((), generator=g, dtype=F64) + 0.5   # in [0.5, 1.5): every weight has a gradient
    inputs = {"x": _randn(g, *shape), "w_theta": weight(cq, c), "w_phi": weight(cq, c), "w_g": weight(cv, c),
              "w_o": weight(c, cv), "gamma": gamma}
    _assert_same_computation(lambda **t: self_attention2d_ref(**t, pool=pool),
                             lambda **t: self_attention2d_ref_v0(**t, pool=pool),
                             inputs, key, f"self_attention2d {shape} pool={pool}")
    _assert_not_written(lambda **t: self_attention2d_ref(**t, pool=pool), inputs)
