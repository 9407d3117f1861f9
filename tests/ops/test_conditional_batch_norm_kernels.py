"""conditional_batch_norm's CPU kernels (ganfast.ops.conditional_batch_norm.cpu, csrc/conditional_batch_norm/):
each function of the kernel contract against the reference's (reference.py) in float64 on the same
rounded inputs, under the accuracy rule (ganfast/testing/accuracy.py), with NaN-poisoned outputs
so an unwritten element fails; and the argument checks.

The CPU kernels run the per-element math the CUDA kernels run (conditional_batch_norm.h), so these
cases also check the CUDA math. tests/ops/test_conditional_batch_norm_gpu.py runs the same cases
on the CUDA and Triton kernels.
"""
from __future__ import annotations

import importlib
from types import SimpleNamespace
from typing import Optional

import pytest
import torch

import ganfast
from ganfast.ops.conditional_batch_norm import reference
from ganfast.testing import assert_matches_oracle, poison_like

DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
EPS = 1e-5

# (name, x shape [N, C, H, W], kind of data). kinds: "normal" (x ~ 2 N(0, 1) + 0.5), "offset"
# (channel 1 at 1000 sigma from 0: 1000 + N(0, 1)), "constant" (channels 0 and 2 constant: M2 = 0).
CASES = [
    # BigGAN's 4x4 first block
    ("map_4x4", (4, 24, 4, 4), "normal"),
    # 1x1 maps: the statistics run over the batch alone
    ("map_1x1", (8, 5, 1, 1), "normal"),
    # odd channel count, 5x5 maps (25 pixels: not a multiple of any vector width)
    ("odd_channels", (3, 7, 5, 5), "normal"),
    # batch 1: each channel's statistics are one plane's
    ("batch_1", (1, 6, 8, 8), "normal"),
    # 7x9 = 63 pixels: every vector loop has a tail
    ("hw_not_multiple", (2, 3, 7, 9), "normal"),
    # 136x136 = 18496 pixels: two reduction chunks (16384 pixels each) per plane, one partial
    ("plane_two_chunks", (2, 3, 136, 136), "normal"),
    # 8 x 64 planes of 16x16: many work items over every thread
    ("many_planes", (8, 64, 16, 16), "normal"),
    # a channel whose mean is 1000 standard deviations from 0 (sum of squares cancels in float)
    ("offset_1000_sigma", (4, 3, 8, 8), "offset"),
    # constant channels: M2 exactly 0, rstd = 1 / sqrt(eps)
    ("constant_channels", (3, 4, 5, 5), "constant"),
]
CASE_BY_NAME = {c[0]: c for c in CASES}


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def make_inputs(shape, kind: str, dtype: torch.dtype, device="cpu", seed: int = 0) -> SimpleNamespace:
    """The contract's inputs: x, dy in dtype; mean, rstd (x's batch statistics), gain, bias, c1, c2
    (the true batch-statistics terms) in acc_dtype(dtype); all rounded first, so the float64
    oracle sees exactly what the kernel sees."""
    gen = torch.Generator().manual_seed(seed)
    n, c, h, w = shape
    r = lambda *sz: torch.randn(*sz, generator=gen, dtype=torch.float64)
    x = r(*shape) * 2 + 0.5
    if kind == "offset":
        x[:, 1] = 1000.0 + r(n, h, w)
    elif kind == "constant":
        x[:, 0] = 2.5
        x[:, 2] = -0.75
    acc = acc_dtype(dtype)
    x = x.to(dtype)
    stats = reference.channel_stats(x.double())
    mean = stats[:, 0].to(acc)
    rstd = torch.rsqrt(stats[:, 1] / (n * h * w) + EPS).to(acc)
    gain = (1 + 0.3 * r(n, c)).to(acc)
    bias = r(n, c).to(acc)
    dy = r(*shape).to(dtype)
    # No gradient where z = xhat * gain + bias is within 1e-4 of the ReLU kink: there the kernel's
    # fp32 z (an FMA on a GPU) and the oracle's float64 z can fall on different sides, and one
    # flipped mask element moves a plane's sum by a whole dy (seen on an H200: 1 of 1536 sums).
    z = (x.double() - mean.double()[None, :, None, None]) * rstd.double()[None, :, None, None] \
        * gain.double()[:, :, None, None] + bias.double()[:, :, None, None]
    dy = torch.where(z.abs() < 1e-4, torch.zeros_like(dy), dy)
    # c1, c2 as the op computes them: batch means of gain * sum dz and gain * sum dz * xhat (relu off).
    sums = reference.backward_sums(dy.double(), x.double(), mean.double(), rstd.double(), gain.double(),
                                   bias.double(), False)
    count = max(1, n * h * w)
    c12 = (gain.double()[:, :, None] * sums).sum(0) / count  # [C, 2]
    a = SimpleNamespace(x=x, dy=dy, mean=mean, rstd=rstd, gain=gain, bias=bias, c1=c12[:, 0].to(acc),
                        c2=c12[:, 1].to(acc))
    for k, v in vars(a).items():
        setattr(a, k, v.to(device).contiguous())  # (column views of stats and c12 are strided)
    return a


def _double(*ts):
    return [t.double() for t in ts]


def _label(name, fn, a, dtype, relu=None):
    r = "" if relu is None else f" relu={relu}"
    return f"{name} {fn} [{a.x.device} {dtype} x {list(a.x.shape)}{r}]"


def check_channel_stats(contract, name: str, a: SimpleNamespace, dtype: torch.dtype) -> torch.Tensor:
    got = contract.channel_stats(a.x)
    acc = acc_dtype(dtype)
    label = _label(name, "channel_stats", a, dtype)
    assert got.shape == (a.x.shape[1], 2) and got.dtype == acc and got.device == a.x.device, label
    oracle = reference.channel_stats(a.x.double())
    same = None if dtype == torch.float64 else reference.channel_stats(a.x)
    # mean and M2 apart: each against its own magnitude
    for j, what in enumerate(("mean", "M2")):
        assert_matches_oracle(got[:, j], oracle[:, j], None if same is None else same[:, j], dtype=acc,
                              name=f"{label} {what}")
    return got


def check_forward_apply(contract, name: str, a: SimpleNamespace, dtype: torch.dtype, relu: bool,
                        with_out: bool = True) -> None:
    small = (a.mean, a.rstd, a.gain, a.bias)
    label = _label(name, "forward_apply", a, dtype, relu)
    oracle = reference.forward_apply(a.x.double(), *_double(*small), relu)
    same = None if dtype == torch.float64 else reference.forward_apply(a.x, *small, relu)
    if with_out:
        out = poison_like(a.x)
        got = contract.forward_apply(a.x, *small, relu, out=out)
        assert got.data_ptr() == out.data_ptr(), f"{label}: the kernel did not write into out"
    else:
        got = contract.forward_apply(a.x, *small, relu)
    assert got.dtype == dtype and got.device == a.x.device and got.is_contiguous(), label
    assert_matches_oracle(got, oracle, same, dtype=dtype, name=label)


def check_backward_sums(contract, name: str, a: SimpleNamespace, dtype: torch.dtype, relu: bool) -> None:
    small = (a.mean, a.rstd, a.gain, a.bias)
    acc = acc_dtype(dtype)
    label = _label(name, "backward_sums", a, dtype, relu)
    got = contract.backward_sums(a.dy, a.x, *small, relu)
    n, c = a.x.shape[:2]
    assert got.shape == (n, c, 2) and got.dtype == acc and got.device == a.x.device, label
    oracle = reference.backward_sums(a.dy.double(), a.x.double(), *_double(*small), relu)
    same = None if dtype == torch.float64 else reference.backward_sums(a.dy, a.x, *small, relu)
    for j, what in enumerate(("sum dz", "sum dz * xhat")):
        assert_matches_oracle(got[..., j], oracle[..., j], None if same is None else same[..., j], dtype=acc,
                              name=f"{label} {what}")


def check_backward_dx(contract, name: str, a: SimpleNamespace, dtype: torch.dtype, relu: bool,
                      with_out: bool = True) -> None:
    small = (a.mean, a.rstd, a.gain, a.bias)
    label = _label(name, "backward_dx", a, dtype, relu)
    oracle = reference.backward_dx(a.dy.double(), a.x.double(), *_double(*small), relu, *_double(a.c1, a.c2))
    same = None if dtype == torch.float64 else reference.backward_dx(a.dy, a.x, *small, relu, a.c1, a.c2)
    if with_out:
        out = poison_like(a.x)
        got = contract.backward_dx(a.dy, a.x, *small, relu, a.c1, a.c2, out=out)
        assert got.data_ptr() == out.data_ptr(), f"{label}: the kernel did not write into out"
    else:
        got = contract.backward_dx(a.dy, a.x, *small, relu, a.c1, a.c2)
    assert got.dtype == dtype and got.device == a.x.device and got.is_contiguous(), label
    assert_matches_oracle(got, oracle, same, dtype=dtype, name=label)


def run_case(contract, case, dtype: torch.dtype, relu: bool, device: str = "cpu", with_out: bool = True) -> None:
    """The three relu-dependent passes on one case (channel_stats: run_stats_case)."""
    name, shape, kind = case
    a = make_inputs(shape, kind, dtype, device)
    check_forward_apply(contract, name, a, dtype, relu, with_out)
    check_backward_sums(contract, name, a, dtype, relu)
    check_backward_dx(contract, name, a, dtype, relu, with_out)


def run_stats_case(contract, case, dtype: torch.dtype, device: str = "cpu") -> None:
    name, shape, kind = case
    a = make_inputs(shape, kind, dtype, device)
    got = check_channel_stats(contract, name, a, dtype)
    if kind == "offset":
        # Relative accuracy of the offset channel's M2 (its own size, not the largest M2's): a
        # float sum of squares about 0 loses it all; the result's own rounding is ~6e-8.
        oracle = reference.channel_stats(a.x.double())[1, 1]
        rel = float((got[1, 1].double().cpu() - oracle.cpu()).abs() / oracle.cpu())
        bound = 1e-12 if dtype == torch.float64 else 1e-6
        assert rel < bound, f"{name} {dtype}: offset channel's M2 off by {rel:.3g}"
    if kind == "constant":
        # a constant channel: its value and M2 = 0, exactly
        assert got[0, 1].item() == 0.0 and got[2, 1].item() == 0.0, got
        assert got[0, 0].item() == 2.5 and got[2, 0].item() == -0.75, got


def cpu_contract():
    """ganfast.ops.conditional_batch_norm.cpu, or a skip (no CPU extension) / failure (built without it)."""
    why = ganfast._ext.unavailable_reason("cpu")
    if why:
        pytest.skip(f"CPU extension unavailable: {why}")
    if not hasattr(ganfast._ext.extension("cpu"), "cbn_forward_apply"):
        pytest.fail("the built CPU extension has no conditional_batch_norm kernels (built before they existed): "
                    "rebuild it (pip install -e . or python setup.py build_ext --inplace)")
    from ganfast.ops.conditional_batch_norm import cpu
    return cpu


# ---------------------------------------------------------------- the CPU kernels vs the oracle

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_cpu_channel_stats(case, dtype):
    run_stats_case(cpu_contract(), case, dtype)


@pytest.mark.parametrize("relu", [False, True], ids=["linear", "relu"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_cpu_passes_match_oracle(case, dtype, relu):
    run_case(cpu_contract(), case, dtype, relu)


def test_cpu_returns_new_contiguous_tensors_without_out():
    contract = cpu_contract()
    a = make_inputs((2, 3, 5, 5), "normal", torch.float32)
    check_forward_apply(contract, "no_out", a, torch.float32, True, with_out=False)
    check_backward_dx(contract, "no_out", a, torch.float32, True, with_out=False)


def test_cpu_relu_masks_the_gradient():
    # With relu, backward_dx's dz is 0 where z <= 0: a bias that makes every z negative leaves
    # dx = rstd * (-c1 - xhat * c2) and backward_sums 0 (the linear case does not).
    contract = cpu_contract()
    a = make_inputs((2, 3, 4, 4), "normal", torch.float32)
    neg = torch.full_like(a.bias, -1e3)
    sums = contract.backward_sums(a.dy, a.x, a.mean, a.rstd, a.gain, neg, True)
    assert torch.equal(sums, torch.zeros_like(sums))
    assert contract.backward_sums(a.dy, a.x, a.mean, a.rstd, a.gain, neg, False).abs().sum() > 0
    y = contract.forward_apply(a.x, a.mean, a.rstd, a.gain, neg, True)
    assert torch.equal(y, torch.zeros_like(y))
    dx = contract.backward_dx(a.dy, a.x, a.mean, a.rstd, a.gain, neg, True, a.c1, a.c2)
    dx_no_dy = contract.backward_dx(torch.zeros_like(a.dy), a.x, a.mean, a.rstd, a.gain, neg, False, a.c1, a.c2)
    assert torch.equal(dx, dx_no_dy)
    assert not torch.equal(dx, contract.backward_dx(a.dy, a.x, a.mean, a.rstd, a.gain, neg, False, a.c1, a.c2))


def test_cpu_empty_inputs():
    # N = 0: no statistics (NaN, as torch.var_mean), empty sums and outputs
    contract = cpu_contract()
    a = make_inputs((1, 3, 4, 4), "normal", torch.float32)
    x = torch.empty(0, 3, 4, 4)
    g0 = torch.empty(0, 3)
    stats = contract.channel_stats(x)
    assert stats.shape == (3, 2) and bool(stats.isnan().all())
    assert contract.forward_apply(x, a.mean, a.rstd, g0, g0, True).shape == x.shape
    assert contract.backward_sums(x, x, a.mean, a.rstd, g0, g0, True).shape == (0, 3, 2)
    assert contract.backward_dx(x, x, a.mean, a.rstd, g0, g0, True, a.c1, a.c2).shape == x.shape


# ---------------------------------------------------------------- argument checks

def _args(**over) -> dict:
    a = make_inputs((2, 3, 4, 4), "normal", torch.float32)
    d = dict(dy=a.dy, x=a.x, mean=a.mean, rstd=a.rstd, gain=a.gain, bias=a.bias, relu=True, c1=a.c1, c2=a.c2,
             out=None)
    d.update(over)
    return d


def _call(contract, fn: str, d: dict):
    if fn == "channel_stats":
        return contract.channel_stats(d["x"])
    small = (d["mean"], d["rstd"], d["gain"], d["bias"], d["relu"])
    if fn == "forward_apply":
        return contract.forward_apply(d["x"], *small, out=d["out"])
    if fn == "backward_sums":
        return contract.backward_sums(d["dy"], d["x"], *small)
    return contract.backward_dx(d["dy"], d["x"], *small, d["c1"], d["c2"], out=d["out"])


def _f(*shape, dtype=torch.float32):
    return torch.zeros(*shape, dtype=dtype)


ALL = ("channel_stats", "forward_apply", "backward_sums", "backward_dx")
# (id, overrides, functions that take the argument, message)
BAD_ARGUMENTS = [
    ("x_ndim", dict(x=_f(2, 3, 16)), ALL, r"x must be \[N, C, H, W\]"),
    ("x_dtype", dict(x=torch.ones(2, 3, 4, 4, dtype=torch.int32)), ALL,
     r"x must be float16, bfloat16, float32 or float64"),
    # channels_last (or any non-NCHW) x: the kernels read NCHW
    ("x_channels_last", dict(x=_f(2, 3, 4, 4).to(memory_format=torch.channels_last)), ALL,
     r"x must be contiguous \(NCHW\)"),
    ("mean_shape", dict(mean=_f(4)), ALL[1:], r"mean must have shape \[3\]"),
    # the small tensors are in the accumulation dtype (float32 for float32 x)
    ("rstd_dtype", dict(rstd=_f(3, dtype=torch.float64)), ALL[1:], r"rstd must have dtype Float"),
    ("gain_shape", dict(gain=_f(3)), ALL[1:], r"gain must have shape \[2, 3\]"),
    ("bias_noncontiguous", dict(bias=_f(3, 2).t()), ALL[1:], r"bias must be contiguous"),
    ("dy_shape", dict(dy=_f(2, 3, 4, 5)), ("backward_sums", "backward_dx"), r"dy must have x's shape"),
    ("dy_dtype", dict(dy=_f(2, 3, 4, 4, dtype=torch.float16)), ("backward_sums", "backward_dx"),
     r"dy must have dtype Float"),
    ("dy_noncontiguous", dict(dy=_f(2, 3, 4, 4).transpose(2, 3)), ("backward_sums", "backward_dx"),
     r"dy must be contiguous"),
    ("c1_shape", dict(c1=_f(2, 3)), ("backward_dx",), r"c1 must have shape \[3\]"),
    ("c2_dtype", dict(c2=_f(3, dtype=torch.float16)), ("backward_dx",), r"c2 must have dtype Float"),
    ("out_shape", dict(out=_f(2, 3, 4, 5)), ("forward_apply", "backward_dx"), r"out must match x in shape and strides"),
    ("out_dtype", dict(out=_f(2, 3, 4, 4, dtype=torch.float64)), ("forward_apply", "backward_dx"),
     r"out must have dtype Float"),
    # x on another device (meta stands in for one), a small tensor off x's device
    ("x_device", dict(x=torch.empty(2, 3, 4, 4, device="meta")), ALL, r"x must be on cpu"),
    ("gain_device", dict(gain=torch.empty(2, 3, device="meta")), ALL[1:], r"gain must be on x's device cpu"),
]
BAD_CASES = [(b[0], b[1], fn, b[3]) for b in BAD_ARGUMENTS for fn in b[2]]


@pytest.mark.parametrize("over,fn,match", [b[1:] for b in BAD_CASES], ids=[f"{b[0]}-{b[2]}" for b in BAD_CASES])
def test_cpu_rejects_bad_arguments_naming_them(over, fn, match):
    contract = cpu_contract()
    with pytest.raises(RuntimeError, match=match):
        _call(contract, fn, _args(**over))


def test_cpu_accepts_the_arguments_the_bad_cases_start_from():
    # The baseline of BAD_ARGUMENTS runs, so each failure above is due to its one change.
    contract = cpu_contract()
    for fn in ALL:
        _call(contract, fn, _args())


# ---- the one-call forward and backward (cbn_forward_step / cbn_backward_step) ----

@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", ["map_4x4", "odd_channels", "batch_1", "constant_channels"])
def test_cpu_one_call_steps_equal_the_python_composition(case, dtype, training):
    """The eager path's one-call forward / backward run the same passes and [C]-sized ops, in the
    same order, as the Python composition the custom ops keep (_forward, update_running_stats,
    _backward): bit-identical results and running statistics."""
    cbn = importlib.import_module("ganfast.ops.conditional_batch_norm")   # the package, not the function
    _, shape, kind = CASE_BY_NAME[case]
    t = make_inputs(shape, kind, dtype)
    relu, eps, momentum = True, EPS, 0.1
    cpu_contract()   # skips without the extension
    ext = ganfast._ext.extension("cpu")
    rm1, rv1 = torch.randn(shape[1]).abs(), torch.rand(shape[1]) + 0.5
    rm2, rv2 = rm1.clone(), rv1.clone()
    y1, mean1, var1 = ext.cbn_forward_step(t.x, t.gain, t.bias, rm1, rv1, training, momentum, eps, relu)
    y2, mean2, var2, cnt = cbn._forward(t.x, t.gain, t.bias, rm2, rv2, training, eps, relu, "cpu")
    if training:
        cbn.update_running_stats(rm2, rv2, momentum, cnt, mean2, var2)
    for got, want in ((y1, y2), (mean1, mean2), (var1, var2), (rm1, rm2), (rv1, rv2)):
        assert torch.equal(got, want)
    g1 = ext.cbn_backward_step(t.dy, t.x, t.gain, t.bias, mean1, var1, training, eps, relu)
    g2 = cbn._backward(t.dy, t.x, t.gain, t.bias, mean2, var2, cnt, training, eps, relu, "cpu")
    for got, want in zip(g1, g2):
        assert torch.equal(got, want)


# ---- one gain and bias per channel: expanded over N (batch stride 0), never copied ----

@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", ["map_4x4", "odd_channels", "batch_1", "map_1x1"])
def test_cpu_passes_read_gain_and_bias_expanded_over_the_batch(case, dtype):
    # gain / bias [C].expand(N, -1) (stride 0 over N): every pass gives exactly what it gives on
    # the [N, C] copy (poisoned outputs: an unwritten element fails)
    contract = cpu_contract()
    _, shape, kind = CASE_BY_NAME[case]
    a = make_inputs(shape, kind, dtype)
    n = shape[0]
    ge, be = a.gain[0].expand(n, -1), a.bias[-1].expand(n, -1)   # [N, C], stride (0, 1)
    gc, bc = ge.contiguous(), be.contiguous()
    for relu in (False, True):
        y = contract.forward_apply(a.x, a.mean, a.rstd, ge, be, relu, out=poison_like(a.x))
        assert torch.equal(y, contract.forward_apply(a.x, a.mean, a.rstd, gc, bc, relu)), relu
        sums = contract.backward_sums(a.dy, a.x, a.mean, a.rstd, ge, be, relu)
        assert torch.equal(sums, contract.backward_sums(a.dy, a.x, a.mean, a.rstd, gc, bc, relu)), relu
        dx = contract.backward_dx(a.dy, a.x, a.mean, a.rstd, ge, be, relu, a.c1, a.c2, out=poison_like(a.x))
        assert torch.equal(dx, contract.backward_dx(a.dy, a.x, a.mean, a.rstd, gc, bc, relu, a.c1, a.c2)), relu


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", ["map_4x4", "batch_1", "map_1x1"])
def test_cpu_one_call_steps_take_per_channel_gain_and_bias(case, dtype, training):
    # cbn_forward_step / cbn_backward_step with gain, bias [C]: what they give on the [N, C] copy,
    # the [C] gradients summed over N by at::sum_to (autograd's backward of expand), bit for bit
    cpu_contract()
    ext = ganfast._ext.extension("cpu")
    _, shape, kind = CASE_BY_NAME[case]
    t = make_inputs(shape, kind, dtype)
    g, b = t.gain[0].clone(), t.bias[-1].clone()                           # [C]
    gn, bn = g.expand(shape[0], -1).contiguous(), b.expand(shape[0], -1).contiguous()
    rm1, rv1 = torch.randn(shape[1]).abs(), torch.rand(shape[1]) + 0.5
    rm2, rv2 = rm1.clone(), rv1.clone()
    y1, mean1, var1 = ext.cbn_forward_step(t.x, g, b, rm1, rv1, training, 0.1, EPS, True)
    y2, mean2, var2 = ext.cbn_forward_step(t.x, gn, bn, rm2, rv2, training, 0.1, EPS, True)
    for got, want in ((y1, y2), (mean1, mean2), (var1, var2), (rm1, rm2), (rv1, rv2)):
        assert torch.equal(got, want)
    dx1, dg1, db1 = ext.cbn_backward_step(t.dy, t.x, g, b, mean1, var1, training, EPS, True)
    dx2, dg2, db2 = ext.cbn_backward_step(t.dy, t.x, gn, bn, mean2, var2, training, EPS, True)
    assert dg1.shape == db1.shape == g.shape
    assert torch.equal(dx1, dx2)
    assert torch.equal(dg1, dg2.sum_to_size(g.shape)) and torch.equal(db1, db2.sum_to_size(b.shape))


def _step_args(**over) -> dict:
    a = make_inputs((2, 3, 4, 4), "normal", torch.float32)
    d = dict(x=a.x, gain=a.gain[0].clone(), bias=a.bias[0].clone(), running_mean=torch.zeros(3),
             running_var=torch.ones(3), training=True, momentum=0.1, eps=EPS, relu=True)
    d.update(over)
    return d


# (id, overrides of cbn_forward_step's arguments, message)
BAD_STEP_ARGUMENTS = [
    ("gain_shape", dict(gain=_f(4)),
     r"gain must be \[N, C\] = \[2, 3\] \(per sample\) or \[C\] = \[3\] \(per channel\), got shape \[4\]"),
    ("bias_ndim", dict(bias=_f(2, 3, 1)), r"bias must be \[N, C\] = \[2, 3\] \(per sample\) or \[C\] = \[3\]"),
    ("gain_dtype", dict(gain=_f(3, dtype=torch.float64)), r"gain must have dtype Float"),
    ("bias_device", dict(bias=torch.empty(3, device="meta")), r"bias must be on x's device cpu"),
    # an [N, C] gain expanded over N must still be contiguous along C
    ("gain_expanded_strided", dict(gain=_f(6)[::2].expand(2, -1)), r"gain must be contiguous over C"),
    ("running_mean_shape", dict(running_mean=_f(4)), r"running_mean must be \[C\] = \[3\]"),
    ("running_var_dtype", dict(running_var=torch.ones(3, dtype=torch.int32)), r"running_var must be floating"),
    ("momentum", dict(momentum=1.5), r"momentum must be a number in \[0, 1\], got 1.5"),
    ("eps", dict(eps=0.0), r"eps must be > 0"),
    ("one_value", dict(x=_f(1, 3, 1, 1)), r"more than 1 value per channel when training"),
    ("eval_without_stats", dict(training=False, running_var=None), r"running_mean and running_var must be given"),
]


@pytest.mark.parametrize("over,match", [b[1:] for b in BAD_STEP_ARGUMENTS], ids=[b[0] for b in BAD_STEP_ARGUMENTS])
def test_cpu_one_call_forward_rejects_bad_arguments_naming_them(over, match):
    cpu_contract()
    with pytest.raises(RuntimeError, match=match):
        ganfast._ext.extension("cpu").cbn_forward_step(**_step_args(**over))


def test_cpu_one_call_steps_accept_the_arguments_the_bad_cases_start_from():
    # the baseline of BAD_STEP_ARGUMENTS runs (so each failure above is its one change), and a
    # non-contiguous [C] gain is made contiguous rather than rejected
    cpu_contract()
    ext = ganfast._ext.extension("cpu")
    d = _step_args()
    y, mean, var = ext.cbn_forward_step(**d)
    strided = _step_args(gain=torch.stack([d["gain"], d["gain"]], 1)[:, 0], running_mean=torch.zeros(3),
                         running_var=torch.ones(3))
    assert not strided["gain"].is_contiguous()
    assert torch.equal(ext.cbn_forward_step(**strided)[0], y)
    dy = torch.ones_like(d["x"])
    with pytest.raises(RuntimeError, match=r"gain must be \[N, C\] = \[2, 3\] \(per sample\) or \[C\] = \[3\]"):
        ext.cbn_backward_step(dy, d["x"], _f(4), d["bias"], mean, var, True, EPS, True)
    assert ext.cbn_backward_step(dy, d["x"], d["gain"], d["bias"], mean, var, True, EPS, True)[1].shape == (3,)
