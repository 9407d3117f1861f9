"""spectral_norm: the power iteration's definition (against an SVD and torch's spectral_norm), every
fused backend against the float64 definition under the accuracy rule, sigma_estimate, the
gradient of spectral_sigma (any order), argument errors, the custom ops under opcheck and
torch.compile.

Backends: FAST lists the fused ones (their tests need the C++ extension built); "reference" is
the public op on the reference's passes (reference.matvec_t / matvec_gram), whose fused
iteration (sigma from norms, one pass for both products) differs from the step-by-step
definition power_iteration_ref and is held to the same rule.
"""
from __future__ import annotations

import pytest
import torch
from torch.nn.utils.parametrizations import spectral_norm as torch_spectral_norm

import ganfast
from ganfast.ops import power_iteration, sigma_estimate, spectral_sigma
from ganfast.ops.spectral_norm import power_iteration_ref
from ganfast.testing import assert_matches_oracle

FAST = ["cpu"]

needs_cpu_ext = pytest.mark.skipif(ganfast._ext.unavailable_reason("cpu") is not None,
                                   reason=f"CPU extension unavailable: {ganfast._ext.unavailable_reason('cpu')}")


def _params(names):
    return [pytest.param(b, marks=needs_cpu_ext) if b == "cpu" else b for b in names]


BACKENDS = _params(["reference", *FAST])
DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]

# The weight's shape (a 4-D conv weight is flattened to [O, Cin*kh*kw]); one comment per case.
SHAPES = [
    pytest.param((1, 37), id="1xK"),                  # one output: u is the scalar +-1
    pytest.param((29, 1), id="Ox1"),                  # one input: v is the scalar +-1
    pytest.param((37, 53), id="odd"),                 # sizes no block or vector width divides
    pytest.param((64, 32, 3, 3), id="conv64x32x3x3"),  # a conv weight viewed as [64, 288]
    pytest.param((259, 1283), id="large"),            # many row blocks, long rows: every thread busy
]


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _weight(shape, dtype, seed=0) -> torch.Tensor:
    """W [O, K] in dtype (drawn in float64, rounded): a conv weight flattened without a copy."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype).flatten(1)


def _state(o: int, k: int, num_svs: int, acc: torch.dtype, seed=1) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit rows u [num_svs, O], v [num_svs, K] in acc (what a layer keeps as buffers)."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(num_svs, o, generator=gen, dtype=torch.float64)
    v = torch.randn(num_svs, k, generator=gen, dtype=torch.float64)
    return (u / u.norm(dim=1, keepdim=True)).to(acc), (v / v.norm(dim=1, keepdim=True)).to(acc)


def _spectrum_matrix(o: int, k: int, dtype=torch.float64, seed=2) -> torch.Tensor:
    """W [O, K] = Q1 diag(s) Q2^T with s = 5 * 0.7^i: gaps wide enough that 100 iterations
    converge to machine precision for the top two singular values."""
    gen = torch.Generator().manual_seed(seed)
    q1, _ = torch.linalg.qr(torch.randn(o, o, generator=gen, dtype=torch.float64))
    q2, _ = torch.linalg.qr(torch.randn(k, k, generator=gen, dtype=torch.float64))
    r = min(o, k)
    s = 5 * 0.7 ** torch.arange(r, dtype=torch.float64)
    return (q1[:, :r] * s) @ q2[:, :r].t()


# ---------------------------------------------------------------- the definition

@pytest.mark.parametrize("u_first", [False, True], ids=["v_first", "u_first"])
@pytest.mark.parametrize("num_svs", [1, 2])
def test_definition_converges_to_the_top_singular_values(num_svs, u_first):
    w = _spectrum_matrix(23, 17)
    u0, v0 = _state(23, 17, num_svs, torch.float64)
    sigma, u, v = power_iteration_ref(w, u0, v0, n_iters=100, u_first=u_first)
    torch.testing.assert_close(sigma, torch.linalg.svdvals(w)[:num_svs], rtol=1e-12, atol=0)
    # The rows are the singular vectors up to sign (Gram-Schmidt keeps the second off the first).
    uu, _, vh = torch.linalg.svd(w)
    ones = torch.ones(num_svs, dtype=torch.float64)
    torch.testing.assert_close((u * uu[:, :num_svs].t()).sum(1).abs(), ones, rtol=0, atol=1e-10)
    torch.testing.assert_close((v * vh[:num_svs]).sum(1).abs(), ones, rtol=0, atol=1e-10)
    torch.testing.assert_close(u @ u.t(), torch.eye(num_svs, dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("num_svs", [1, 2])
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_converges_to_the_top_singular_values(backend, num_svs):
    # fp32 weight and state: sigma to fp32 accuracy after enough iterations on the fused passes.
    w64 = _spectrum_matrix(40, 33)
    w = w64.float()
    u, v = _state(40, 33, num_svs, torch.float32)
    sigma = power_iteration(w, u, v, n_iters=60, backend=backend)
    torch.testing.assert_close(sigma.double(), torch.linalg.svdvals(w.double())[:num_svs], rtol=1e-5, atol=0)


@pytest.mark.parametrize("n_iters", [1, 3])
@pytest.mark.parametrize("u_first", [False, True], ids=["v_first", "u_first"])
@pytest.mark.parametrize("impl", ["definition", *BACKENDS])
def test_orders_match_torch_spectral_norm(impl, u_first, n_iters):
    # torch.nn.utils.parametrizations.spectral_norm updates u = normalize(W v), then
    # v = normalize(W^T u): our u-first order on W. Our v-first order on W is torch's order on W^T
    # (a Linear holding W^T): its _v is our u, its _u our v.
    o, k = 7, 11
    lin = torch.nn.Linear(k, o, dtype=torch.float64) if u_first else torch.nn.Linear(o, k, dtype=torch.float64)
    sn = torch_spectral_norm(lin, n_power_iterations=n_iters)
    param = sn.parametrizations.weight
    original = param.original.detach().clone()
    tu0, tv0 = param[0]._u.clone(), param[0]._v.clone()
    normalized = sn.weight.detach()                        # training mode: runs the power method
    tu1, tv1 = param[0]._u, param[0]._v
    torch_sigma = (original / normalized).flatten()[0]
    torch.testing.assert_close(original / normalized, torch.full_like(original, float(torch_sigma)))

    w = original if u_first else original.t()
    u0, v0 = (tu0, tv0) if u_first else (tv0, tu0)
    expected_u, expected_v = (tu1, tv1) if u_first else (tv1, tu1)
    if impl == "definition":
        sigma, u, v = power_iteration_ref(w, u0[None], v0[None], n_iters, 1e-12, u_first)
        sigma, u, v = sigma[0], u[0], v[0]
    else:
        u, v = u0.clone(), v0.clone()
        sigma = power_iteration(w, u, v, n_iters, 1e-12, u_first, backend=impl)
    torch.testing.assert_close(u, expected_u, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(v, expected_v, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(sigma, torch_sigma, rtol=1e-12, atol=0)


def test_definition_gram_schmidt_second_vector_is_the_deflated_iteration():
    # With num_svs = 2 the second pair is the power iteration on W minus its first component
    # when the first pair is already exact (BigGAN's num_svs > 1 semantics).
    w = _spectrum_matrix(12, 9)
    uu, s, vh = torch.linalg.svd(w)
    u0, v0 = _state(12, 9, 2, torch.float64)
    u0[0], v0[0] = uu[:, 0], vh[0]
    sigma, u, v = power_iteration_ref(w, u0, v0, n_iters=80)
    torch.testing.assert_close(sigma, s[:2], rtol=1e-12, atol=0)
    deflated = w - s[0] * torch.outer(uu[:, 0], vh[0])
    sigma_d, _, _ = power_iteration_ref(deflated, u0[1:], v0[1:], n_iters=80)
    torch.testing.assert_close(sigma_d[0], sigma[1], rtol=1e-12, atol=0)


# ---------------------------------------------------------------- fused backends against the oracle

def _check_power_iteration(backend, w, num_svs, u_first, n_iters, two_d=True, what=""):
    """power_iteration on `backend` (u, v updated in place) against the float64 definition on the
    same rounded W and initial state; the budget is the definition's error in W's acc dtype."""
    o, k = w.shape
    acc = _acc(w.dtype)
    u0, v0 = _state(o, k, num_svs, acc)
    u, v = (u0.clone(), v0.clone()) if two_d else (u0[0].clone(), v0[0].clone())
    u_ptr, v_ptr = u.data_ptr(), v.data_ptr()
    sigma = power_iteration(w, u, v, n_iters, u_first=u_first, backend=backend)
    assert u.data_ptr() == u_ptr and v.data_ptr() == v_ptr
    assert sigma.dtype == acc and not sigma.requires_grad
    assert sigma.shape == ((num_svs,) if two_d else ())
    oracle = power_iteration_ref(w.double(), u0.double(), v0.double(), n_iters, u_first=u_first)
    same = power_iteration_ref(w, u0, v0, n_iters, u_first=u_first)
    name = f"{backend} W{list(w.shape)} {w.dtype} num_svs={num_svs} u_first={u_first} n_iters={n_iters} {what}"
    for got, exp, ref_same, label in zip((sigma, u, v), oracle, same, ("sigma", "u", "v")):
        assert got.dtype == acc
        assert_matches_oracle(got.reshape(exp.shape), exp, ref_same, name=f"{name}: {label}")


# (shape, num_svs): two vectors only where both sides have room for two orthonormal ones (a second
# unit vector in a 1-D space is 0 / eps, rounding noise).
SHAPES_SVS = [pytest.param(p.values[0], k, id=f"{p.id}-svs{k}", marks=p.marks)
              for p in SHAPES for k in (1, 2) if k == 1 or min(p.values[0][0], p.values[0][1]) > 1]


@pytest.mark.parametrize("n_iters", [1, 3])
@pytest.mark.parametrize("u_first", [False, True], ids=["v_first", "u_first"])
@pytest.mark.parametrize("shape, num_svs", SHAPES_SVS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_power_iteration_matches_oracle(backend, dtype, shape, num_svs, u_first, n_iters):
    _check_power_iteration(backend, _weight(shape, dtype), num_svs, u_first, n_iters)


@pytest.mark.parametrize("u_first", [False, True], ids=["v_first", "u_first"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_power_iteration_one_dimensional_vectors(backend, dtype, u_first):
    # u [O], v [K] (num_svs = 1 as plain vectors): updated in place, sigma a 0-d tensor, equal to
    # the [1, O] / [1, K] form.
    w = _weight((37, 53), dtype)
    _check_power_iteration(backend, w, 1, u_first, 2, two_d=False, what="1-D u, v")
    u0, v0 = _state(37, 53, 1, _acc(dtype))
    u1, v1 = u0[0].clone(), v0[0].clone()
    s1 = power_iteration(w, u1, v1, 2, u_first=u_first, backend=backend)
    s2 = power_iteration(w, u0, v0, 2, u_first=u_first, backend=backend)
    assert torch.equal(s1, s2[0]) and torch.equal(u1, u0[0]) and torch.equal(v1, v0[0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_power_iteration_updates_views_of_the_layer_buffers(backend):
    # u, v given as rows of bigger buffers (views): the buffers see the update; nothing else does.
    w = _weight((20, 30), torch.float32)
    u_buf = torch.zeros(3, 20)
    v_buf = torch.zeros(3, 30)
    u0, v0 = _state(20, 30, 1, torch.float32)
    u_buf[1], v_buf[1] = u0[0], v0[0]
    power_iteration(w, u_buf[1], v_buf[1], 2, backend=backend)
    _, u_exp, v_exp = power_iteration_ref(w.double(), u0.double(), v0.double(), 2)
    torch.testing.assert_close(u_buf[1].double(), u_exp[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(v_buf[1].double(), v_exp[0], rtol=0, atol=1e-6)
    assert not u_buf[0].any() and not u_buf[2].any() and not v_buf[0].any() and not v_buf[2].any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_power_iteration_ignores_the_weight_gradient_and_reads_non_contiguous_weights(backend):
    # A parameter (requires_grad) viewed non-contiguously: the weight stored as [Cin, kh, kw, Cout]
    # and permuted to [Cout, Cin, kh, kw] flattens to an [O, K] view with strides (1, O).
    base = torch.randn(6, 3, 3, 10, requires_grad=True)
    w_mat = base.permute(3, 0, 1, 2).flatten(1)
    assert w_mat.data_ptr() == base.data_ptr() and not w_mat.is_contiguous()
    u0, v0 = _state(10, 54, 2, torch.float32)
    u, v = u0.clone(), v0.clone()
    sigma = power_iteration(w_mat, u, v, 3, backend=backend)
    assert not sigma.requires_grad and not u.requires_grad and not v.requires_grad
    uc, vc = u0.clone(), v0.clone()
    sigma_c = power_iteration(w_mat.detach().contiguous(), uc, vc, 3, backend=backend)
    assert torch.equal(sigma, sigma_c) and torch.equal(u, uc) and torch.equal(v, vc)


# ---------------------------------------------------------------- sigma_estimate

@pytest.mark.parametrize("two_d", [False, True], ids=["1d", "2d"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", BACKENDS)
def test_sigma_estimate_is_u_w_v(backend, dtype, two_d):
    num_svs = 2 if two_d else 1
    w = _weight((64, 32, 3, 3), dtype, seed=3)
    acc = _acc(dtype)
    u0, v0 = _state(64, 288, num_svs, acc, seed=4)
    u, v = (u0.clone(), v0.clone()) if two_d else (u0[0].clone(), v0[0].clone())
    got = sigma_estimate(w, u, v, backend=backend)
    assert got.shape == ((num_svs,) if two_d else ()) and got.dtype == acc
    assert torch.equal(u.reshape(u0.shape), u0) and torch.equal(v.reshape(v0.shape), v0)  # not updated
    oracle = ((u0.double() @ w.double()) * v0.double()).sum(1)
    same = ((u0 @ w.to(acc)) * v0).sum(1)
    assert_matches_oracle(got.reshape(-1), oracle, same, name=f"sigma_estimate {backend} {dtype}")


# ---------------------------------------------------------------- spectral_sigma's gradient

@pytest.mark.parametrize("num_svs", [1, 2])
@pytest.mark.parametrize("backend", BACKENDS)
def test_spectral_sigma_gradient_is_that_of_u_w_v(backend, num_svs):
    # The value is the given sigma; the gradient is autograd's of u^T W v with u, v constant.
    w = _weight((9, 5, 3, 3), torch.float32).clone().requires_grad_()
    u0, v0 = _state(9, 45, num_svs, torch.float32)
    u, v = (u0.clone(), v0.clone()) if num_svs > 1 else (u0[0].clone(), v0[0].clone())
    sigma = power_iteration(w, u, v, 2, backend=backend)
    s = spectral_sigma(w, u, v, sigma)
    assert torch.equal(s.detach(), sigma) and s.requires_grad
    g = torch.randn(s.shape)
    (got,) = torch.autograd.grad((s * g).sum(), w)
    w2 = w.detach().clone().requires_grad_()
    est = ((u.reshape(num_svs, -1) @ w2) * v.reshape(num_svs, -1)).sum(1).reshape(s.shape)
    (expected,) = torch.autograd.grad((est * g).sum(), w2)
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_spectral_sigma_gradient_has_the_weight_dtype(dtype):
    w = _weight((6, 7), dtype).clone().requires_grad_()
    u0, v0 = _state(6, 7, 1, torch.float32)
    s = spectral_sigma(w, u0[0], v0[0], sigma_estimate(w, u0[0], v0[0], backend="reference"))
    assert s.dtype == torch.float32
    (g,) = torch.autograd.grad(s, w)
    assert g.dtype == dtype
    torch.testing.assert_close(g.float(), torch.outer(u0[0], v0[0]).to(dtype).float())


@pytest.mark.parametrize("num_svs", [1, 2])
@pytest.mark.parametrize("backend", BACKENDS)
def test_spectral_sigma_gradcheck_and_gradgradcheck(backend, num_svs):
    # sigma recomputed from W inside f (sigma_estimate: no gradient) so the finite differences
    # see sigma(W) = u^T W v; the layer's normalized weight W / sigma gets the full gradient.
    w = _weight((5, 7), torch.float64, seed=5).clone().requires_grad_()
    x = torch.randn(3, 7, dtype=torch.float64, requires_grad=True)
    u0, v0 = _state(5, 7, num_svs, torch.float64)

    def sigma_of(w):
        return spectral_sigma(w, u0, v0, sigma_estimate(w, u0, v0, backend=backend))

    def layer(w, x):
        return x @ (w / sigma_of(w)[0]).t()

    assert torch.autograd.gradcheck(sigma_of, (w,))
    assert torch.autograd.gradgradcheck(sigma_of, (w,))
    assert torch.autograd.gradcheck(layer, (w, x))
    assert torch.autograd.gradgradcheck(layer, (w, x))


@pytest.mark.parametrize("backend", BACKENDS)
def test_spectral_sigma_gradient_reaches_a_permuted_weight(backend):
    # W stored as [Cin, kh, kw, Cout], used as the [Cout, Cin*kh*kw] view: the gradient lands in
    # the storage's layout, equal to the one through a contiguous copy; gradcheck through the view.
    base = torch.randn(3, 2, 2, 4, dtype=torch.float64, requires_grad=True)
    view = lambda b: b.permute(3, 0, 1, 2).flatten(1)   # noqa: E731
    w_mat = view(base)
    assert not w_mat.is_contiguous() and w_mat.data_ptr() == base.data_ptr()
    u0, v0 = _state(4, 12, 1, torch.float64)
    u, v = u0[0].clone(), v0[0].clone()
    sigma = power_iteration(w_mat, u, v, 3, backend=backend)
    (g,) = torch.autograd.grad(spectral_sigma(w_mat, u, v, sigma), base)
    torch.testing.assert_close(view(g), torch.outer(u, v), rtol=1e-12, atol=1e-14)

    def f(b):
        w = view(b)
        return spectral_sigma(w, u, v, sigma_estimate(w, u, v, backend=backend))

    assert torch.autograd.gradcheck(f, (base,))
    assert torch.autograd.gradgradcheck(f, (base,))


# ---------------------------------------------------------------- argument errors

def _args(**over):
    args = dict(w_mat=torch.randn(6, 5), u=torch.randn(6), v=torch.randn(5))
    args.update(over)
    return args


@pytest.mark.parametrize("over, match", [
    (dict(w_mat=torch.randn(6, 5, 1)), "w_mat must be a 2-D \\[out, in\\] matrix"),
    (dict(w_mat=torch.ones(6, 5, dtype=torch.int32)), "w_mat must be a floating tensor"),
    (dict(u=torch.randn(5)), "u must be \\[6\\] or \\[num_svs, 6\\]"),
    (dict(u=torch.randn(1, 1, 6)), "u must be \\[6\\] or \\[num_svs, 6\\]"),
    (dict(v=torch.randn(2, 6)), "v must be \\[5\\] or \\[num_svs, 5\\]"),
    (dict(u=torch.randn(6, dtype=torch.float16)), "u must be float32 .* got float16"),
    (dict(v=torch.randn(5, dtype=torch.float64)), "v must be float32 .* got float64"),
    (dict(w_mat=torch.randn(6, 5, dtype=torch.float64)), "u must be float64 .* got float32"),
    (dict(u=torch.randn(2, 6), v=torch.randn(3, 5)), "u and v must hold the same number of vectors"),
    (dict(u=torch.randn(1, 6)), "u and v must hold the same number of vectors"),
])
@pytest.mark.parametrize("fn", [power_iteration, sigma_estimate], ids=["power_iteration", "sigma_estimate"])
def test_bad_tensors_name_the_argument(fn, over, match):
    with pytest.raises(ValueError, match=f"ganfast.ops.{fn.__name__}: {match}"):
        fn(**_args(**over))


@pytest.mark.parametrize("kwargs, match", [
    (dict(n_iters=0), "n_iters must be an int >= 1, got 0"),
    (dict(n_iters=1.0), "n_iters must be an int >= 1"),
    (dict(n_iters=True), "n_iters must be an int >= 1"),
    (dict(eps=0.0), "eps must be > 0, got 0.0"),
    (dict(eps=-1e-12), "eps must be > 0"),
    (dict(backend="metal"), "backend must be one of"),
])
def test_bad_settings_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        power_iteration(**_args(), **kwargs)


# ---------------------------------------------------------------- custom ops and torch.compile

@pytest.mark.parametrize("u_first", [False, True], ids=["v_first", "u_first"])
@pytest.mark.parametrize("num_svs", [1, 2])
@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck_power_iteration(backend, num_svs, u_first):
    w = _weight((13, 4, 3, 3), torch.float32)
    u, v = _state(13, 36, num_svs, torch.float32)
    torch.library.opcheck(torch.ops.ganfast.power_iteration.default, (w, u, v, 2, 1e-12, u_first, backend))


@pytest.mark.parametrize("num_svs", [1, 2])
def test_opcheck_sn_sigma(num_svs):
    w = _weight((13, 36), torch.float32).clone().requires_grad_()
    u, v = _state(13, 36, num_svs, torch.float32)
    sigma = ((u @ w.detach()) * v).sum(1)
    torch.library.opcheck(torch.ops.ganfast.sn_sigma.default, (w, u, v, sigma))


@pytest.mark.parametrize("backend", BACKENDS)
def test_torch_compile_fullgraph_forward_and_backward(backend):
    # A spectrally normalized linear layer: power iteration (u, v buffers updated in place inside
    # the graph), sigma with its gradient, the matmul; compiled without graph breaks, equal to eager.
    def sn_linear(x, weight, u, v):
        w = weight.flatten(1)
        sigma = power_iteration(w, u, v, 2, backend=backend)
        return x @ (w / spectral_sigma(w, u, v, sigma)).t()

    compiled = torch.compile(sn_linear, backend="aot_eager", fullgraph=True, dynamic=False)
    weight = torch.randn(8, 3, 3, 3, requires_grad=True)
    x = torch.randn(5, 27, requires_grad=True)
    u0, v0 = _state(8, 27, 1, torch.float32)
    g = torch.randn(5, 8)
    results = []
    for fn in (sn_linear, compiled):
        u, v = u0[0].clone(), v0[0].clone()
        y = fn(x, weight, u, v)
        results.append((y, *torch.autograd.grad((y * g).sum(), (x, weight)), u, v))
    for name, eager, comp in zip(("y", "dx", "dweight", "u", "v"), *results):
        torch.testing.assert_close(comp, eager, rtol=1e-5, atol=1e-6, msg=lambda m: f"{name}: {m}")
    assert not torch.equal(results[0][3], u0[0])   # the state did move


# ---------------------------------------------------------------- found by the fuzz tests (issue 26)

@pytest.mark.parametrize("fn", [power_iteration, sigma_estimate], ids=["power_iteration", "sigma_estimate"])
def test_no_vectors_is_an_error_naming_num_svs(fn):
    # u [0, O], v [0, K] (num_svs = 0) crashed in a reshape ("cannot reshape tensor of 0 elements")
    with pytest.raises(ValueError, match=f"ganfast.ops.{fn.__name__}: u and v must hold at least one vector"):
        fn(torch.randn(6, 5), torch.randn(0, 6), torch.randn(0, 5))


@pytest.mark.parametrize("over, match", [
    (dict(u=torch.randn(5)), "u must be \\[6\\] or \\[num_svs, 6\\]"),           # was a reshape error
    (dict(v=torch.randn(6, dtype=torch.float64)), "v must be \\[5\\] or \\[num_svs, 5\\]"),
    (dict(u=torch.randn(6, device="meta")), "u must be on w_mat's device cpu, got meta"),
    (dict(sigma=torch.ones(2)), "sigma must hold 1 value.* got shape \\[2\\]"),
])
def test_spectral_sigma_bad_arguments_name_the_argument(over, match):
    args = dict(w_mat=torch.randn(6, 5, requires_grad=True), u=torch.randn(6), v=torch.randn(5), sigma=torch.ones(()))
    args.update(over)
    with pytest.raises(ValueError, match=f"ganfast.ops.spectral_sigma: {match}"):
        spectral_sigma(**args)
