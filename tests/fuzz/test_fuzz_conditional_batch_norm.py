"""Fuzz tests (issue 26) of conditional_batch_norm and batch_norm on every backend and dtype that
runs here, against the float64 reference (conditional_batch_norm_ref) under the accuracy rule
(tests/fuzz/harness.py): y, the running statistics, first- and second-order gradients of x, gain
and bias.

Drawn: x [N, C, H, W] with size-0 and size-1 dimensions, batch 1, odd and prime sizes, large
planes (smaller for Triton, whose interpreter is slow), every layout; gain and bias per sample
([N, C], in x's dtype or the acc dtype, any layout including broadcast) or per channel
(batch_norm's [C]); running statistics present or absent (training), any layout; training and
eval; relu on and off; momentum in [0, 1]; eps from 1e-5 to 1. Training with one value per
channel (N*H*W = 1) and no running statistics: the reference defines xhat = 0 (y = bias); with
running statistics both the reference and the op refuse it, as torch does.

In place, by design (conditional_batch_norm's docstring): training updates running_mean and
running_var. The harness checks that inputs are unchanged, so the wrapper hands the op copies of
the running statistics (with the same strides) and returns them as extra outputs, compared with
the reference's updated statistics (eval: they must come back unchanged).
"""
from __future__ import annotations

import functools
import importlib

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ganfast.ops import conditional_batch_norm
from ganfast.ops.conditional_batch_norm import conditional_batch_norm_ref
from tests.fuzz.harness import (check_nonfinite, check_op, dtype_name, fuzz_backends, fuzz_dtypes, fuzz_settings,
                                layouts, make_tensor)

cbn_module = importlib.import_module("ganfast.ops.conditional_batch_norm")
OP = "conditional_batch_norm"
BACKEND_DTYPES = [pytest.param(b, d, id=f"{b}-{dtype_name(d)}") for b in fuzz_backends(OP) for d in fuzz_dtypes(OP, b)]
SEEDS = st.integers(0, 2**31 - 1)


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@st.composite
def cbn_cases(draw, backend: str, dtype: torch.dtype, per_channel: bool = False):
    """(inputs, seed): x, gain, bias, running statistics and the settings of one call."""
    seed = draw(SEEDS)
    small = backend == "triton"
    edge = st.sampled_from([0, 1, 1, 2, 3, 5, 7])
    n = draw(st.one_of(edge, st.integers(1, 4 if small else 8)))
    c = draw(st.one_of(edge, st.integers(1, 9 if small else 40)))
    h = draw(st.one_of(edge, st.integers(1, 9 if small else 33)))
    w = draw(st.one_of(edge, st.integers(1, 9 if small else 33)))
    if not small and draw(st.integers(0, 9)) == 0:   # now and then a large plane
        n, c, h, w = draw(st.sampled_from([(2, 3, 64, 67), (1, 2, 128, 128), (4, 5, 41, 53)]))
    training = draw(st.booleans())
    count = n * h * w
    with_stats = not training or draw(st.booleans())
    if training and with_stats and count < 2:   # refused (test_fuzz_hostile_arguments): draw the other case
        with_stats = False
    acc = _acc(dtype)
    param_dtype = draw(st.sampled_from([acc, dtype]))
    pshape = (c,) if per_channel else (n, c)
    inputs = dict(
        x=make_tensor(seed, (n, c, h, w), draw(layouts(4, broadcastable=True)), dtype,
                      scale=draw(st.sampled_from([0.1, 1.0, 30.0]))),
        gain=make_tensor(seed + 1, pshape, draw(layouts(len(pshape), broadcastable=True)), param_dtype),
        bias=make_tensor(seed + 2, pshape, draw(layouts(len(pshape), broadcastable=True)), param_dtype),
        running_mean=make_tensor(seed + 3, (c,), draw(layouts(1)), acc) if with_stats else None,
        running_var=make_tensor(seed + 4, (c,), draw(layouts(1)), acc, positive=True) if with_stats else None,
        training=training,
        momentum=draw(st.sampled_from([0.0, 0.1, 0.5, 1.0])),
        eps=draw(st.sampled_from([1e-5, 1e-3, 1.0])),
        act=draw(st.sampled_from([None, "relu"])),
    )
    return inputs, seed


def _state_copy(t):
    """A copy of a running statistic with t's strides (the op updates it in place)."""
    if t is None:
        return None
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype).copy_(t)


def _run(fn, x, gain, bias, running_mean, running_var, **kw):
    """(y, running_mean, running_var after the call) with fn on copies of the running statistics."""
    rm, rv = _state_copy(running_mean), _state_copy(running_var)
    y = fn(x, gain, bias, rm, rv, **kw)
    return (y,) if rm is None else (y, rm, rv)


def cbn_fast(x, gain, bias, running_mean, running_var, *, backend, **kw):
    return _run(functools.partial(conditional_batch_norm, backend=backend), x, gain, bias, running_mean,
                running_var, **kw)


def cbn_reference(x, gain, bias, running_mean, running_var, **kw):
    return _run(conditional_batch_norm_ref, x, gain, bias, running_mean, running_var, **kw)


def bn_fast(x, gain, bias, running_mean, running_var, *, backend, training, momentum, eps, act):
    return _run(lambda *a: cbn_module.batch_norm(*a, training, momentum, eps, act, backend=backend),
                x, gain, bias, running_mean, running_var)


def bn_reference(x, gain, bias, running_mean, running_var, **kw):
    """The definition with one gain and bias a channel: gain expanded over the batch."""
    n = x.shape[0]
    return cbn_reference(x, gain.expand(n, -1), bias.expand(n, -1), running_mean, running_var, **kw)


@pytest.mark.parametrize("backend, dtype", BACKEND_DTYPES)
@fuzz_settings(25)
@given(data=st.data())
def test_fuzz_conditional_batch_norm(backend, dtype, data):
    inputs, seed = data.draw(cbn_cases(backend, dtype))
    check_op("conditional_batch_norm", functools.partial(cbn_fast, backend=backend), cbn_reference, inputs,
             dtype=dtype, diff=("x", "gain", "bias"), second_order=True, seed=seed, nondiff_outputs=(1, 2))


@pytest.mark.parametrize("backend, dtype", BACKEND_DTYPES)
@fuzz_settings(10)
@given(data=st.data())
def test_fuzz_batch_norm(backend, dtype, data):
    inputs, seed = data.draw(cbn_cases(backend, dtype, per_channel=True))
    check_op("batch_norm", functools.partial(bn_fast, backend=backend), bn_reference, inputs,
             dtype=dtype, diff=("x", "gain", "bias"), second_order=True, seed=seed, nondiff_outputs=(1, 2))


@pytest.mark.parametrize("backend, dtype", BACKEND_DTYPES)
@fuzz_settings(8)
@given(data=st.data())
def test_fuzz_nonfinite_inputs(backend, dtype, data):
    # NaN / +-inf in x (a diverged layer) or in gain: y and the running statistics are non-finite
    # where the reference's are (training: a channel's statistics spread a bad value over it).
    inputs, seed = data.draw(cbn_cases(backend, dtype))
    target = data.draw(st.sampled_from(["x", "gain"]))
    t = inputs[target].clone()
    if t.numel():
        for _ in range(data.draw(st.integers(1, 3))):
            i = data.draw(st.integers(0, t.numel() - 1))
            idx = tuple(int(j) for j in torch.unravel_index(torch.tensor(i), t.shape))
            t[idx] = data.draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]))
    inputs[target] = t
    # y exactly (NaN, +inf, -inf positions); the running statistics by finiteness alone: a channel
    # holding +inf has mean +inf in the kernels' sums and NaN in torch.var_mean's (the reference's)
    # Welford update (inf - inf), and a NaN or an inf there is equally a diverged statistic
    check_nonfinite("conditional_batch_norm", lambda **kw: cbn_fast(**kw, backend=backend)[0],
                    lambda **kw: cbn_reference(**kw)[0], inputs, dtype=dtype, backend=backend)
    if inputs["running_mean"] is not None and inputs["training"]:
        with torch.no_grad():
            got, want = cbn_fast(**inputs, backend=backend)[1:], cbn_reference(**inputs)[1:]
        for name, g, w in zip(("running_mean", "running_var"), got, want):
            assert torch.equal(torch.isfinite(g), torch.isfinite(w)), f"{name}: got {g}, the reference gives {w}"


# ---- hostile arguments: an error naming the argument, never a crash ----

def _hostile(kind: str, n: int, c: int, dtype: torch.dtype) -> tuple[dict, str]:
    acc = _acc(dtype)
    args = dict(x=torch.randn(n, c, 3, 4).to(dtype), gain=torch.ones(n, c, dtype=acc), bias=torch.zeros(n, c, dtype=acc),
                running_mean=torch.zeros(c, dtype=acc), running_var=torch.ones(c, dtype=acc))
    over, match = {
        "x-rank": (dict(x=torch.randn(n, c, 3).to(dtype)), "x must be \\[N, C, H, W\\]"),
        "x-int": (dict(x=torch.ones(n, c, 3, 4, dtype=torch.int32)), "x must be a floating tensor"),
        "gain-size": (dict(gain=torch.ones(n, c + 1, dtype=acc)), f"gain must be \\[N, C\\] = \\[{n}, {c}\\]"),
        "bias-rank": (dict(bias=torch.ones(n, c, 1, dtype=acc)), f"bias must be \\[N, C\\] = \\[{n}, {c}\\]"),
        "gain-int": (dict(gain=torch.ones(n, c, dtype=torch.int64)), "gain must be a floating tensor"),
        "gain-meta": (dict(gain=torch.ones(n, c, device="meta")), "gain must be on x's device cpu, got meta"),
        "x-meta": (dict(x=torch.ones(n, c, 3, 4, device="meta", dtype=dtype)), "gain must be on x's device meta"),
        "mean-size": (dict(running_mean=torch.zeros(c + 1, dtype=acc)), f"running_mean must be a \\[C\\] = \\[{c}\\]"),
        "var-meta": (dict(running_var=torch.ones(c, device="meta")), "running_var must be a \\[C\\] .* on meta"),
        "mean-int": (dict(running_mean=torch.zeros(c, dtype=torch.int64)), "running_mean must be a floating tensor"),
        "one-value": (dict(x=torch.randn(1, c, 1, 1).to(dtype), gain=torch.ones(1, c, dtype=acc),
                           bias=torch.zeros(1, c, dtype=acc)), "expected more than 1 value per channel"),
    }[kind]
    args.update(over)
    return args, match


HOSTILE = ["x-rank", "x-int", "gain-size", "bias-rank", "gain-int", "gain-meta", "x-meta", "mean-size", "var-meta",
           "mean-int", "one-value"]


@fuzz_settings(30)
@given(kind=st.sampled_from(HOSTILE), n=st.integers(1, 4), c=st.integers(1, 5),
       dtype=st.sampled_from([torch.float16, torch.bfloat16, torch.float32]),
       backend=st.sampled_from(fuzz_backends(OP)), training=st.booleans())
def test_fuzz_hostile_arguments_name_the_argument(kind, n, c, dtype, backend, training):
    args, match = _hostile(kind, n, c, dtype)
    if kind == "one-value" and not training:
        training = True   # eval normalizes by the running statistics: one value is fine there
    with pytest.raises(ValueError, match=f"ganfast.ops.conditional_batch_norm: {match}"):
        conditional_batch_norm(**args, training=training, backend=backend)


BN_HOSTILE = {
    "weight-size": (lambda c: dict(weight=torch.ones(c + 1)), "weight must be \\[C\\]"),
    "weight-meta": (lambda c: dict(weight=torch.ones(c, device="meta")), "weight must be on x's device cpu, got meta"),
    "bias-meta": (lambda c: dict(bias=torch.zeros(c, device="meta")), "bias must be on x's device cpu, got meta"),
    "weight-int": (lambda c: dict(weight=torch.ones(c, dtype=torch.int64)), "weight must be a floating tensor"),
    "mean-meta": (lambda c: dict(running_mean=torch.zeros(c, device="meta")), "running_mean must be .* meta"),
    "mean-int": (lambda c: dict(running_mean=torch.zeros(c, dtype=torch.int64)), "running_mean must be (a )?floating"),
}


@fuzz_settings(20)
@given(kind=st.sampled_from(sorted(BN_HOSTILE)), c=st.integers(1, 5), backend=st.sampled_from(fuzz_backends(OP)),
       training=st.booleans())
def test_fuzz_batch_norm_hostile_arguments_name_the_argument(kind, c, backend, training):
    make, match = BN_HOSTILE[kind]
    args = dict(x=torch.randn(2, c, 3, 3), weight=torch.ones(c), bias=torch.zeros(c), running_mean=torch.zeros(c),
                running_var=torch.ones(c))
    args.update(make(c))
    # the one-call path on the CPU extension checks the running statistics there (a RuntimeError
    # from TORCH_CHECK, naming the argument the same way)
    with pytest.raises((ValueError, RuntimeError), match=match):
        cbn_module.batch_norm(**args, training=training, momentum=0.1, eps=1e-5, backend=backend)
