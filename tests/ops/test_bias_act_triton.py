"""bias_act on the Triton backend.

(a) Semantics: the kernels run on CPU tensors under the Triton interpreter (tests/conftest.py sets
    TRITON_INTERPRET=1), or on a GPU with GANFAST_TEST_GPU=1. Every result is held to the accuracy
    rule: error against the float64 reference at most 2x the reference's own error in the dtype.
(b) Ahead of time: every launch configuration compiles for sm_80 and sm_90 without spills, within
    shared memory, and with 128-bit global accesses (slow: one compile subprocess for the module).
"""
from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("triton")

import ganfast  # noqa: E402
from ganfast import backends  # noqa: E402
from ganfast.ops.bias_act import reference as ref  # noqa: E402
from ganfast.ops.bias_act import triton as bias_act_triton  # noqa: E402
from ganfast.testing import assert_rounded_to_nearest, triton_aot  # noqa: E402
from ganfast.testing.triton_aot import reported, spec_id  # noqa: E402
from ganfast.testing import assert_matches_oracle, poison_like  # noqa: E402

ACTS = list(ref.ACTIVATIONS)
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
DEVICE = "cpu" if backends.triton_interpret() else "cuda"

needs_device = pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(),
                                  reason="TRITON_INTERPRET is unset and there is no CUDA device")


def _bias_view(b: torch.Tensor, x: torch.Tensor, dim: int) -> torch.Tensor:
    return b.reshape(ref.bias_shape(x, dim))


def _off_the_kink(x: torch.Tensor, b, dim: int) -> torch.Tensor:
    """x with every z = x + b == 0 moved off 0. In fp16/bf16 x == -b happens; at z == 0 elu/selu's
    f'' follows bias_act_math.h (negative branch), PyTorch's double backward the positive one, so
    random-input tests stay off the kink and test_kinks_follow_bias_act_math pins it instead."""
    if b is None:
        return torch.where(x == 0, torch.full_like(x, 0.5), x)
    return torch.where(x + _bias_view(b, x, dim) == 0, x + 0.5, x)


def _inputs(shape, dtype, dim=1, has_b=True, layout="contiguous", scale=3.0):
    """(x, b, g, gg) on DEVICE; layout: 'contiguous', 'channels_last' or 'permuted' (dims reversed)."""
    x = torch.randn(shape, dtype=torch.float32) * scale
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    elif layout == "permuted":
        x = x.permute(*reversed(range(x.ndim))).contiguous().permute(*reversed(range(x.ndim)))
    x = x.to(dtype=dtype, device=DEVICE)
    b = torch.randn(x.shape[dim], dtype=dtype, device=DEVICE) if has_b else None
    x = _off_the_kink(x, b, dim)
    g, gg = torch.randn_like(x), torch.randn_like(x)
    return x, b, g, gg


def _reference_run(order, x, b, g, gg, dim, act, alpha, gain, clamp, want_db):
    """reference.run with two gaps filled: the order-2 term of acts whose f'' == 0 is written as
    zeros (reference.run cannot differentiate `linear`'s dx, which does not depend on x), and db
    of a 1-D x."""
    if order == 2 and ref.ACTIVATIONS[act].zero_second_derivative:
        out = torch.zeros_like(x)
        return out, (torch.zeros_like(b) if want_db and b is not None else None)
    out, db = ref.run(order, x, b, g, gg, dim, act, alpha, gain, clamp, want_db)
    if db is not None and x.ndim == 1:
        # reference.run sums over dims=[] for a 1-D x, which torch reads as "every dim"; db is out.
        db = out.to(torch.float64 if x.dtype == torch.float64 else torch.float32).to(b.dtype)
    return out, db


def _check_launcher(order, x, b, g, gg, dim, act, clamp, want_db=True, alpha=None, gain=None):
    """Run the launcher into a poisoned output and hold out (and db) to the accuracy rule."""
    spec = ref.ACTIVATIONS[act]
    alpha = spec.def_alpha if alpha is None else alpha
    gain = spec.def_gain if gain is None else gain
    args = (dim, act, alpha, gain, clamp, want_db)
    out = poison_like(x)
    got, db = bias_act_triton.run(order, x, b, g, gg, *args, out=out)
    assert got is out
    assert got.stride() == x.stride()

    def f64(t):
        return None if t is None else t.to(torch.float64)

    oracle, oracle_db = _reference_run(order, f64(x), f64(b), f64(g), f64(gg), *args)
    same, same_db = _reference_run(order, x, b, g, gg, *args)
    what = f"{act} order {order} {x.dtype} shape {tuple(x.shape)} strides {x.stride()} dim {dim} clamp {clamp}"
    assert_matches_oracle(got, oracle, same, name=f"out ({what})")
    if want_db and b is not None:
        assert db is not None and db.shape == b.shape and db.dtype == b.dtype
        assert_matches_oracle(db, oracle_db, same_db, name=f"db ({what})")
    else:
        assert db is None


# ---- (a) semantics under the interpreter (or on a GPU) ----

@needs_device
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("act", ACTS)
def test_every_activation_order_and_dtype(act, dtype):
    # [2, 5, 3, 3] NCHW: 90 elements, one partial block; odd C; bias, no bias, clamp.
    for has_b, clamp in ((True, -1.0), (True, 1.0), (False, 0.5)):
        x, b, g, gg = _inputs((2, 5, 3, 3), dtype, has_b=has_b)
        for order in (0, 1, 2):
            for want_db in ((False, True) if order > 0 and has_b else (False,)):
                _check_launcher(order, x, b, g, gg, 1, act, clamp, want_db)




@needs_device
@pytest.mark.parametrize("act", ["lrelu", "tanh", "swish"])
def test_bf16_writes_round_to_nearest(act):
    # issue 26: a bf16 out is the fp32 result rounded to nearest even, as the compiled cast does;
    # the Triton 3.9 interpreter truncates, so there the kernels round explicitly (round_bf16).
    # Expectations: the fp32 kernel on the same (bf16-valued) inputs, whose math is the bf16
    # kernel's bit for bit (tanh's 1 - t*t cancels, so a float64 oracle would differ by more than
    # the rounding); for lrelu also reference.run in float64. Every order, both kernels (want_db).
    torch.manual_seed(26)
    x, b, g, gg = _inputs((2, 5, 6, 7), torch.bfloat16)
    spec = ref.ACTIVATIONS[act]
    args = (1, act, spec.def_alpha, spec.def_gain, -1.0)
    for order in (0, 1) if spec.zero_second_derivative else (0, 1, 2):
        fp32, _ = bias_act_triton.run(order, *(t.float() for t in (x, b, g, gg)), *args, False)
        exact, _ = _reference_run(order, *(t.double() for t in (x, b, g, gg)), *args, False)
        for want_db in (False, True) if order > 0 else (False,):
            got, _ = bias_act_triton.run(order, x, b, g, gg, *args, want_db)
            what = f"{act} order {order} want_db={want_db}"
            assert_rounded_to_nearest(got, fp32, f"{what} (against fp32)")
            if act == "lrelu":
                assert_rounded_to_nearest(got, exact, f"{what} (against float64)")

# (shape, dim, layout): one comment per case.
SHAPES = [
    pytest.param((4, 7, 1, 1), 1, "contiguous", id="1x1-map"),                # inner = 1 through a size-1 tail
    pytest.param((2, 3, 4, 4), 1, "contiguous", id="4x4-map-C3"),             # 4x4 maps, RGB-like C
    pytest.param((1, 5, 6, 7), 1, "contiguous", id="batch1-C5"),              # batch 1, odd C, odd map
    pytest.param((1, 3, 17, 23), 1, "contiguous", id="not-block-multiple"),   # 1173: a full block and a tail
    pytest.param((2, 6, 5, 5), 1, "channels_last", id="channels_last"),       # inner = 1, bias per column
    pytest.param((2, 3, 4, 5), 2, "contiguous", id="dim2"),                   # bias along H
    pytest.param((2, 3, 4, 5), 3, "permuted", id="dim3-permuted"),            # dims reversed in memory
    pytest.param((9, 13), 1, "contiguous", id="2d-NC"),                       # [N, C] (linear layers)
    pytest.param((11,), 0, "contiguous", id="1d-C"),                          # [C] alone
    pytest.param((3, 1, 5, 2), 1, "channels_last", id="C1"),                  # C == 1: any stride, inner = 1
]


@needs_device
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("shape,dim,layout", SHAPES)
def test_shapes_that_bite(shape, dim, layout, dtype):
    for act, order in (("lrelu", 0), ("lrelu", 1), ("swish", 1), ("swish", 2)):
        x, b, g, gg = _inputs(shape, dtype, dim=dim, layout=layout)
        _check_launcher(order, x, b, g, gg, dim, act, clamp=-1.0, want_db=True)
        _check_launcher(order, x, b, g, gg, dim, act, clamp=0.8, want_db=False)


@needs_device
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("shape,dim,layout", [
    pytest.param((1, 2, 8300), 1, "contiguous", id="long-rows"),        # inner > BLOCK * DB_MAX_ITERS: several partials per row
    pytest.param((2, 3, 45, 50), 1, "channels_last", id="many-rows"),   # outer > BLOCK_M * DB_MAX_ITERS at C = 3
    pytest.param((5000, 3), 1, "contiguous", id="tall-NC"),             # [N, C] with N past one program's rows
])
def test_bias_gradient_over_many_programs(shape, dim, layout, dtype):
    x, b, g, gg = _inputs(shape, dtype, dim=dim, layout=layout)
    _check_launcher(1, x, b, g, gg, dim, "lrelu", clamp=-1.0, want_db=True)
    _check_launcher(2, x, b, g, gg, dim, "tanh", clamp=1.5, want_db=True)


@needs_device
def test_int64_offsets(monkeypatch):
    # Tensors near 2**31 elements take the kernels with int64 offsets; lower the limit to reach them.
    monkeypatch.setattr(bias_act_triton, "INDEX_32_LIMIT", 0)
    for shape, layout in (((2, 3, 5, 7), "contiguous"), ((2, 6, 3, 3), "channels_last")):
        x, b, g, gg = _inputs(shape, torch.float16, layout=layout)
        _check_launcher(2, x, b, g, gg, 1, "swish", clamp=-1.0, want_db=True)
        _check_launcher(1, x, b, g, gg, 1, "tanh", clamp=1.0, want_db=False)


@needs_device
@pytest.mark.parametrize("shape", [(0, 5, 3, 3), (2, 0, 3)], ids=["N0", "C0"])
def test_empty(shape):
    x, b, g, gg = _inputs(shape, torch.float32)
    for order in (0, 1, 2):
        out, db = bias_act_triton.run(order, x, b, g, gg, 1, "swish", 0.0, 1.0, -1.0, True)
        assert out.shape == x.shape and out.stride() == x.stride()
        if order > 0:
            assert db.shape == b.shape and not db.any()


@needs_device
def test_kinks_follow_bias_act_math():
    # z exactly at each kink (0; softplus's threshold 20) and y exactly at the clamp bound: the
    # values bias_act_math.h defines there, written out (alpha = 0.3 for lrelu/elu).
    z = torch.tensor([0.0, 20.0, 21.0, -1.0, 1.0], device=DEVICE)
    g = torch.full_like(z, 2.0)
    s20 = 1 / (1 + math.exp(-20.0))
    scale, a_selu = 1.0507009873554804934193349852946, 1.6732632423543772848170429916717
    e1 = math.exp(-1.0)
    expected = {  # act: (f'(z) at z, f''(z) at z)
        "relu": ([0, 1, 1, 0, 1], [0, 0, 0, 0, 0]),
        "lrelu": ([0.3, 1, 1, 0.3, 1], [0, 0, 0, 0, 0]),
        "elu": ([0.3, 1, 1, 0.3 * e1, 1], [0, 0, 0, 0.3 * e1, 0]),  # f''(0) = 0, as PyTorch
        "selu": ([scale * a_selu, scale, scale, scale * a_selu * e1, scale], [0, 0, 0, scale * a_selu * e1, 0]),
        "softplus": ([0.5, s20, 1, 1 / (1 + math.e), 1 / (1 + e1)],
                     [0.25, s20 * (1 - s20), 0, e1 / (1 + e1) ** 2, e1 / (1 + e1) ** 2]),
    }
    for act, (d1, d2) in expected.items():
        for order, want in ((1, d1), (2, d2)):
            out, _ = bias_act_triton.run(order, z, None, g, g, 0, act, 0.3, 1.0, -1.0, False)
            want = torch.tensor(want, device=DEVICE) * (2.0 if order == 1 else 4.0)
            torch.testing.assert_close(out, want, rtol=2e-6, atol=2e-6, msg=f"{act} order {order}")
    # Clamp: y == clamp passes the gradient (closed interval), y just above does not.
    x = torch.tensor([0.5, -0.5, 0.5000001, -0.50000006], device=DEVICE)
    y, _ = bias_act_triton.run(0, x, None, None, None, 0, "linear", 0.0, 1.0, 0.5, False)
    torch.testing.assert_close(y, torch.tensor([0.5, -0.5, 0.5, -0.5], device=DEVICE))
    dx, _ = bias_act_triton.run(1, x, None, torch.ones_like(x), None, 0, "linear", 0.0, 1.0, 0.5, False)
    torch.testing.assert_close(dx, torch.tensor([1.0, 1.0, 0.0, 0.0], device=DEVICE))
    # NaN propagates through the clamp.
    nan, _ = bias_act_triton.run(0, torch.tensor([float("nan")], device=DEVICE), None, None, None, 0, "tanh",
                                 0.0, 1.0, 0.5, False)
    assert torch.isnan(nan).all()


@needs_device
@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")  # exp(100) -> inf, on purpose
def test_accurate_near_zero_and_far_out():
    # Near 0, tanh/elu/selu/softplus use expm1/log1p forms: a few ulp relative (the GPU's exp,
    # ex2.approx, is ~2 ulp), where exp(z) - 1 would be off by ~1e-2 at z = 1e-6. Far out, no
    # overflow; ex2.approx of z*log2(e) is relative-accurate to ~|z| * 2**-24 there, which is
    # ~1e-19 absolute in these tails.
    near = torch.tensor([1e-6, -1e-6, 1e-3, -3e-3, 0.3, -0.7], device=DEVICE)
    far = torch.tensor([9.0, -9.0, -30.0, 60.0, -100.0, 100.0], device=DEVICE)
    for z, rtol in ((near, 2e-6), (far, 8e-6)):
        for act in ("tanh", "elu", "selu", "softplus", "sigmoid", "swish"):
            got, _ = bias_act_triton.run(0, z, None, None, None, 0, act, 1.0, 1.0, -1.0, False)
            want = ref.bias_act_ref(z.double(), None, 0, act, 1.0, 1.0, -1.0)
            torch.testing.assert_close(got.double(), want, rtol=rtol, atol=1e-30, msg=lambda m: f"{act}: {m}")


@needs_device
def test_launcher_rejects_mismatched_layouts():
    x, b, g, gg = _inputs((2, 4, 3, 3), torch.float32)
    with pytest.raises(ValueError, match="g must have x's shape"):
        bias_act_triton.run(1, x, b, g.to(memory_format=torch.channels_last), None, 1, "relu", 0.0, 1.0, -1.0, False)
    with pytest.raises(ValueError, match="non-overlapping and dense"):
        bias_act_triton.run(0, x[:, :, :2], None, None, None, 1, "relu", 0.0, 1.0, -1.0, False)
    with pytest.raises(TypeError, match="float16, bfloat16 or float32"):
        bias_act_triton.run(0, x.double(), None, None, None, 1, "relu", 0.0, 1.0, -1.0, False)


def _public_api_grads(base, b, gy, w, act, clamp, dim, backend, make_x):
    """y, then dL/d(base, b, gy) of L = <y, gy>, then the R1-style d/d(base, b) of <dx, w> + sum(db)."""
    y = ganfast.ops.bias_act(make_x(base), b, dim=dim, act=act, clamp=clamp, backend=backend)
    dx, db, dgy = torch.autograd.grad((y * gy).sum(), (base, b, gy), create_graph=True)
    ddx, ddb = torch.autograd.grad((dx * w).sum() + db.sum(), (base, b), allow_unused=True)
    ddx = torch.zeros_like(base) if ddx is None else ddx  # f'' == 0: autograd leaves the term out
    ddb = torch.zeros_like(b) if ddb is None else ddb
    return dict(y=y, dx=dx, db=db, dgy=dgy, ddx=ddx, ddb=ddb)


# (act, clamp, case): one comment per case.
API_CASES = [
    pytest.param("lrelu", 0.7, "channels_last", id="lrelu-clamp-channels_last"),  # StyleGAN2's act + conv_clamp
    pytest.param("swish", None, "slice", id="swish-slice"),        # non-contiguous view of a leaf: made dense first
    pytest.param("tanh", None, "contiguous", id="tanh"),
    pytest.param("softplus", 2.0, "dim-last", id="softplus-dim-last"),  # bias along the last dim of [N, L, C]
    pytest.param("elu", None, "2d", id="elu-2d"),                   # [N, C]
]
API_SHAPES = {"channels_last": ((2, 6, 4, 4), 1), "slice": ((2, 5, 6, 8), 1), "contiguous": ((3, 5, 3, 3), 1),
              "dim-last": ((2, 7, 5), 2), "2d": ((6, 9), 1)}


@needs_device
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("act,clamp,case", API_CASES)
def test_public_api_forward_backward_double_backward(act, clamp, case, dtype):
    shape, dim = API_SHAPES[case]

    def make_x(t):
        return t[:, :, 1:5, ::2] if case == "slice" else t

    base = (torch.randn(shape) * 2).to(dtype)
    if case == "channels_last":
        base = base.to(memory_format=torch.channels_last)
    b = torch.randn(make_x(base).shape[dim]).to(dtype)
    if case != "slice":  # (swish has no kink)
        base = _off_the_kink(base, b, dim)
    gy = torch.randn(make_x(base).shape).to(dtype)
    w = torch.randn(base.shape).to(dtype)

    def grads(backend, dt):
        def leaf(t):
            return t.to(dtype=dt, device=DEVICE).requires_grad_(True)
        return _public_api_grads(leaf(base), leaf(b), leaf(gy), w.to(dtype=dt, device=DEVICE), act, clamp, dim,
                                 backend, make_x)

    got = grads("triton", dtype)
    oracle = grads("reference", torch.float64)
    same = grads("reference", dtype)
    for k in got:
        assert got[k].dtype == dtype, k
        assert_matches_oracle(got[k], oracle[k], same[k], name=f"{k} ({act}, {case})")
    if case == "channels_last":
        assert got["y"].is_contiguous(memory_format=torch.channels_last)


# ---- (b) ahead-of-time compiles for sm_80 and sm_90 ----

AOT_ARCHS = triton_aot.AOT_ARCHS
AOT_SPECS = bias_act_triton.aot_specs()


@pytest.fixture(scope="module")
def aot_results():
    from ganfast.testing.triton_aot import compile_by_name
    return compile_by_name(AOT_SPECS, AOT_ARCHS)


@pytest.mark.slow
@pytest.mark.parametrize("arch", AOT_ARCHS, ids=lambda a: f"sm_{a}")
@pytest.mark.parametrize("spec", AOT_SPECS, ids=spec_id)
def test_aot_compiles_within_resources(aot_results, spec, arch, record_property):
    result = reported(aot_results[(spec["name"], arch)], record_property)
    assert result.problems(vector_io=spec["vector_io"]) == [], result.row()
